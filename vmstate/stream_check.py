"""Dry-run a saved migration stream against the destination's descriptions.

Sections are delimited with the stream's own vmdesc (what the source really
sent); each is compared field by field with the destination's description and,
when that can decode bytes (description files, another stream's vmdesc), also
loaded with it.  The stream as a whole must suit the destination too: its
machine type, the capabilities it was written with.  Nothing is loaded anywhere: the result is the list of sections that
would fail and why.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from vmstate.analyze import open_stream
from vmstate.compat import (
    ERROR,
    VMDESC,
    WARNING,
    DescriptionSet,
    Problem,
    compare,
    find_section,
    machine_problems,
    missing_section,
)
from vmstate.errors import DecodeError, format_path
from vmstate.stream import Section, Stream, parse
from vmstate.waivers import NO_WAIVERS, Waivers


def check_stream(
    path: str | Path, dst: DescriptionSet, waivers: Waivers = NO_WAIVERS
) -> list[Problem]:
    problems: list[Problem] = []
    with open_stream(path) as buf:
        parsed = parse(buf)
        problems.extend(stream_problems(parsed, dst))
        for section in parsed.device_sections():
            problems.extend(_section(section, buf, dst, waivers))
    machine = dst.machine or parsed.machine
    return [p for p in problems if not waivers.accepts(p, machine)]


def stream_problems(parsed: Stream, dst: DescriptionSet) -> list[Problem]:
    """What the stream as a whole asks of the destination: its machine type, capabilities."""
    problems = []
    if parsed.machine is None:
        reason = (
            "the stream names no machine type (machine types up to 2.3 send no configuration "
            "section): the destination must run the source's"
        )
        problems.append(Problem(WARNING, "configuration", "", "machine-unknown", reason))
    problems.extend(machine_problems(parsed.machine, dst.machine))
    for capability in parsed.capabilities:
        reason = (
            f"the source migrated with capability {capability!r}: QEMU refuses the stream "
            "unless the destination enables it too (migrate-set-capabilities)"
        )
        problems.append(Problem(WARNING, "configuration", capability, "capability", reason))
    return problems


def _section(section: Section, buf: bytes, dst: DescriptionSet, waivers: Waivers) -> list[Problem]:
    assert section.description is not None
    name = section.idstr
    if section.instance_id:
        name = f"{name} ({section.instance_id})"  # as sources.py keys a vmdesc's sections
    sent = DescriptionSet({name: section.description}, kind=VMDESC)
    target = find_section(name, section.description, sent, dst, waivers)
    if target is None:
        return [missing_section(name, section.description, sent, dst)]
    _, desc = target
    one = attrs.evolve(dst, sections={name: desc}, versions={}, machine=None)
    compared = compare(sent, one, waivers)
    if not dst.decodes:
        return compared
    try:
        _, end = desc.load_from(buf, section.start, section.version_id)
    except DecodeError as e:
        reason = f"{e.message} at offset {e.offset:#x} (expected {e.expected}, found {e.found})"
        return [Problem(ERROR, name, format_path(e.path), "load-fails", reason), *compared]
    if end != section.end:
        reason = (
            f"the destination reads {end - section.start} bytes of a "
            f"{section.end - section.start}-byte section"
        )
        return [Problem(ERROR, name, desc.name, "length-mismatch", reason), *compared]
    return compared
