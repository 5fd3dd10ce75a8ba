"""The interpreter against QEMU's load/save semantics (migration/vmstate.c)."""

from __future__ import annotations

import math
import struct

import pytest

from vmstate import fields as F
from vmstate.description import Description, Hooks, Subsection, register_hook
from vmstate.errors import (
    DecodeError,
    DescriptionError,
    EncodeError,
    IncompatibleError,
    LimitError,
    TruncatedError,
)

ENTRY = Description(
    "msix_entry", 1, 1, [F.uint32("addr_lo"), F.uint32("addr_hi"), F.uint32("data"), F.uint32("ctrl")]
)
QUEUE = Description("queue", 1, 1, [F.uint16("head"), F.bool_("enabled", exists="head != 0")])

DEV = Description(
    "dev",
    3,
    1,
    [
        F.uint8("u8"),
        F.int8("i8"),
        F.uint16("u16"),
        F.int16("i16"),
        F.uint32("u32"),
        F.int32("i32"),
        F.uint64("u64"),
        F.int64("i64"),
        F.bool_("flag"),
        F.float64("ratio"),
        F.timer("deadline"),
        F.uint32_equal("magic"),
        F.int32_le("level"),
        F.buffer("config", 8),
        F.uint16("len"),
        F.vbuffer("data", "len", 128, multiply=2),
        F.uint8("nvec"),
        F.varray("vectors", ENTRY, "nvec", 16, count_type="uint8"),
        F.array("regs", "uint16", 3),
        F.array("queues", QUEUE, 2),
        F.bitmap("pending", 70),
        F.unused(3),
        F.validate("len_ok", "len <= 32"),
        F.qtailq("list", ENTRY),
        F.uint32("late", since=3),
        F.uint8("opt", exists="flag"),
    ],
    [
        Subsection(Description("dev/extra", 2, 1, [F.uint64("x")]), needed="u8 > 10"),
        Subsection(Description("dev/other", 1, 1, [F.buffer("blob", 2)])),
    ],
)


def entry(n: int) -> dict[str, int]:
    return {"addr_lo": n, "addr_hi": n + 1, "data": n + 2, "ctrl": n & 1}


STATE = {
    "u8": 11,
    "i8": -2,
    "u16": 0xBEEF,
    "i16": -300,
    "u32": 0xDEADBEEF,
    "i32": -70000,
    "u64": 2**64 - 1,
    "i64": -(2**63),
    "flag": True,
    "ratio": 1.5,
    "deadline": -1,
    "magic": 0x1234,
    "level": 3,
    "config": bytes(range(8)),
    "len": 3,
    "data": b"abcdef",
    "nvec": 2,
    "vectors": [entry(1), entry(5)],
    "regs": [1, 2, 3],
    "queues": [{"head": 0}, {"head": 7, "enabled": True}],
    "pending": (1 << 69) | 1,
    "list": [entry(9)],
    "late": 42,
    "opt": 5,
    "dev/extra": {"x": 99},
    "dev/other": {"blob": b"\x01\x02"},
}


def test_round_trip_every_kind() -> None:
    data = DEV.save(STATE)
    assert DEV.load(data) == STATE
    assert DEV.save(DEV.load(data)) == data


def test_wire_bytes_match_qemu_encoding(snapshot) -> None:
    """Big-endian scalars, padding zeros, qtailq markers, subsection headers."""
    data = DEV.save(STATE)
    assert data[:2] == b"\x0b\xfe"
    assert data.endswith(b"\x05\x09dev/other\x00\x00\x00\x01\x01\x02")
    assert b"\x05\x09dev/extra\x00\x00\x00\x02" + (99).to_bytes(8, "big") in data
    assert data.hex(" ", 4) == snapshot


def test_json_round_trip_is_exact() -> None:
    odd = dict(STATE, ratio=math.nan)
    data = DEV.save(odd)
    again = DEV.from_json(DEV.to_json(DEV.load(data)))
    assert DEV.save(again) == data


def test_older_version_omits_newer_fields() -> None:
    data = DEV.save(STATE, version_id=2)
    assert len(data) == len(DEV.save(STATE)) - 4
    state = DEV.load(data, 2)
    assert "late" not in state


def test_version_too_new_and_too_old() -> None:
    data = DEV.save(STATE)
    with pytest.raises(IncompatibleError, match="incoming version_id 4 is too new for local version_id 3") as e:
        DEV.load(data, 4)
    assert e.value.path == ("dev",) and e.value.offset == 0
    with pytest.raises(IncompatibleError, match="too old for local minimum version_id 1"):
        DEV.load(data, 0)


def test_exists_test_decides_alone() -> None:
    state = dict(STATE, flag=False)
    del state["opt"]
    assert DEV.load(DEV.save(state)) == state


def test_absent_subsection_is_accepted() -> None:
    state = dict(STATE, u8=1)
    del state["dev/extra"]
    assert DEV.load(DEV.save(state)) == state


def test_needed_subsection_missing_from_state_is_an_encode_error() -> None:
    state = dict(STATE)
    del state["dev/extra"]
    with pytest.raises(EncodeError, match="dev/extra is needed"):
        DEV.save(state)


def test_unknown_subsection_is_rejected_by_name() -> None:
    data = DEV.save(STATE)
    bad = data.replace(b"dev/other", b"dev/otheR")
    with pytest.raises(IncompatibleError) as e:
        DEV.load(bad)
    assert "unknown subsection 'dev/otheR'" in str(e.value)
    assert e.value.found == "dev/otheR"
    assert e.value.offset == bad.index(b"\x05\x09dev/otheR")


def test_subsection_of_another_parent_ends_the_struct() -> None:
    """A 0x05 whose name lacks our prefix belongs to an outer level: trailing bytes here."""
    data = DEV.save(STATE) + b"\x05\x05zzz/a"
    with pytest.raises(DecodeError, match="unexpected bytes after the end"):
        DEV.load(data)


def test_equal_and_le_checks_against_held_state() -> None:
    data = DEV.save(STATE)
    DEV.load(data, held={"magic": 0x1234, "level": 3})
    with pytest.raises(IncompatibleError) as e:
        DEV.load(data, held={"magic": 0x1235})
    assert e.value.path == ("dev", "magic")
    assert (e.value.expected, e.value.found) == ("0x1235", "0x1234")
    with pytest.raises(IncompatibleError, match="level is not within 0 and the value held"):
        DEV.load(data, held={"level": 2})


def test_validate_field_rejects() -> None:
    with pytest.raises(EncodeError, match="Output state validation failed: dev/len_ok"):
        DEV.save(dict(STATE, len=40, data=bytes(80)))
    desc = Description("v", 1, 1, [F.uint8("n"), F.validate("n_ok", "n < 4")])
    with pytest.raises(IncompatibleError, match="Input validation failed: v/n_ok"):
        desc.load(b"\x09")


def test_every_truncation_names_path_and_offset() -> None:
    data = DEV.save(STATE)
    # cutting just before an optional subsection leaves a valid, shorter state
    boundaries = {data.index(b"\x05\x09dev/extra"), data.index(b"\x05\x09dev/other")}
    for cut in sorted(boundaries):
        assert "dev/other" not in DEV.load(data[:cut])
    for cut in sorted(set(range(len(data))) - boundaries):
        with pytest.raises(DecodeError) as e:
            DEV.load(data[:cut])
        err = e.value
        assert err.path[0] == "dev"
        assert 0 <= err.offset <= cut
        assert err.excerpt


def test_truncated_error_fields() -> None:
    data = DEV.save(STATE)
    cut = data.index(bytes(range(8)))
    with pytest.raises(TruncatedError) as e:
        DEV.load(data[: cut + 4])
    assert e.value.path == ("dev", "config")
    assert e.value.offset == cut
    assert e.value.expected == "8 bytes of buffer"
    assert e.value.found == "4 bytes"
    assert "dev.config at offset" in str(e.value)


def test_variable_sizes_are_bounded() -> None:
    desc = Description("b", 1, 1, [F.uint32("n"), F.varray("v", "uint8", "n", 100)])
    with pytest.raises(LimitError) as e:
        desc.load(struct.pack(">I", 0xFFFFFFFF))
    assert e.value.path == ("b", "v") and e.value.found == str(0xFFFFFFFF)
    buf = Description("c", 1, 1, [F.uint32("n"), F.vbuffer("d", "n", 16)])
    with pytest.raises(LimitError, match="variable buffer size out of bounds"):
        buf.load(struct.pack(">I", 17) + bytes(17))
    with pytest.raises(EncodeError, match="variable buffer size out of bounds") as e:
        buf.save({"n": 17, "d": bytes(17)})
    assert e.value.path == ("c", "d")


def test_element_budget_bounds_zero_size_elements() -> None:
    empty = Description("e", 1, 1, [F.uint8("x", exists="false")])
    desc = Description("z", 1, 1, [F.uint32("n"), F.varray("v", empty, "n", 1 << 30)])
    from vmstate.interpreter.context import Limits

    with pytest.raises(LimitError, match="too many array elements"):
        desc.load(struct.pack(">I", 1 << 29), limits=Limits(max_elements=1000))


def test_count_from_held_state() -> None:
    """msix: the table is sized by the LOCAL entry count, never sent."""
    desc = Description("msix", 1, 1, [F.varray("table", ENTRY, "entries", 2048)])
    data = ENTRY.save(entry(1)) + ENTRY.save(entry(2))
    assert desc.load(data, held={"entries": 2}) == {"table": [entry(1), entry(2)]}
    with pytest.raises(DecodeError, match="array count refers to 'entries'"):
        desc.load(data)
    assert desc.save({"table": [entry(1), entry(2)]}, held={"entries": 2}) == data
    with pytest.raises(EncodeError, match="array count refers to 'entries'"):
        desc.save({"table": [entry(1), entry(2)]})


@pytest.mark.parametrize("n", [3, 255, 256, 300])
def test_arrays_of_plain_structs_decode_alike_short_or_long(n: int) -> None:
    """Arrays of plain structs of 256 elements and more get compiled row codecs, shorter
    ones go the general way: both read the entries Python's struct module packed (four
    big-endian uint32 each), give the same bytes back, and refuse an element with a key
    too many alike."""
    desc = Description("t", 1, 1, [F.array("table", ENTRY, n)])
    data = b"".join(struct.pack(">4I", *entry(i).values()) for i in range(n))
    state = desc.load(data)
    assert state == {"table": [entry(i) for i in range(n)]}
    assert desc.save(state) == data
    bad = [*state["table"][:-1], {**entry(0), "extra": 1}]
    with pytest.raises(EncodeError) as e:
        desc.save({"table": bad})
    assert e.value.path[:3] == ("t", "table", n - 1), e.value


def test_bad_qtailq_marker() -> None:
    desc = Description("q", 1, 1, [F.qtailq("l", ENTRY)])
    with pytest.raises(DecodeError) as e:
        desc.load(b"\x02")
    assert (e.value.expected, e.value.found) == ("0 or 1", "0x2")


def test_nullable_array_uses_marker() -> None:
    desc = Description("p", 1, 1, [F.array("ptrs", ENTRY, 2, nullable=True)])
    state = {"ptrs": [entry(1), None]}
    data = desc.save(state)
    assert data.endswith(b"\x30")
    assert desc.load(data, held=state) == state


def test_struct_loads_at_its_own_version() -> None:
    child = Description("child", 5, 1, [F.uint8("a"), F.uint8("b", since=5)])
    parent = Description("parent", 1, 1, [F.struct("c", child)])
    assert parent.load(b"\x01\x02", 1) == {"c": {"a": 1, "b": 2}}
    vparent = Description("vparent", 1, 1, [F.struct("c", child, version=4)])
    assert vparent.load(b"\x01", 1) == {"c": {"a": 1}}


def test_encode_errors_name_the_field() -> None:
    with pytest.raises(EncodeError) as e:
        DEV.save(dict(STATE, u16=70000))
    assert e.value.path == ("dev", "u16")
    with pytest.raises(EncodeError) as e:
        DEV.save(dict(STATE, vectors=[entry(1), {"addr_lo": 1}]))
    assert e.value.path[:3] == ("dev", "vectors", 1)
    with pytest.raises(EncodeError, match="does not know"):
        DEV.save(dict(STATE, typo=1))


hook_calls: list[str] = []


@register_hook("test.post_load_double")
def _double(state: dict, version_id: int) -> dict:
    hook_calls.append(f"post_load v{version_id}")
    return dict(state, a=state["a"] * 2)


@register_hook("test.pre_save_half")
def _half(state: dict) -> dict:
    return dict(state, a=state["a"] // 2)


def test_hooks_run_by_name() -> None:
    desc = Description("h", 2, 1, [F.uint8("a")], hooks=Hooks(pre_save="test.pre_save_half", post_load="test.post_load_double"))
    assert desc.save({"a": 8}) == b"\x04"
    assert desc.load(b"\x04") == {"a": 8}
    assert hook_calls[-1] == "post_load v2"
    bad = Description("h2", 1, 1, [F.uint8("a")], hooks=Hooks(post_load="nope"))
    with pytest.raises(DecodeError, match="no hook named 'nope'"):
        bad.load(b"\x01")


def test_description_invariants() -> None:
    with pytest.raises(DescriptionError, match="appears twice"):
        Description("d", 1, 1, [F.uint8("a"), F.uint8("a")])
    # QEMU accepts a minimum above the version (it then loads nothing): so do we
    with pytest.raises(IncompatibleError, match="too old"):
        Description("d", 2, 3).load(b"", 2)
    Description("d", 1, 1, [F.unused(1), F.unused(2)])  # padding may repeat, as in QEMU
