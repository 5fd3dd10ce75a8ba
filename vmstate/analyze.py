"""Analysis of whole migration streams: QEMU-analyzer-compatible output and
byte-exact re-encoding checks."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from vmstate.errors import InputError
from vmstate.stream import Input, RamBlock, Section, Stream


def qemu_state(stream: Stream) -> dict[str, Any]:
    """What ``scripts/analyze-migration.py -d state`` prints, as data."""
    out: dict[str, Any] = {}
    ram_sizes: dict[str, str] = {
        block.name: f"0x{block.length:016x}" for block in stream.ram_blocks
    }
    for section in stream.sections:
        key = f"{section.idstr} ({section.section_id})"
        if section.state is None:
            if section.idstr == "ram":  # vfio sections, walked raw, are not QEMU's to print
                out.setdefault(key, {"section sizes": ram_sizes})
        elif key not in out:
            assert section.description is not None
            out[key] = section.description.qemu_value(section.state)
    return out


class RamExtractor:
    """Guest RAM pages into one sparse file per RAM block, one page in memory at a time.

    Files appear under *directory* only when the whole stream has been read:
    they are written in a temporary directory beside it, then renamed.
    """

    def __init__(self, directory: str | Path) -> None:
        self.target = Path(directory)
        if self.target.exists():
            raise InputError("exists; give a new directory for the RAM blocks", str(self.target))
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
        again = section.description.save(section.state, section.version_id)
        checked += 1
        if (mismatch := compare_section(section, buf, again)) is not None:
            mismatches.append(mismatch)
    return checked, tuple(mismatches)


def compare_section(section: Section, buf: Input, again: bytes) -> Mismatch | None:
    """Where *again*, a section's payload encoded anew, first differs from the stream."""
    original = bytes(buf[section.start : section.end])
    if again == original:
        return None
    at = next(
        (i for i, (a, b) in enumerate(zip(original, again, strict=False)) if a != b),
        min(len(original), len(again)),
    )
    return Mismatch(section, section.start + at, original[at : at + 8], again[at : at + 8])
