"""Mutated and truncated real QEMU streams raise only vmstate's own errors,
each naming a field path and a byte offset inside the input."""

from __future__ import annotations

import contextlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmstate import stream
from vmstate.errors import DecodeError, DescriptionError, VMStateError
from vmstate.vmdesc import description_from_vmdesc

QEMU = Path(__file__).parent / "data" / "qemu"
FUZZ = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@cache
def device_only(name: str) -> bytes:
    """A real stream with the RAM section cut out: every byte left is device state."""
    full = (QEMU / name).read_bytes()
    parsed = stream.parse(full)
    first = min(s.header_offset for s in parsed.sections)
    out = bytearray(full[:first])
    for s in parsed.device_sections():
        end = s.end + (5 if s.end < len(full) and full[s.end] == stream.FOOTER else 0)
        out += full[s.header_offset : end]
    out.append(stream.EOF)
    assert parsed.vmdesc_offset is not None
    out += full[parsed.vmdesc_offset :]
    return bytes(out)


STREAMS = ["pc-e1000-usb-hda.mig", "q35-e1000e-virtio.mig", "q35-pcie-root-ports.mig"]


def test_device_only_streams_are_valid() -> None:
    for name in STREAMS:
        data = device_only(name)
        parsed = stream.parse(data)
        assert len(parsed.device_sections()) > 30


def check(data: bytes) -> None:
    """Parse *data*; any failure must be one of ours, located inside the input."""
    try:
        stream.parse(data)
    except DecodeError as e:
        assert e.path, e
        assert 0 <= e.offset <= len(data), e
        assert "\n" not in str(e)
    except VMStateError as e:
        assert str(e)


@FUZZ
@given(name=st.sampled_from(STREAMS), data=st.data())
def test_truncated_streams(name: str, data: st.DataObject) -> None:
    raw = device_only(name)
    cut = data.draw(st.integers(0, len(raw) - 1))
    check(raw[:cut])


@FUZZ
@given(name=st.sampled_from(STREAMS), data=st.data())
def test_mutated_device_sections(name: str, data: st.DataObject) -> None:
    raw = bytearray(device_only(name))
    body_end = stream.find_vmdesc(bytes(raw)) or len(raw)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, body_end - 1))
        raw[at] = data.draw(st.integers(0, 255))
    check(bytes(raw))


@FUZZ
@given(name=st.sampled_from(STREAMS), data=st.data())
def test_inserted_and_deleted_bytes(name: str, data: st.DataObject) -> None:
    raw = bytearray(device_only(name))
    at = data.draw(st.integers(0, len(raw) - 1))
    if data.draw(st.booleans()):
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        del raw[at : at + data.draw(st.integers(1, 16))]
    check(bytes(raw))


@FUZZ
@given(data=st.data())
def test_mutated_vmdesc(data: st.DataObject) -> None:
    raw = bytearray(device_only("pc-e1000-usb-hda.mig"))
    start = stream.find_vmdesc(bytes(raw))
    assert start is not None
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(start, len(raw) - 1))
        raw[at] = data.draw(st.sampled_from(b'{}[]",:0123456789-aexz \x00\xff'))
    check(bytes(raw))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.data())
def test_mutated_ram_records(data: st.DataObject) -> None:
    """The RAM walk: flags, block names and lengths, truncated pages."""
    raw = bytearray((QEMU / "pc-minimal.mig").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(8, 4096))
        raw[at] = data.draw(st.integers(0, 255))
    check(bytes(raw))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "type",
                    "size",
                    "fields",
                    "struct",
                    "array_len",
                    "index",
                    "vmsd_name",
                    "version",
                    "subsections",
                ]
            ),
            inner,
            max_size=6,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(entry=JSON)
def test_arbitrary_vmdesc_entries(entry: Any) -> None:
    """Whatever JSON a stream carries, building its description fails only as a DescriptionError."""
    try:
        desc = description_from_vmdesc(entry, 1)
    except DescriptionError as e:
        assert e.location
        return
    with contextlib.suppress(VMStateError):
        desc.load(b"\x00" * 64)


def test_deeply_nested_vmdesc_is_refused() -> None:
    entry: dict[str, Any] = {"vmsd_name": "x", "version": 1, "fields": []}
    for _ in range(200):
        entry = {
            "vmsd_name": "x",
            "version": 1,
            "fields": [{"name": "s", "type": "struct", "size": 0, "struct": entry}],
        }
    raw = bytearray(device_only("pc-e1000-usb-hda.mig"))
    start = stream.find_vmdesc(bytes(raw))
    vmdesc = json.loads(bytes(raw[start + 5 :]))
    vmdesc["devices"][0].update(entry)
    body = json.dumps(vmdesc).encode()
    data = bytes(raw[:start]) + b"\x06" + len(body).to_bytes(4, "big") + body
    try:
        stream.parse(data)
    except DecodeError as e:
        assert "nests too deeply" in str(e)
    else:
        raise AssertionError("a 200-deep vmdesc must be refused")


@cache
def saved_device_file() -> bytes:
    """A file as vmstate save writes one for a device with migration data (emulated)."""
    import tempfile

    from test_saved_files import programmed

    from vmstate.device_save import save

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dev.vms"
        save(programmed(size=600), path)
        return path.read_bytes()


@FUZZ
@given(data=st.data())
def test_mutated_saved_device_files(data: st.DataObject) -> None:
    """Saved files are untrusted input too: framing, config state, chunks, metadata."""
    from vmstate.saved_file import read_file

    raw = bytearray(saved_device_file())
    end = stream.find_vmdesc(bytes(raw)) or len(raw)
    if data.draw(st.booleans()):
        for _ in range(data.draw(st.integers(1, 6))):
            raw[data.draw(st.integers(0, end - 1))] = data.draw(st.integers(0, 255))
    else:
        del raw[data.draw(st.integers(0, end - 1)) :]
    try:
        read_file(bytes(raw))
    except DecodeError as e:
        assert e.path and 0 <= e.offset <= len(raw), e
    except VMStateError as e:
        assert str(e)
