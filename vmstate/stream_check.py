"""Dry-run a saved migration stream against the destination's descriptions.

Sections are delimited with the stream's own vmdesc (what the source really
sent); each is compared field by field with the destination's description and,
when that can decode bytes (description files, another stream's vmdesc), also
loaded with it.  The stream as a whole must suit the destination too: its
machine type, as QEMU requires of the stream's configuration section (a libvirt
save image names it in its domain XML, which is what a restore starts), and the
capabilities it was written with.  Nothing is loaded anywhere: the result is the
list of sections that would fail and why.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from vmstate import qemu_vfio
from vmstate.compat import (
    DUMP,
    VMDESC,
    DescriptionSet,
    compare,
    find_section,
    machine_problems,
    missing_section,
)
from vmstate.description import Description
from vmstate.dump_layout import DumpLayouts
from vmstate.errors import DecodeError, UsageError, format_path
from vmstate.findings import ERROR, WARNING, Finding
from vmstate.inputs import StreamInput, open_stream
from vmstate.stream import Input, Progress, Section, Stream, find_vmdesc, parse, refuse_truncated
from vmstate.vfio_section import raw_sections
from vmstate.waivers import NO_WAIVERS, Waivers


def check_stream(
    path: str | Path,
    dst: DescriptionSet,
    waivers: Waivers = NO_WAIVERS,
    device_data: Description | None = None,
    src: DescriptionSet | None = None,
    progress: Progress | None = None,
) -> list[Finding]:
    """Every reason the stream in *path* (bare or in a libvirt save image) would not load
    into *dst*.  *device_data* is the format of VFIO devices' device data (see
    qemu_vfio); *src*, the source QEMU's dump, tells which sections are device types, so
    that one the destination's dump lacks is known to be missing there, and reads a
    stream without vmdesc (see vmstate.dump_layout).  *progress* hears how far the
    stream has been read."""
    with open_stream(path) as opened:
        buf = opened.data
        layouts = None
        if find_vmdesc(buf) is None:
            if src is None or src.kind != DUMP:
                refuse_truncated(buf)
                raise UsageError(
                    f"{path}: the stream has no vmdesc; give the source QEMU's -dump-vmstate "
                    "with --src to read its sections"
                )
            layouts = DumpLayouts(src)
        parsed = parse(buf, raw=raw_sections, fitter=layouts, progress=progress)
        problems = _stream_problems(opened, parsed, dst)
        for section in parsed.device_sections():
            fitted = layouts.fitted.get((section.idstr, section.instance_id)) if layouts else None
            if fitted is not None and not fitted.described:
                reason = (
                    "the stream has no vmdesc and the source's dump gives no single layout of "
                    "this section: it is not compared"
                )
                problems.append(Finding(WARNING, section.idstr, "", "section-unread", reason))
                continue
            problems.extend(_section(section, buf, dst, waivers, src))
        problems.extend(qemu_vfio.problems(parsed, buf, device_data))
    machine = dst.machine or parsed.machine or ""
    return [p for p in problems if not waivers.accepts(p, machine)]


def _stream_problems(opened: StreamInput, parsed: Stream, dst: DescriptionSet) -> list[Finding]:
    """What the stream as a whole asks of the destination: its machine type (QEMU
    refuses another: "Machine type received is ..."), its capabilities."""
    image = opened.save_image
    machine = (image.domain.machine if image else "") or parsed.machine or ""
    problems = machine_problems(machine, dst.machine, "the stream")
    for capability in parsed.capabilities:
        reason = (
            f"the source migrated with capability {capability!r}: QEMU refuses the stream "
            "unless the destination enables it too (migrate-set-capabilities)"
        )
        problems.append(Finding(WARNING, "configuration", capability, "capability", reason))
    return problems


def _section(
    section: Section,
    buf: Input,
    dst: DescriptionSet,
    waivers: Waivers,
    src: DescriptionSet | None,
) -> list[Finding]:
    assert section.description is not None
    name = section.idstr
    if section.instance_id:
        name = f"{name} ({section.instance_id})"  # as sources.py keys a vmdesc's sections
    sent = DescriptionSet({name: section.description}, kind=VMDESC)
    target = find_section(name, section.description, sent, dst, waivers)
    if target is None:
        vmsd = section.description.name
        if src is not None and src.find(waivers.section_name(vmsd), section.description):
            reason = (
                f"the source's QEMU has a device type with this state ({vmsd}), the "
                "destination's has none: it cannot create the device"
            )
            return [Finding(ERROR, name, "", "section-missing", reason)]
        return [missing_section(name, section.description, sent, dst)]
    _, desc = target
    one = attrs.evolve(dst, sections={name: desc}, versions={}, machine="")
    if not dst.decodes:
        return compare(sent, one, waivers)
    try:
        _, end = desc.load_from(buf, section.start, section.version_id)
    except DecodeError as e:
        reason = f"{e.message} at offset {e.offset:#x} (expected {e.expected}, found {e.found})"
        return [Finding(ERROR, name, format_path(e.path), "load-fails", reason)]
    if end != section.end:
        reason = (
            f"the destination reads {end - section.start} bytes of a "
            f"{section.end - section.start}-byte section"
        )
        return [Finding(ERROR, name, desc.name, "length-mismatch", reason)]
    # the bytes fit; the names may still not (esp's ti_cmd and lun against lun and drq_state)
    return compare(sent, one, waivers)
