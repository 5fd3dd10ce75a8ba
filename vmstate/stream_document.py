"""A migration stream as one JSON document, which ``vmstate encode`` (vmstate.encode)
turns back into the same stream, byte for byte, or into an edited one.

``vmstate analyze --format json`` prints it.  Every record of the stream is an
item, in wire order, so nothing is implied: section order, ids, instance ids and
versions, footers, the configuration section, commands, EOF and the vmdesc::

    {"vmstate_stream": 1,
     "source": {"file": "/abs/path.mig", "size": 720108},
     "items": [
       {"type": "configuration", "state": {"len": 13, "name": "7063...", ...}},
       {"type": "command", "name": "SWITCHOVER_START", "number": 11, "data": ""},
       {"type": "section", "kind": "START", "section_id": 2, "idstr": "ram",
        "instance_id": 0, "version_id": 4, "footer": true,
        "bytes": {"offset": 2062, "size": 708917, "sha256": "..."}},
       {"type": "section", "kind": "FULL", ..., "state": {"cpu_ticks_offset": 0, ...}},
       {"type": "eof"},
       {"type": "vmdesc", "json": {...}, "separators": [", ", ": "]}],
     "vfio": [...]}

A device section holds its decoded ``state``.  Its description is the stream's
own vmdesc entry for its id string and instance; where the stream has no vmdesc,
or other descriptions were asked for, the section carries the vmdesc entry it was
decoded with as ``layout``, so the document always says how to encode it again.
What is not decoded (RAM, vfio sections, old-style sections, and a section no
layout fits) is kept as ``bytes``: inline as hex, or by reference to the
source file (its offset and size in the stream, and its SHA-256, checked when
encoding), the default for a regular file, since RAM is gigabytes.  A PACKAGED
command (postcopy) says how many of the following items its package holds; its
length is computed again.  The vmdesc is kept as JSON with the separators that
reproduce its bytes (QEMU's ``", "``/``": "``, vmstate's own compact ones), or,
when neither does, as its text.

``vfio`` is a view of each VFIO device's sections (config state and device data,
decoded); encode writes vfio sections from their ``bytes`` and refuses a document
whose view no longer matches them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from vmstate.errors import DecodeError
from vmstate.stream import (
    CONFIGURATION_DESCRIPTION,
    FOOTER,
    PACKAGED,
    Input,
    Progress,
    Section,
    Stream,
)
from vmstate.vmdesc import description_from_vmdesc

if TYPE_CHECKING:
    from vmstate.description import Description
    from vmstate.inputs import StreamInput
    from vmstate.qemu_vfio import VfioSections

#: the document's format marker and version
FORMAT_KEY = "vmstate_stream"
FORMAT_VERSION = 1
SECTION_KINDS = {1: "START", 2: "PART", 3: "END", 4: "FULL"}
#: how vmdesc JSON is written: QEMU's json-writer, and vmstate's own StreamWriter
VMDESC_SEPARATORS = ((", ", ": "), (",", ":"))
INLINE, REFERENCE = "inline", "reference"


def document(
    opened: StreamInput,
    parsed: Stream,
    *,
    own_vmdesc: bool,
    raw_bytes: str = REFERENCE,
    vfio: tuple[VfioSections, ...] = (),
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The document of *parsed*, the stream *opened* holds.  *own_vmdesc*: its device
    sections were decoded with the stream's own vmdesc (else each gets its layout).
    *raw_bytes* is INLINE or REFERENCE; a stream that is no regular file (a pipe) is
    always inline.  *progress* hears how far the bytes kept (RAM above all) are hashed
    or written out."""
    buf = opened.data
    source = _source_file(opened)
    referenced = raw_bytes == REFERENCE and source is not None
    out: dict[str, Any] = {FORMAT_KEY: FORMAT_VERSION, "source": {"file": source, "size": len(buf)}}
    if opened.save_image is not None:
        out["source"]["libvirt_save_image"] = opened.save_image.summary()
    found = _items(parsed, buf, own_vmdesc, referenced, progress)
    items = [item for _, item in sorted(found, key=lambda pair: pair[0])]
    out["items"] = items
    if vfio:
        out["vfio"] = [vfio_view(d) for d in vfio]
    return out


def _source_file(opened: StreamInput) -> str | None:
    """The absolute path of a regular file the stream can be read from again, else None."""
    if opened.name == "-":
        return None
    try:
        regular = os.path.isfile(opened.name)
    except OSError:
        return None
    return os.path.abspath(opened.name) if regular else None


def _items(
    parsed: Stream, buf: Input, own_vmdesc: bool, referenced: bool, progress: Progress | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(offset, item) of every record; sorted by offset they are the stream."""
    if parsed.configuration is not None:
        assert parsed.configuration_offset is not None
        state = CONFIGURATION_DESCRIPTION.to_json(parsed.configuration)
        yield parsed.configuration_offset, {"type": "configuration", "state": state}
    package_ends = []
    for command in parsed.commands:
        item: dict[str, Any] = {
            "type": "command",
            "name": command.name,
            "number": command.number,
            "data": command.data.hex(),
        }
        if command.number == PACKAGED:
            start = command.offset + 5 + len(command.data)
            end = start + int.from_bytes(command.data, "big")
            package_ends.append((command.offset, start, end, item))
        yield command.offset, item
    sections = [
        (s.header_offset, _section(s, buf, own_vmdesc, referenced, progress))
        for s in parsed.sections
    ]
    yield from sections
    for _, start, end, item in package_ends:
        inside = [at for at, _ in sections] + [c.offset for c in parsed.commands]
        item["items"] = sum(start <= at < end for at in inside)
        del item["data"]  # the package's length, computed again when encoding
    eof = parsed.vmdesc_offset - 1 if parsed.vmdesc_offset is not None else parsed.size - 1
    yield eof, {"type": "eof"}
    if parsed.vmdesc_offset is not None:
        yield parsed.vmdesc_offset, _vmdesc(buf, parsed.vmdesc_offset)


def _section(
    section: Section, buf: Input, own_vmdesc: bool, referenced: bool, progress: Progress | None
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "section",
        "kind": SECTION_KINDS[section.type],
        "section_id": section.section_id,
        "idstr": section.idstr,
        "instance_id": section.instance_id,
        "version_id": section.version_id,
        "footer": section.end < len(buf) and buf[section.end] == FOOTER,
    }
    desc, state = section.description, section.state
    if desc is not None and state is not None:
        if own_vmdesc:
            item["state"] = desc.to_json(state)
            return item
        fitted = _layout(desc, section, buf)
        if fitted is not None:
            item["layout"], item["state"] = fitted
            return item
    item["bytes"] = _bytes(buf, section.start, section.end, referenced)
    if progress is not None:
        progress(section.end, len(buf))
    return item


def _layout(
    desc: Description, section: Section, buf: Input
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The vmdesc entry of how *section* was decoded, and its state decoded again with
    the description made from that entry (what encode will use); None when it does not
    read the same bytes back."""
    try:
        entry = desc.vmdesc_entry(desc.trace(buf, section.start, section.version_id))
        again = description_from_vmdesc(entry, section.version_id)
        state_again, end = again.load_from(buf, section.start, section.version_id, checks=False)
    except DecodeError:
        return None
    if end != section.end:
        return None
    return entry, again.to_json(state_again)


def _bytes(buf: Input, start: int, end: int, referenced: bool) -> str | dict[str, Any]:
    if not referenced:
        return bytes(buf[start:end]).hex()
    digest = hashlib.sha256()
    view = memoryview(buf)
    try:
        for at in range(start, end, 1 << 24):
            digest.update(view[at : min(end, at + (1 << 24))])
    finally:
        view.release()
    return {"offset": start, "size": end - start, "sha256": digest.hexdigest()}


def _vmdesc(buf: Input, at: int) -> dict[str, Any]:
    raw = bytes(buf[at + 5 :])
    data = json.loads(raw)  # parsing the stream read it already
    for separators in VMDESC_SEPARATORS:
        if json.dumps(data, separators=separators).encode() == raw:
            return {"type": "vmdesc", "json": data, "separators": list(separators)}
    return {"type": "vmdesc", "text": raw.decode("utf-8")}


def vfio_view(device: VfioSections) -> dict[str, Any]:
    """A VFIO device's sections: its config state and device data, decoded."""
    from vmstate import pci_vfio, registry

    out: dict[str, Any] = {
        "idstr": device.idstr,
        "sections": [s.section_id for s in device.sections],
        "layout": device.layout(),
    }
    if device.config is not None:
        qemu = registry.get(pci_vfio.QEMU_DESCRIPTION_NAME)
        out["config"] = {"description": qemu.name, "state": qemu.to_json(device.config)}
    data: dict[str, Any] = {"size": device.data_size, "chunks": len(device.chunks)}
    if device.data is not None and device.data_format is not None:
        data["format"] = device.data_format.name
        data["state"] = device.data_format.to_json(device.data)
    out["device_data"] = data
    return out


__all__ = [
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "INLINE",
    "REFERENCE",
    "SECTION_KINDS",
    "document",
    "vfio_view",
]
