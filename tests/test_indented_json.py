"""vmstate.indented_json writes what Python's json module writes with an indent (QEMU's
analyzer prints through it), byte for byte, for any JSON value."""

from __future__ import annotations

import json
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from vmstate.indented_json import dump_items, dumps

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["0x00", "0xff", '"{[,:]}"', "\\", "é\u2028"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5)
    | st.lists(st.integers(), max_size=5)
    | st.lists(st.text(max_size=4), max_size=5)
    | st.lists(st.booleans() | st.integers(0, 1), max_size=5)
    | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=500)
@given(VALUES, st.sampled_from([1, 4]))
def test_the_same_text_as_json_dumps(value: object, indent: int) -> None:
    assert dumps(value, indent) == json.dumps(value, indent=indent, separators=(",", ": "))


@settings(max_examples=200)
@given(st.dictionaries(st.text(max_size=5), VALUES, max_size=6), st.sampled_from([1, 4]))
def test_an_object_written_item_by_item_is_the_same_text(value: dict[str, object], indent: int) -> None:
    """``vmstate analyze --format qemu`` writes QEMU's top-level object one section at a
    time (dump_items): the same text as json.dumps of the whole, written in pieces, each
    item's text all written before the next item is taken."""
    pieces: list[str] = []
    whole = json.dumps(value, indent=indent, separators=(",", ": "))

    def items() -> Iterator[tuple[str, object]]:
        for k, (key, item) in enumerate(value.items()):
            written = "".join(pieces)
            before = json.dumps(dict(list(value.items())[:k]), indent=indent, separators=(",", ": "))
            assert written == (before[:-2] if k else "")  # all but the closing "\n}"
            yield key, item

    dump_items(items(), pieces.append, indent)
    assert "".join(pieces) == whole


def test_a_long_array_is_written_a_chunk_at_a_time() -> None:
    """QEMU's 16384-byte arrays (ICH9LPC's chip_config) and 32768-word ones (e1000e's
    mac registers): the same text, never one piece of the whole array."""
    for value in (["0x%02x" % (i % 256) for i in range(16384)], list(range(32768)), ["\u00e9"] * 9000):
        pieces: list[str] = []
        dump_items(iter([("a", value)]), pieces.append, 4)
        assert "".join(pieces) == json.dumps({"a": value}, indent=4, separators=(",", ": "))
        assert max(map(len, pieces)) < 4096 * 24
