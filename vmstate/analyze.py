"""Analysis of whole migration streams: QEMU-analyzer-compatible output and
byte-exact re-encoding checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs

from vmstate.stream import Input, Section, Stream


def qemu_state(stream: Stream) -> dict[str, Any]:
    """What ``scripts/analyze-migration.py -d state`` prints, as data."""
    return dict(qemu_sections(stream))


def qemu_sections(stream: Stream) -> Iterator[tuple[str, Any]]:
    """:func:`qemu_state` one section at a time, in its order: the command line writes
    each and lets it go, so a big machine's state is never all held as text."""
    seen: set[str] = set()
    ram_sizes: dict[str, str] = {
        block.name: f"0x{block.length:016x}" for block in stream.ram_blocks
    }
    for section in stream.sections:
        key = f"{section.idstr} ({section.section_id})"
        if key in seen:
            continue
        if section.state is None:
            if section.idstr == "ram":  # vfio sections, walked raw, are not QEMU's to print
                seen.add(key)
                yield key, {"section sizes": ram_sizes}
        else:
            assert section.description is not None
            seen.add(key)
            yield key, section.description.qemu_value(section.state)


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


__all__ = ["Mismatch", "compare_section", "qemu_sections", "qemu_state", "verify_roundtrip"]
