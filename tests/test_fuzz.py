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
QEMU10 = Path(__file__).parent / "data" / "qemu-10.0"
FUZZ = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@cache
def device_only(name: str) -> bytes:
    """A real stream with the RAM section cut out: every byte left is device state."""
    full = (QEMU10 / name if name.startswith(("pc-10", "q35-10")) else QEMU / name).read_bytes()
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


STREAMS = [
    "pc-e1000-usb-hda.mig",
    "q35-e1000e-virtio.mig",
    "q35-pcie-root-ports.mig",
    "pc-10.0-storage-usb.mig",
    "q35-10.0-storage-usb.mig",
]


def test_device_only_streams_are_valid() -> None:
    for name in STREAMS:
        data = device_only(name)
        parsed = stream.parse(data)
        assert len(parsed.device_sections()) > 30


def check(data: bytes, **options: Any) -> None:
    """Parse *data*; any failure must be one of ours, located inside the input."""
    try:
        stream.parse(data, **options)
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


# -- what QEMU 8.0-10.x writes: commands, capabilities, mapped-ram, dump fitting ----


def _mapped_ram_stream() -> bytes:
    """A small mapped-ram stream as QEMU 10.0 lays one out: configuration with the
    mapped-ram capability, a ram section listing one 8-page block with its header, the
    bitmap and pages at fixed offsets, EOS, EOF."""
    cap = b"mapped-ram"
    out = bytearray(b"QEVM\0\0\0\x03\x07" + (3).to_bytes(4, "big") + b"m35")
    sub = b"configuration/capabilities"
    out += b"\x05" + bytes([len(sub)]) + sub + (1).to_bytes(4, "big")
    out += (1).to_bytes(4, "big") + bytes([len(cap)]) + cap
    out += (
        b"\x01"
        + (2).to_bytes(4, "big")
        + b"\x03ram"
        + (0).to_bytes(4, "big")
        + (4).to_bytes(4, "big")
    )
    out += ((8 << 12) | 0x04).to_bytes(8, "big") + b"\x03mem" + (8 << 12).to_bytes(8, "big")
    header_at = len(out)
    bitmap_at = header_at + 28
    pages_at = (bitmap_at + 8 + 4095) // 4096 * 4096
    out += (1).to_bytes(4, "big") + (4096).to_bytes(8, "big")
    out += bitmap_at.to_bytes(8, "big") + pages_at.to_bytes(8, "big")
    out += (0b10010110).to_bytes(8, "little")
    out += bytes(pages_at - len(out))
    out += b"".join(bytes([page]) * 4096 for page in range(8))
    out += (0x10).to_bytes(8, "big") + b"\x7e" + (2).to_bytes(4, "big") + b"\x00"
    vmdesc = b'{"page_size":4096,"devices":[]}'
    return bytes(out + b"\x06" + len(vmdesc).to_bytes(4, "big") + vmdesc)


def test_the_mapped_ram_stream_is_valid() -> None:
    pages: dict[int, bytes | int] = {}
    parsed = stream.parse(
        _mapped_ram_stream(), page_sink=lambda b, at, page, size: pages.update({at: page})
    )
    assert parsed.capabilities == ("mapped-ram",)
    assert sorted(pages) == [4096 * i for i in (1, 2, 4, 7)]
    assert pages[4096 * 7] == bytes([7]) * 4096


@FUZZ
@given(data=st.data())
def test_mutated_mapped_ram_headers(data: st.DataObject) -> None:
    """Header, offsets, bitmap: only our errors, while extracting pages."""
    raw = bytearray(_mapped_ram_stream())
    ram = raw.index(b"\x03ram")  # past the configuration: its subsections are the core's
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(ram, 4096 + 64))
        raw[at] = data.draw(st.integers(0, 255))
    check(bytes(raw), page_sink=lambda *_: None)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(data=st.data())
def test_mutated_commands(data: st.DataObject) -> None:
    """OPEN_RETURN_PATH, PING, POSTCOPY_ADVISE and the RAM list of a postcopy stream."""
    raw = bytearray((QEMU10 / "q35-10.0-postcopy-advised.mig").read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0x18, 0x120))
        raw[at] = data.draw(st.integers(0, 255))
    check(bytes(raw))


@cache
def _fitter_stream() -> tuple[bytes, Any]:
    from vmstate.sources import load_description_set

    full = device_only("q35-10.0-storage-usb.mig")
    at = stream.find_vmdesc(full)
    assert at is not None
    return full[:at], load_description_set(QEMU10 / "dump-pc-q35-10.0.json")


@settings(max_examples=25, deadline=None, derandomize=True)
@given(data=st.data())
def test_mutated_streams_fitted_to_a_dump(data: st.DataObject) -> None:
    """A stream without vmdesc read with a dump: framing and fitting see any bytes."""
    from vmstate.dump_layout import DumpLayouts

    body, dump = _fitter_stream()
    raw = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(8, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    check(bytes(raw), fitter=DumpLayouts(dump, max_steps=2000))
