"""What differs between two streams, two saved device states, or two description sets,
field by field.

Streams (saved device states are streams too) are compared section by section,
matched by id string and instance (repeated sections by their order).  A device
section whose bytes differ is traced on both sides (Description.trace), and each
leaf value that differs is one :class:`Difference` with its path and both offsets,
read from the spans, never re-encoded.  A buffer (a PCI config space) differs
run by run of bytes, each with its own offsets.  A part on one side only (a
subsection, array elements) is one difference, not one per leaf.  Sections that
are not VMState are compared as bytes: RAM by its block list and whether its
bytes are equal (pages are not matched one by one), a VFIO device's config state
field by field, its device data by its first differing byte.

Description sets (``-dump-vmstate``, vmdesc, description files) are compared
device by device: versions, each field's kind and size, since-versions,
exists-tests, subsections and their needed conditions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs

from vmstate.compat import DescriptionSet
from vmstate.description import Description
from vmstate.errors import format_path
from vmstate.interpreter.spans import Span
from vmstate.stream import CONFIGURATION_DESCRIPTION, Input, Section, Stream

CHANGED, ADDED, REMOVED = "changed", "added", "removed"
#: bytes of a differing run shown in full; longer runs show their start
_SHOWN = 16
#: equal bytes that still join two differing runs into one
_GAP = 4


@attrs.frozen
class Difference:
    """One thing that is not the same on both sides."""

    #: the section (id string, with `` (instance N)`` after the first) or description
    where: str
    #: the field path within it ("" for the section itself)
    path: str
    change: str
    old: str = ""
    new: str = ""
    #: offsets in each side's stream (None: not there, or no bytes)
    offset_a: int | None = None
    offset_b: int | None = None

    def __str__(self) -> str:
        place = f"{self.where}: {self.path}" if self.path else self.where
        if self.change == CHANGED:
            text = f"{place}: {self.old} -> {self.new}"
        elif self.change == ADDED:
            text = f"{place}: only in B{f' ({self.new})' if self.new else ''}"
        else:
            text = f"{place}: only in A{f' ({self.old})' if self.old else ''}"
        at = [f"{side} {off:#x}" for side, off in (("A", self.offset_a), ("B", self.offset_b))
              if off is not None]
        return f"{text}  [at {', '.join(at)}]" if at else text

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


# -- streams ------------------------------------------------------------------------


def diff_streams(a: Stream, buf_a: Input, b: Stream, buf_b: Input) -> list[Difference]:
    """Every difference between two parsed streams (parsed with their raw vfio walker)."""
    out: list[Difference] = []
    if a.machine != b.machine:
        out.append(Difference("stream", "machine", CHANGED, str(a.machine), str(b.machine)))
    if a.capabilities != b.capabilities:
        caps = [", ".join(c) or "none" for c in (a.capabilities, b.capabilities)]
        out.append(Difference("stream", "capabilities", CHANGED, *caps))
    if a.command_names() != b.command_names():
        names = [" ".join(c.command_names()) or "none" for c in (a, b)]
        out.append(Difference("stream", "commands", CHANGED, *names))
    if a.configuration is not None and b.configuration is not None:
        out += _configuration(a, buf_a, b, buf_b)
    out += _ram(a, buf_a, b, buf_b)
    device_a, device_b = _saved_device(a), _saved_device(b)
    if device_a and device_b and device_a != device_b:
        # two devices' saved states: their sections are matched by what they hold
        out.append(Difference("saved device", "", CHANGED, device_a, device_b))
        sections_a, sections_b = _keyed(a, f"{device_a}/"), _keyed(b, f"{device_b}/")
    else:
        sections_a, sections_b = _keyed(a), _keyed(b)
    for key in [*sections_a, *(k for k in sections_b if k not in sections_a)]:
        sa, sb = sections_a.get(key), sections_b.get(key)
        where = _where(key)
        if sa is None or sb is None:
            size = sb.end - sb.start if sa is None and sb is not None else None
            if sa is not None:
                size = sa.end - sa.start
            text = f"section, {size} bytes"
            change = ADDED if sa is None else REMOVED
            out.append(Difference(where, "", change, *((text, "") if sa else ("", text)),
                                  sa.header_offset if sa else None,
                                  sb.header_offset if sb else None))
            continue
        out += _section(where, sa, buf_a, sb, buf_b)
    return out


def _saved_device(stream: Stream) -> str | None:
    """The device whose state a file of ``vmstate save`` holds (its sections are all
    ``NAME/...``, one of them ``NAME/vfio-pci-config``), else None."""
    names = [s.idstr for s in stream.sections if s.idstr != "ram"]
    devices = {name.rsplit("/", 1)[0] for name in names if "/" in name}
    if len(devices) != 1 or not all("/" in name for name in names):
        return None
    (device,) = devices
    from vmstate.pci_vfio import DESCRIPTION_NAME  # only now: other streams need no PCI code

    return device if f"{device}/{DESCRIPTION_NAME}" in names else None


def _keyed(stream: Stream, strip: str = "") -> dict[tuple[str, int, int], Section]:
    """Sections other than RAM by (id string without *strip*, instance, occurrence)."""
    seen: dict[tuple[str, int], int] = {}
    out = {}
    for section in stream.sections:
        if section.idstr == "ram":
            continue
        base = (section.idstr.removeprefix(strip), section.instance_id)
        n = seen[base] = seen.get(base, -1) + 1
        out[(*base, n)] = section
    return out


def _where(key: tuple[str, int, int]) -> str:
    idstr, instance, n = key
    text = idstr if instance == 0 else f"{idstr} (instance {instance})"
    return text if n == 0 else f"{text} #{n + 1}"


def _configuration(a: Stream, buf_a: Input, b: Stream, buf_b: Input) -> list[Difference]:
    assert a.configuration_offset is not None and b.configuration_offset is not None
    span_a = CONFIGURATION_DESCRIPTION.trace(buf_a, a.configuration_offset + 1, 0)
    span_b = CONFIGURATION_DESCRIPTION.trace(buf_b, b.configuration_offset + 1, 0)
    return list(_spans("configuration", span_a, span_b))


def _ram(a: Stream, buf_a: Input, b: Stream, buf_b: Input) -> list[Difference]:
    out = []
    blocks_a = {block.name: block.length for block in a.ram_blocks}
    blocks_b = {block.name: block.length for block in b.ram_blocks}
    for name in [*blocks_a, *(n for n in blocks_b if n not in blocks_a)]:
        la, lb = blocks_a.get(name), blocks_b.get(name)
        if la != lb:
            change = CHANGED if la is not None and lb is not None else ADDED if la is None else REMOVED
            old = "" if la is None else f"{la} bytes"
            new = "" if lb is None else f"{lb} bytes"
            out.append(Difference("ram", f"block {name}", change, old, new))
    pages_a = [bytes(buf_a[s.start : s.end]) for s in a.sections if s.idstr == "ram"]
    pages_b = [bytes(buf_b[s.start : s.end]) for s in b.sections if s.idstr == "ram"]
    if not out and pages_a != pages_b:
        sizes = [f"{sum(map(len, p))} bytes of RAM records" for p in (pages_a, pages_b)]
        out.append(Difference("ram", "pages (not matched page by page)", CHANGED, *sizes))
    return out


def _section(where: str, sa: Section, buf_a: Input, sb: Section, buf_b: Input) -> list[Difference]:
    out = []
    if sa.version_id != sb.version_id:
        out.append(Difference(where, "version", CHANGED, f"v{sa.version_id}", f"v{sb.version_id}",
                              sa.header_offset, sb.header_offset))
    if bytes(buf_a[sa.start : sa.end]) == bytes(buf_b[sb.start : sb.end]):
        return out
    da, db = sa.description, sb.description
    if da is not None and db is not None:
        span_a = da.trace(buf_a, sa.start, sa.version_id)
        span_b = db.trace(buf_b, sb.start, sb.version_id)
        return out + list(_spans(where, span_a, span_b))
    if sa.idstr.endswith("/vfio"):
        return out + _vfio(where, sa, buf_a, sb, buf_b)
    return out + _bytes(where, "bytes", bytes(buf_a[sa.start : sa.end]), sa.start,
                        bytes(buf_b[sb.start : sb.end]), sb.start)


def _vfio(where: str, sa: Section, buf_a: Input, sb: Section, buf_b: Input) -> list[Difference]:
    """A vfio section: its VFIOPCIDevice state field by field, then its device data."""
    from vmstate import pci_vfio, registry
    from vmstate.vfio_section import walk_vfio

    pa, pb = walk_vfio(buf_a, sa.start), walk_vfio(buf_b, sb.start)
    out = []
    if pa.config is not None and pb.config is not None:
        qemu = registry.get(pci_vfio.QEMU_DESCRIPTION_NAME)
        span_a = qemu.trace(buf_a, pa.config[0], held=pa.config_held)
        span_b = qemu.trace(buf_b, pb.config[0], held=pb.config_held)
        out += _spans(f"{where} DEV_CONFIG_STATE", span_a, span_b)
    data_a = b"".join(bytes(buf_a[at : at + n]) for at, n in pa.chunks)
    data_b = b"".join(bytes(buf_b[at : at + n]) for at, n in pb.chunks)
    if data_a != data_b:
        first = next((i for i, (x, y) in enumerate(zip(data_a, data_b, strict=False)) if x != y),
                     min(len(data_a), len(data_b)))
        out.append(Difference(f"{where} DEV_DATA_STATE", f"device data[{first:#x}]", CHANGED,
                              f"{len(data_a)} bytes", f"{len(data_b)} bytes",
                              _data_offset(pa.chunks, first), _data_offset(pb.chunks, first)))
    if not out:
        out += _bytes(where, "framing", bytes(buf_a[sa.start : sa.end]), sa.start,
                      bytes(buf_b[sb.start : sb.end]), sb.start)
    return out


def _data_offset(chunks: tuple[tuple[int, int], ...], at: int) -> int | None:
    """The stream offset of byte *at* of the device data its *chunks* hold."""
    for start, size in chunks:
        if at < size:
            return start + at
        at -= size
    return None


def _spans(where: str, a: Span, b: Span) -> Iterator[Difference]:
    """The differing leaves of two traced values, and the parts only one side has."""
    spans_a, spans_b = _flat(a), _flat(b)
    gone: list[tuple[str | int, ...]] = []
    for path in [*spans_a, *(p for p in spans_b if p not in spans_a)]:
        if any(path[: len(g)] == g for g in gone):
            continue
        sa, sb = spans_a.get(path), spans_b.get(path)
        text = format_path(path)
        if sa is None or sb is None:
            gone.append(path)
            present = sa if sa is not None else sb
            assert present is not None
            size = f"{present.size} bytes"
            if sa is None:
                yield Difference(where, text, ADDED, "", size, None, present.start)
            else:
                yield Difference(where, text, REMOVED, size, "", present.start, None)
        elif not _is_container(sa) and sa.value != sb.value:
            if isinstance(sa.value, bytes | bytearray) and isinstance(sb.value, bytes | bytearray):
                yield from _bytes(where, text, bytes(sa.value), sa.start, bytes(sb.value), sb.start)
            else:
                yield Difference(where, text, CHANGED, *_shown(sa, sb), sa.start, sb.start)


def _flat(span: Span) -> dict[tuple[str | int, ...], Span]:
    """Every stored value below *span* by path, framing bytes left out."""
    return {path: s for path, s in span.walk() if s.kind is not None and (
        _is_container(s) or s.kind.stored)}


def _is_container(span: Span) -> bool:
    return bool(span.kind.container)  # a struct, an array, a description


def _shown(a: Span, b: Span) -> tuple[str, str]:
    """Both values as their kind shows them; two numbers both in hex when one is."""
    old, new = str(a.kind.show_short(a.value)), str(b.kind.show_short(b.value))
    numbers = all(type(v) is int and v >= 0 for v in (a.value, b.value))
    if numbers and old.startswith("0x") != new.startswith("0x"):
        return f"{a.value:#x}", f"{b.value:#x}"
    return old, new


def _bytes(where: str, path: str, a: bytes, at_a: int, b: bytes, at_b: int) -> list[Difference]:
    """Two byte strings as the runs that differ (equal runs shorter than _GAP joined)."""
    if len(a) != len(b):
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                     min(len(a), len(b)))
        return [Difference(where, f"{path} (from [{first:#x}])", CHANGED, f"{len(a)} bytes",
                           f"{len(b)} bytes", at_a + first, at_b + first)]
    out = []
    i = 0
    while i < len(a):
        if a[i] == b[i]:
            i += 1
            continue
        end = i + 1
        while end < len(a) and (a[end] != b[end] or any(
                a[k] != b[k] for k in range(end, min(len(a), end + _GAP)))):
            end += 1
        label = f"{path}[{i:#x}]" if end - i == 1 else f"{path}[{i:#x}:{end:#x}]"
        out.append(Difference(where, label, CHANGED, _hex(a[i:end]), _hex(b[i:end]),
                              at_a + i, at_b + i))
        i = end
    return out


def _hex(data: bytes) -> str:
    text = data[:_SHOWN].hex(" ")
    return text if len(data) <= _SHOWN else f"{text} ... ({len(data)} bytes)"


# -- description sets ---------------------------------------------------------------


def diff_descriptions(a: DescriptionSet, b: DescriptionSet) -> list[Difference]:
    """Every difference between two description sets, device by device."""
    out = []
    for name in [*a.sections, *(n for n in b.sections if n not in a.sections)]:
        da, db = a.sections.get(name), b.sections.get(name)
        if da is None or db is None:
            present = da if da is not None else db
            assert present is not None
            text = f"{present.name} v{present.version_id}"
            out.append(Difference(name, "", ADDED if da is None else REMOVED,
                                  "" if da is None else text, text if da is None else ""))
            continue
        rows_a, rows_b = dict(_rows(da, ())), dict(_rows(db, ()))
        gone: list[tuple[str, ...]] = []
        for path in [*rows_a, *(p for p in rows_b if p not in rows_a)]:
            if any(path[: len(g)] == g for g in gone):
                continue
            ra, rb = rows_a.get(path), rows_b.get(path)
            text = ".".join(path)
            if ra is None or rb is None:
                gone.append(path)
                out.append(Difference(name, text, ADDED if ra is None else REMOVED,
                                      ra or "", rb or ""))
            elif ra != rb:
                out.append(Difference(name, text, CHANGED, ra, rb))
    return out


def _rows(desc: Description, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path, what it is) of a description, its fields, their parts and subsections."""
    versions = f"v{desc.version_id} (loads v{desc.minimum_version_id}..v{desc.version_id})"
    yield (*path, "(version)"), versions
    for field in desc.fields:
        kind, size = field.kind.describe()
        notes = [f"since v{field.since}"] if field.since else []
        if field.exists is not None:
            notes.append(f"exists: {field.exists.source}")
        here = (*path, field.name)
        yield here, ", ".join([f"{kind} {size}".strip(), *notes, *field.kind.describe_notes()])
        for part in field.kind.described_parts():
            if isinstance(part, Description):
                yield from _rows(part, (*here, part.name))
    for sub in desc.subsections:
        here = (*path, f"subsection {sub.name}")
        needed = "always sent" if sub.needed is None else f"needed: {sub.needed.source}"
        yield here, needed
        yield from _rows(sub.description, here)


__all__ = ["ADDED", "CHANGED", "REMOVED", "Difference", "diff_descriptions", "diff_streams"]
