"""A description as a readable tree, for ``vmstate describe``.

One line per field with its kind, its size on the wire and what decides
whether it is there; nested structs and subsections are indented under the
field or description they belong to.  Sizes say how the bytes are counted:
``8 x uint32 = 32 bytes`` for an array, ``fifo_count x uint8 <= 16`` for a
variable array (at most 16 elements), ``len x 1 <= 4096 bytes`` for a
variable buffer (the size field times ``multiply``, then the bound).
"""

from __future__ import annotations

import attrs

from vmstate.description import Description, Hooks
from vmstate.fields import (
    Array,
    Bitmap,
    Buffer,
    Field,
    Kind,
    QTailQ,
    Scalar,
    Seq,
    Struct,
    Unused,
    Validate,
    VArray,
    VBuffer,
)

__all__ = ["describe"]

_INDENT = "  "


@attrs.frozen
class _Row:
    """A field line (aligned in columns) or, with ``heading``, a line of its own."""

    depth: int
    name: str
    kind: str = ""
    size: str = ""
    notes: str = ""
    heading: bool = False


def describe(desc: Description) -> str:
    """*desc* as an indented tree, one field per line, columns aligned."""
    rows = [_Row(0, f"{desc.name} {_versions(desc)}", heading=True)]
    _description(rows, desc, 1)
    fields = [r for r in rows if not r.heading]
    name_w = max((len(_INDENT * r.depth + r.name) for r in fields), default=0)
    kind_w = max((len(r.kind) for r in fields), default=0)
    size_w = max((len(r.size) for r in fields), default=0)
    lines = []
    for r in rows:
        if r.heading:
            lines.append(_INDENT * r.depth + r.name)
        else:
            name = _INDENT * r.depth + r.name
            line = f"{name:<{name_w}}  {r.kind:<{kind_w}}  {r.size:<{size_w}}  {r.notes}"
            lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def _versions(desc: Description) -> str:
    if desc.minimum_version_id == desc.version_id:
        return f"v{desc.version_id}"
    return f"v{desc.version_id} (loads v{desc.minimum_version_id}..v{desc.version_id})"


def _description(rows: list[_Row], desc: Description, depth: int) -> None:
    """Hooks, fields and subsections of *desc*, *depth* levels in."""
    if desc.hooks:
        rows.append(_Row(depth, f"hooks: {_hooks(desc.hooks)}", heading=True))
    for field in desc.fields:
        _field(rows, field, depth)
    for sub in desc.subsections:
        needed = "always sent" if sub.needed is None else f"needed: {sub.needed.source}"
        heading = f"subsection {sub.name} {_versions(sub.description)}, {needed}"
        rows.append(_Row(depth, heading, heading=True))
        _description(rows, sub.description, depth + 1)


def _hooks(hooks: Hooks) -> str:
    named = attrs.asdict(hooks)
    return ", ".join(f"{when}={name}" for when, name in named.items() if name is not None)


def _field(rows: list[_Row], field: Field, depth: int) -> None:
    notes = []
    if field.since:
        notes.append(f"since v{field.since}")
    if field.exists is not None:
        verb = "must hold" if isinstance(field.kind, Validate) else "exists"
        notes.append(f"{verb}: {field.exists.source}")
    _kind(rows, field.name, field.kind, depth, notes)


def _kind(rows: list[_Row], name: str, kind: Kind, depth: int, notes: list[str]) -> None:
    """The row of *kind* under *name*, then the rows nested in it."""
    notes = list(notes)
    if isinstance(kind, Array | VArray) and kind.nullable:
        notes.append("nullable (NULL is 1 byte)")
    if isinstance(kind, VArray) and kind.count_type != "uint32":
        notes.append(f"count_type {kind.count_type}")
    rows.append(_Row(depth, name, _kind_text(kind), _size_text(kind), ", ".join(notes)))
    match kind:
        case Struct():
            _description(rows, kind.description, depth + 1)
        case Array() | VArray() | QTailQ():
            _nested(rows, kind.element, depth + 1)
        case Seq():
            for i, element in enumerate(kind.elements):
                _kind(rows, f"[{i}]", element, depth + 1, [])


def _nested(rows: list[_Row], element: Kind, depth: int) -> None:
    """What an element holds: a struct's fields; plain elements are named in the size."""
    if isinstance(element, Struct):
        _description(rows, element.description, depth)
    elif not isinstance(element, Scalar | Buffer):
        _kind(rows, "[]", element, depth, [])


def _kind_text(kind: Kind) -> str:
    match kind:
        case Scalar():
            return kind.info
        case Buffer():
            return "buffer" if kind.info == "buffer" else f"buffer ({kind.info})"
        case VBuffer():
            return "vbuffer"
        case Bitmap():
            return f"bitmap of {kind.nbits} bits"
        case Unused():
            return "padding"
        case Validate():
            return "validate"
        case Struct():
            text = f"{kind.info} {kind.description.name} v{kind.description.version_id}"
            return text if kind.version is None else f"{text}, loaded at v{kind.version}"
        case Array():
            return f"array of {_element(kind.element)}"
        case VArray():
            return f"varray of {_element(kind.element)}"
        case QTailQ():
            return f"qtailq of {_element(kind.element)}"
        case Seq():
            return f"seq of {len(kind.elements)}"
    return kind.info


def _size_text(kind: Kind) -> str:
    match kind:
        case Array():
            each = _element(kind.element)
            total = kind.size
            return f"{kind.count} x {each}" + ("" if total is None else f" = {_bytes(total)}")
        case VArray():
            times = "" if kind.multiply == 1 else f" x {kind.multiply}"
            return f"{kind.count_field}{times} x {_element(kind.element)} <= {kind.max_count}"
        case VBuffer():
            return f"{kind.size_field} x {kind.multiply} <= {_bytes(kind.max_size)}"
        case QTailQ():
            return f"n x (1 + {_element(kind.element)}) + 1"
        case Struct() if kind.version is not None:
            size = attrs.evolve(kind.description, version_id=kind.version).fixed_size
            return "varies" if size is None else _bytes(size)
        case Seq():
            sizes = [el.size for el in kind.elements]
            text = " + ".join(_element(el) for el in kind.elements)
            return text if None in sizes else f"{text} = {_bytes(sum(s or 0 for s in sizes))}"
    return "varies" if kind.size is None else _bytes(kind.size)


def _element(kind: Kind) -> str:
    """An element as it is named inside another kind's size."""
    match kind:
        case Scalar():
            return kind.info
        case Struct():
            return kind.description.name
        case Buffer():
            return f"buffer[{kind.size}]"
    return f"({_kind_text(kind)}: {_size_text(kind)})"


def _bytes(n: int) -> str:
    return "1 byte" if n == 1 else f"{n} bytes"
