"""Dry-run a saved migration stream against the destination's descriptions.

Sections are delimited with the stream's own vmdesc (what the source really
sent); each is then loaded with the destination's description when that can
decode bytes, or compared field by field with it when it is a -dump-vmstate
set.  The machine type must be the destination's, as QEMU requires of the
stream's configuration section (a libvirt save image names it in its domain
XML, which is what a restore starts).  Nothing is loaded anywhere: the result
is the list of sections that would fail and why.
"""

from __future__ import annotations

from pathlib import Path

from vmstate import qemu_vfio
from vmstate.compat import ERROR, VMDESC, DescriptionSet, Problem, compare, missing_section
from vmstate.description import Description
from vmstate.errors import DecodeError, format_path
from vmstate.inputs import StreamInput, open_stream
from vmstate.stream import Input, Section, Stream, parse
from vmstate.vfio_section import raw_sections
from vmstate.waivers import NO_WAIVERS, Waivers


def check_stream(
    path: str | Path,
    dst: DescriptionSet,
    waivers: Waivers = NO_WAIVERS,
    device_data: Description | None = None,
    src: DescriptionSet | None = None,
) -> list[Problem]:
    """Every reason the stream in *path* (bare or in a libvirt save image) would not load
    into *dst*.  *device_data* is the format of VFIO devices' device data (see
    qemu_vfio); *src*, the source QEMU's dump, tells which sections are device types, so
    that one the destination's dump lacks is known to be missing there."""
    with open_stream(path) as opened:
        buf = opened.data
        parsed = parse(buf, raw=raw_sections)
        problems = _machine(opened, parsed, dst)
        for section in parsed.device_sections():
            problems.extend(_section(section, buf, dst, waivers, src))
        problems.extend(qemu_vfio.problems(parsed, buf, device_data))
    return problems


def _machine(opened: StreamInput, parsed: Stream, dst: DescriptionSet) -> list[Problem]:
    """QEMU refuses a stream of another machine type ("Machine type received is ...")."""
    image = opened.save_image
    machine = (image.domain.machine if image else "") or parsed.machine or ""
    if not machine or not dst.machine or machine == dst.machine:
        return []
    reason = (
        f"the stream is of machine type {machine}, the destination's descriptions are of "
        f"{dst.machine}: QEMU loads a stream only into its own machine type (describe the "
        f"destination with -M {machine}; if its QEMU lacks that machine type, it cannot load it)"
    )
    return [Problem(ERROR, "configuration", "machine", "machine-type", reason)]


def _section(
    section: Section,
    buf: Input,
    dst: DescriptionSet,
    waivers: Waivers,
    src: DescriptionSet | None,
) -> list[Problem]:
    assert section.description is not None
    name = section.idstr
    if section.instance_id:
        name = f"{name} ({section.instance_id})"  # as sources.py keys a vmdesc's sections
    target = dst.find(waivers.section_name(name), section.description)
    if target is None:
        vmsd = section.description.name
        target = dst.find(waivers.section_name(vmsd), section.description)
    if target is None:
        vmsd = section.description.name
        if src is not None and src.find(waivers.section_name(vmsd), section.description):
            reason = (
                f"the source's QEMU has a device type with this state ({vmsd}), the "
                "destination's has none: it cannot create the device"
            )
            return [Problem(ERROR, name, "", "section-missing", reason)]
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
