"""Streams as text, one field per line: ``offset  hex  path = value``.

Made for snapshot tests and for reading: a change to one field changes the
line that names it.  Long buffers are split into 16-byte rows so a changed
byte points at its row, subsections are marked, RAM is summarised, and bytes
no description explains are shown as a hexdump.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from vmstate._wire import Ctx, Frame
from vmstate.description import SUBSECTION, Description
from vmstate.errors import DecodeError
from vmstate.fields import Array, Buffer, Kind, QTailQ, Scalar, Seq, Struct, Unused, VArray, VBuffer
from vmstate.stream import Input, Section, parse

ROW = 16


def render_stream(buf: Input) -> str:
    """The whole stream: header, every section field by field, trailing bytes."""
    lines = []
    try:
        parsed = parse(buf)
    except DecodeError as e:
        return "\n".join([f"undecodable stream: {e}", *hexdump(bytes(buf), 0)]) + "\n"
    lines.append(f"QEMU migration stream v{parsed.version}, machine {parsed.machine or '-'}")
    if parsed.ram_blocks:
        total = sum(b.length for b in parsed.ram_blocks)
        lines.append(f"ram: {len(parsed.ram_blocks)} blocks, {total} bytes (pages not shown)")
    for section in parsed.device_sections():
        lines.extend(render_section(section, buf))
    if parsed.vmdesc_offset is not None:
        lines.append(
            f"{parsed.vmdesc_offset:08x}  vmdesc: {parsed.size - parsed.vmdesc_offset - 5} bytes of JSON"
        )
    return "\n".join(lines) + "\n"


def render_section(section: Section, buf: Input) -> list[str]:
    assert section.description is not None and section.state is not None
    header = (
        f"== {section.idstr} (section {section.section_id}, instance {section.instance_id}, "
        f"v{section.version_id}, {section.end - section.start} bytes)"
    )
    data = bytes(buf[section.start : section.end])
    if section.description.save(section.state, section.version_id) != data:
        return [
            header,
            "   (does not re-encode to the same bytes; raw:)",
            *hexdump(data, section.start),
        ]
    lines = [header]
    end = _fields(
        lines, section.description, section.state, section.version_id, data, 0, section.start, ""
    )
    if end != len(data):
        lines.extend(hexdump(data[end:], section.start + end))
    return lines


def render_state(desc: Description, state: Mapping[str, Any], version_id: int | None = None) -> str:
    """One description's encoding of *state*, field by field."""
    version = desc.version_id if version_id is None else version_id
    data = desc.save(state, version)
    lines: list[str] = [f"== {desc.name} v{version} ({len(data)} bytes)"]
    _fields(lines, desc, state, version, data, 0, 0, "")
    return "\n".join(lines) + "\n"


def render_tree(desc: Description, state: Mapping[str, Any], indent: str = "") -> list[str]:
    """*state* as an indented tree of names and values, without offsets (for people)."""
    lines: list[str] = []
    for field in desc.fields:
        if field.kind.stored and field.name in state:
            lines.extend(_tree_value(field.kind, field.name, state[field.name], indent))
    for sub in desc.subsections:
        if sub.name in state:
            lines.append(f"{indent}{sub.name}: (subsection v{sub.description.version_id})")
            lines.extend(render_tree(sub.description, state[sub.name], indent + "  "))
    return lines


def _tree_value(kind: Kind, name: str, value: Any, indent: str) -> list[str]:
    if isinstance(kind, Struct):
        return [f"{indent}{name}:", *render_tree(kind.description, value, indent + "  ")]
    if isinstance(kind, Array | VArray | Seq | QTailQ):
        elements = list(_elements(kind, len(value)))
        if all(isinstance(e, Scalar) for e in elements) and len(value) <= 16:
            return [
                f"{indent}{name}: [{', '.join(_show_short(e, v) for e, v in zip(elements, value, strict=True))}]"
            ]
        lines = [f"{indent}{name}: {len(value)} elements"]
        for i, (element, item) in enumerate(zip(elements, value, strict=True)):
            lines.extend(
                _tree_value(element, f"[{i}]", item, indent + "  ")
                if item is not None
                else [f"{indent}  [{i}]: NULL"]
            )
        return lines
    return [f"{indent}{name}: {_show_short(kind, value)}"]


def _show_short(kind: Kind, value: Any) -> str:
    if isinstance(value, bytes) and len(value) > ROW:
        return f"{value[:ROW].hex(' ')} ... ({len(value)} bytes)"
    if isinstance(kind, Scalar) and isinstance(value, int) and not isinstance(value, bool):
        return f"{value:#x}" if value >= 10 else str(value)
    return _show(kind, value)


def hexdump(data: bytes, base: int) -> list[str]:
    return [
        f"{base + i:08x}  {data[i : i + ROW].hex(' '):<47}  |{_printable(data[i : i + ROW])}|"
        for i in range(0, len(data), ROW)
    ]


def _printable(chunk: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)


def _fields(
    lines: list[str],
    desc: Description,
    state: Mapping[str, Any],
    version: int,
    data: bytes,
    pos: int,
    base: int,
    prefix: str,
) -> int:
    frame = Frame(dict(state), version, None, Ctx())
    for field in desc.fields:
        kind = field.kind
        path = f"{prefix}{field.name}"
        if isinstance(kind, Unused):
            if field.since <= version and field.exists is None:
                lines.append(_line(base + pos, data[pos : pos + kind.size], path, "(padding)"))
                pos += kind.size
            continue
        if not kind.stored or field.name not in state:
            continue
        pos = _value(lines, kind, state[field.name], frame, field.name, data, pos, base, path)
    for sub in desc.subsections:
        if sub.name not in state:
            continue
        name = sub.name.encode()
        head = 2 + len(name) + 4
        lines.append(
            _line(
                base + pos,
                data[pos : pos + head],
                f"{prefix}{sub.name}",
                f"-- subsection v{sub.description.version_id}",
            )
        )
        assert data[pos] == SUBSECTION
        pos = _fields(
            lines,
            sub.description,
            state[sub.name],
            sub.description.version_id,
            data,
            pos + head,
            base,
            f"{prefix}{sub.name}.",
        )
    return pos


def _elements(kind: Kind, n: int) -> Iterator[Kind]:
    if isinstance(kind, Seq):
        yield from kind.elements
    else:
        assert isinstance(kind, Array | VArray | QTailQ)
        for _ in range(n):
            yield kind.element


def _value(
    lines: list[str],
    kind: Kind,
    value: Any,
    frame: Frame,
    name: str,
    data: bytes,
    pos: int,
    base: int,
    path: str,
) -> int:
    if isinstance(kind, Struct):
        version = kind.description.version_id if kind.version is None else kind.version
        return _fields(lines, kind.description, value, version, data, pos, base, f"{path}.")
    if isinstance(kind, Array | VArray | Seq | QTailQ):
        for i, (element, item) in enumerate(zip(_elements(kind, len(value)), value, strict=True)):
            if isinstance(kind, QTailQ):
                lines.append(
                    _line(base + pos, data[pos : pos + 1], f"{path}[{i}]", "-- list element")
                )
                pos += 1
            if item is None:
                lines.append(_line(base + pos, data[pos : pos + 1], f"{path}[{i}]", "NULL"))
                pos += 1
                continue
            pos = _value(lines, element, item, frame, name, data, pos, base, f"{path}[{i}]")
        if isinstance(kind, QTailQ):
            lines.append(_line(base + pos, data[pos : pos + 1], path, "-- end of list"))
            pos += 1
        return pos
    out = bytearray()
    kind.save(out, value, frame, name)
    size = len(out)
    if isinstance(kind, Buffer | VBuffer) and size > ROW:
        for i in range(0, size, ROW):
            chunk = data[pos + i : pos + min(i + ROW, size)]
            lines.append(
                _line(
                    base + pos + i, chunk, f"{path}[{i:#x}:{min(i + ROW, size):#x}]", chunk.hex(" ")
                )
            )
        return pos + size
    lines.append(_line(base + pos, data[pos : pos + size], path, _show(kind, value)))
    return pos + size


def _show(kind: Kind, value: Any) -> str:
    if isinstance(kind, Scalar) and isinstance(value, int) and not isinstance(value, bool):
        return f"{value} ({value & ((1 << (8 * kind.size)) - 1):#x})"
    if isinstance(value, bytes):
        return value.hex(" ") if value else "(empty)"
    if isinstance(value, int) and not isinstance(value, bool):
        return hex(value)
    return repr(value)


def _line(offset: int, raw: bytes, path: str, shown: str) -> str:
    text = raw[:8].hex(" ") + (" .." if len(raw) > 8 else "")
    return f"{offset:08x}  {text:<26}  {path} = {shown}"
