"""Dry-run a saved migration stream against the destination's descriptions.

Sections are delimited with the stream's own vmdesc (what the source really
sent); each is then loaded with the destination's description when that can
decode bytes, or compared field by field with it when it is a -dump-vmstate
set.  Nothing is loaded anywhere: the result is the list of sections that
would fail and why.
"""

from __future__ import annotations

from pathlib import Path

from vmstate import qemu_vfio
from vmstate.analyze import open_stream
from vmstate.compat import ERROR, VMDESC, DescriptionSet, Problem, compare, missing_section
from vmstate.description import Description
from vmstate.errors import DecodeError, format_path
from vmstate.stream import Section, parse
from vmstate.vfio_section import raw_sections
from vmstate.waivers import NO_WAIVERS, Waivers


def check_stream(
    path: str | Path,
    dst: DescriptionSet,
    waivers: Waivers = NO_WAIVERS,
    device_data: Description | None = None,
) -> list[Problem]:
    """*device_data* is the format of VFIO devices' device data (see qemu_vfio)."""
    problems: list[Problem] = []
    with open_stream(path) as buf:
        parsed = parse(buf, raw=raw_sections)
        for section in parsed.device_sections():
            problems.extend(_section(section, buf, dst, waivers))
        problems.extend(qemu_vfio.problems(parsed, buf, device_data))
    return problems


def _section(section: Section, buf: bytes, dst: DescriptionSet, waivers: Waivers) -> list[Problem]:
    assert section.description is not None
    name = section.idstr
    if section.instance_id:
        name = f"{name} ({section.instance_id})"  # as sources.py keys a vmdesc's sections
    target = dst.find(waivers.section_name(name), section.description)
    if target is None:
        vmsd = section.description.name
        target = dst.find(waivers.section_name(vmsd), section.description)
    if target is None:
        return [missing_section(name, DescriptionSet({}, kind=VMDESC), dst)]
    _, desc = target
    if not dst.decodes:
        sent = DescriptionSet({name: section.description}, kind=VMDESC)
        return compare(sent, DescriptionSet({name: desc}, kind=dst.kind), waivers)
    try:
        _, end = desc.load_from(buf, section.start, section.version_id)
    except DecodeError as e:
        reason = f"{e.message} at offset {e.offset:#x} (expected {e.expected}, found {e.found})"
        return [Problem(ERROR, name, format_path(e.path), "load-fails", reason)]
    if end != section.end:
        return [
            Problem(
                ERROR,
                name,
                desc.name,
                "length-mismatch",
                f"the destination reads {end - section.start} bytes of a {section.end - section.start}-byte section",
            )
        ]
    return []
