"""Analysis of whole migration streams: QEMU-analyzer-compatible output and
byte-exact re-encoding checks."""

from __future__ import annotations

import functools
import mmap
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from vmstate._wire import Ctx, Frame
from vmstate.description import Description
from vmstate.errors import UsageError
from vmstate.fields import Array, Buffer, Kind, Scalar, Seq, Struct, VArray
from vmstate.stream import Input, RamBlock, Section, Stream
from vmstate.vmdesc import NullPointer, qemu_name

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
            value = _qemu_value(field.kind, state[field.name], frame, field.name)
            out[qemu_name(field.name)] = value
    for sub in desc.subsections:
        if sub.name in state:
            out[sub.name] = _qemu_struct(
                sub.description, state[sub.name], sub.description.version_id
            )
    return out


def _qemu_value(kind: Kind, value: Any, frame: Frame, name: str) -> Any:
    if isinstance(kind, NullPointer):
        return "nullptr"
    if isinstance(kind, Scalar):
        render = _scalar_renderer(kind.info, kind.size)
        if render is not None:
            return render(value)
    if isinstance(kind, Buffer):
        return value.hex(" ")
    if isinstance(kind, Struct) and kind.info == "struct":
        return _qemu_struct(kind.description, value, kind.description.version_id)
    if isinstance(kind, Array | VArray):
        element = kind.element
        if isinstance(element, Scalar) and (render := _scalar_renderer(element.info, element.size)):
            return _render_all(render, element.info, element.size, value)
        return [_qemu_value(element, v, frame, name) for v in value]
    if isinstance(kind, Seq):
        return [_qemu_value(k, v, frame, name) for k, v in zip(kind.elements, value, strict=True)]
    out = bytearray()
    kind.save(out, value, frame, name)
    return out.hex(" ")


@functools.cache
def _scalar_renderer(info: str, size: int) -> Callable[[Any], Any] | None:
    """How analyze-migration.py prints a scalar of type *info*: None means as hex bytes."""
    if info == "bool":
        return bool
    if info not in _UNSIGNED and info not in _SIGNED:
        return None
    width, bits = size * 2, size * 8
    mask = (1 << bits) - 1
    hex_of = f"0x{{:0{width}x}}".format
    if info in _UNSIGNED:
        return lambda value: hex_of(value & mask)

    def signed(value: int) -> str:
        unsigned = value & mask
        if unsigned >> (bits - 1):
            return f"{hex_of(unsigned)} ({unsigned - (1 << bits)})"
        return hex_of(unsigned)

    return signed


def _render_all(render: Callable[[Any], Any], info: str, size: int, values: list[Any]) -> list[Any]:
    """Render many scalars; the common case (in-range, non-negative) without a Python call each."""
    if info != "bool" and all(0 <= v < (1 << (8 * size - (info in _SIGNED))) for v in values):
        return list(map(f"0x{{:0{size * 2}x}}".format, values))
    return list(map(render, values))


class RamExtractor:
    """Guest RAM pages into one sparse file per RAM block, one page in memory at a time.

    Files appear under *directory* only when the whole stream has been read:
    they are written in a temporary directory beside it, then renamed.
    """

    def __init__(self, directory: str | Path) -> None:
        self.target = Path(directory)
        if self.target.exists():
            raise UsageError(f"{self.target} exists; give a new directory for the RAM blocks")
        self.work = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))
        self.files: dict[str, BinaryIO] = {}

    def __call__(self, block: str, offset: int, page: bytes | int, page_size: int) -> None:
        if page == 0:
            return  # a zero page: the file stays sparse there
        f = self.files.get(block)
        if f is None:
            f = self.files[block] = open(self.work / _file_name(block), "wb")  # noqa: SIM115
        f.seek(offset)
        f.write(bytes([page]) * page_size if isinstance(page, int) else page)

    def finish(self, blocks: tuple[RamBlock, ...]) -> list[Path]:
        """Size every block's file to its length and move them into place."""
        for block in blocks:
            f = self.files.pop(block.name, None) or open(self.work / _file_name(block.name), "wb")  # noqa: SIM115
            with f:
                f.truncate(block.length)
        os.replace(self.work, self.target)
        return sorted(self.target.iterdir())

    def abandon(self) -> None:
        for f in self.files.values():
            f.close()
        shutil.rmtree(self.work, ignore_errors=True)


def _file_name(block: str) -> str:
    """``/rom@etc/acpi/tables`` -> ``rom@etc_acpi_tables``: one flat, safe name per block."""
    name = block.strip("/").replace("/", "_")
    return name if name not in ("", ".", "..") else f"block-{len(block)}"


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
