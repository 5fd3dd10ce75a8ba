"""Streams and states as text, one field per line: ``offset  hex  path = value``.

Made for snapshot tests and for reading: a change to one field changes the
line that names it.  Lines come from the spans a traced load or save records
(:mod:`vmstate.interpreter.spans`), so offsets and sizes are the interpreter's
own.  Long buffers are split into 16-byte rows so a changed byte points at its
row, subsections and list markers are marked, RAM is summarised, and bytes no
description explains are shown as a hexdump.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vmstate.description import Description
from vmstate.errors import DecodeError
from vmstate.interpreter.spans import Span
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
    assert section.description is not None
    header = (
        f"== {section.idstr} (section {section.section_id}, instance {section.instance_id}, "
        f"v{section.version_id}, {section.end - section.start} bytes)"
    )
    span = section.description.trace(buf, section.start, section.version_id)
    lines = [header]
    _lines(lines, span.children, buf, "")
    if span.end != section.end:
        lines.extend(hexdump(bytes(buf[span.end : section.end]), span.end))
    return lines


def render_state(desc: Description, state: Mapping[str, Any], version_id: int | None = None) -> str:
    """One description's encoding of *state*, field by field."""
    version = desc.version_id if version_id is None else version_id
    data, span = desc.save_traced(state, version)
    lines: list[str] = [f"== {desc.name} v{version} ({len(data)} bytes)"]
    _lines(lines, span.children, data, "")
    return "\n".join(lines) + "\n"


def _lines(lines: list[str], spans: list[Span], data: Any, parent: str) -> None:
    for span in spans:
        if span.name == "":
            path = parent
        elif isinstance(span.name, int):
            path = f"{parent}[{span.name}]"
        else:
            path = f"{parent}.{span.name}" if parent else span.name
        raw = bytes(data[span.start : span.end])
        if span.note:
            lines.append(_line(span.start, raw, path, span.note))
        elif span.kind.container:
            _lines(lines, span.children, data, path)
        elif not span.kind.stored and not span.size:
            continue  # a validate check: no bytes
        elif isinstance(span.value, bytes) and span.size > ROW:
            for i in range(0, span.size, ROW):
                chunk = raw[i : i + ROW]
                end = min(i + ROW, span.size)
                lines.append(_line(span.start + i, chunk, f"{path}[{i:#x}:{end:#x}]", chunk.hex(" ")))
        else:
            lines.append(_line(span.start, raw, path, span.kind.show(span.value)))


#: how to show the values of a field, by field name (enum names, padded IDs)
Labels = Mapping[str, Callable[[Any], str]]


def render_tree(
    desc: Description, state: Mapping[str, Any], indent: str = "", labels: Labels | None = None
) -> list[str]:
    """*state* as an indented tree of names and values, without offsets (for people);
    a field *labels* names is shown its way, at any depth."""
    lines: list[str] = []
    for name, part, value in desc.parts(state):
        if isinstance(part, Description):
            lines.append(f"{indent}{name}: (subsection v{part.version_id})")
            lines.extend(render_tree(part, value, indent + "  ", labels))
        else:
            lines.extend(_tree_value(part, str(name), value, indent, labels or {}))
    return lines


def _tree_value(kind: Any, name: str, value: Any, indent: str, labels: Labels) -> list[str]:
    if not kind.container:
        label = labels.get(name)
        shown = label(value) if label is not None else kind.show_short(value)
        return [f"{indent}{name}: {shown}"]
    parts = kind.parts(value)
    if not isinstance(value, list):
        lines = [f"{indent}{name}:"]
        for part_name, part, part_value in parts:
            if isinstance(part, Description):
                lines.append(f"{indent}  {part_name}: (subsection v{part.version_id})")
                lines.extend(render_tree(part, part_value, indent + "    ", labels))
            else:
                lines.extend(_tree_value(part, str(part_name), part_value, indent + "  ", labels))
        return lines
    if len(value) <= ROW and all(part.scalar for _, part, _ in parts):
        shown = ", ".join(part.show_short(v) for _, part, v in parts)
        return [f"{indent}{name}: [{shown}]"]
    lines = [f"{indent}{name}: {count(len(value), 'element')}"]
    for i, part, item in parts:
        if item is None:
            lines.append(f"{indent}  [{i}]: NULL")
        else:
            lines.extend(_tree_value(part, f"[{i}]", item, indent + "  ", labels))
    return lines


def count(n: int, noun: str) -> str:
    """``1 section``, ``2 sections``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def hexdump(data: bytes, base: int) -> list[str]:
    return [
        f"{base + i:08x}  {data[i : i + ROW].hex(' '):<47}  |{_printable(data[i : i + ROW])}|"
        for i in range(0, len(data), ROW)
    ]


def _printable(chunk: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)


def _line(offset: int, raw: bytes, path: str, shown: str) -> str:
    text = raw[:8].hex(" ") + (" .." if len(raw) > 8 else "")
    return f"{offset:08x}  {text:<26}  {path} = {shown}"
