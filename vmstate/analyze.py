"""Analysis of whole migration streams: QEMU-analyzer-compatible output and
byte-exact re-encoding checks."""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from vmstate._wire import Ctx, Frame
from vmstate.description import Description
from vmstate.fields import Array, Buffer, Kind, Scalar, Seq, Struct, VArray
from vmstate.stream import Input, Section, Stream

#: types QEMU's analyze-migration.py prints unsigned; other numbers it prints signed
_UNSIGNED = frozenset({"uint8", "uint16", "uint32", "uint64", "uint32 equal"})
_SIGNED = frozenset(
    {
        "int8",
        "int16",
        "int32",
        "int64",
        "int32 equal",
        "int32 le",
        "int64 equal",
        "uint8 equal",
        "uint16 equal",
    }
)


@contextmanager
def open_stream(path: str | Path) -> Iterator[Input]:
    """The file's bytes, mapped rather than read (RAM can be gigabytes)."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            yield b""
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            yield m


def qemu_state(stream: Stream) -> dict[str, Any]:
    """What ``scripts/analyze-migration.py -d state`` prints, as data."""
    out: dict[str, Any] = {}
    ram_sizes: dict[str, str] = {
        block.name: f"0x{block.length:016x}" for block in stream.ram_blocks
    }
    for section in stream.sections:
        key = f"{section.idstr} ({section.section_id})"
        if section.state is None:
            out.setdefault(key, {"section sizes": ram_sizes})
        elif key not in out:
            assert section.description is not None
            out[key] = _qemu_struct(section.description, section.state, section.version_id)
    return out


def _qemu_struct(desc: Description, state: Mapping[str, Any], version: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    frame = Frame(dict(state), version, None, Ctx())
    for field in desc.fields:
        if field.name in state:
            out[field.name] = _qemu_value(field.kind, state[field.name], frame, field.name)
    for sub in desc.subsections:
        if sub.name in state:
            out[sub.name] = _qemu_struct(
                sub.description, state[sub.name], sub.description.version_id
            )
    return out


def _qemu_value(kind: Kind, value: Any, frame: Frame, name: str) -> Any:
    if isinstance(kind, Scalar):
        if kind.info == "bool":
            return bool(value)
        if kind.info in _UNSIGNED or kind.info in _SIGNED:
            width = kind.size * 2
            bits = kind.size * 8
            unsigned = value & ((1 << bits) - 1)
            signed = unsigned - (1 << bits) if unsigned >> (bits - 1) else unsigned
            if kind.info in _UNSIGNED or signed >= 0:
                return f"0x{unsigned:0{width}x}"
            return f"0x{unsigned:0{width}x} ({signed})"
    if isinstance(kind, Buffer):
        return " ".join(f"{b:02x}" for b in value)
    if isinstance(kind, Struct) and kind.version is None:
        return _qemu_struct(kind.description, value, kind.description.version_id)
    if isinstance(kind, Array | VArray):
        return [_qemu_value(kind.element, v, frame, name) for v in value]
    if isinstance(kind, Seq):
        return [_qemu_value(k, v, frame, name) for k, v in zip(kind.elements, value, strict=True)]
    out = bytearray()
    kind.save(out, value, frame, name)
    return " ".join(f"{b:02x}" for b in out)


@attrs.frozen
class Mismatch:
    """A section whose re-encoding differs from the stream."""

    section: Section
    offset: int  # absolute offset of the first differing byte
    expected: bytes
    found: bytes


def verify_roundtrip(stream: Stream, buf: Input) -> tuple[int, tuple[Mismatch, ...]]:
    """Re-encode every device section from its decoded state; compare with the stream."""
    mismatches = []
    checked = 0
    for section in stream.device_sections():
        assert section.description is not None and section.state is not None
        original = bytes(buf[section.start : section.end])
        again = section.description.save(section.state, section.version_id)
        checked += 1
        if again != original:
            at = next(
                (i for i, (a, b) in enumerate(zip(original, again, strict=False)) if a != b),
                min(len(original), len(again)),
            )
            mismatches.append(
                Mismatch(section, section.start + at, original[at : at + 8], again[at : at + 8])
            )
    return checked, tuple(mismatches)
