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
from vmstate.fields import Field, Kind
from vmstate.vmdesc import ANY_VERSION

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
    if (desc.minimum_version_id, desc.version_id) == (0, ANY_VERSION):
        return "any version (old-style: its vmdesc entry records none)"
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
        verb = "must hold" if field.kind.validates else "exists"
        notes.append(f"{verb}: {field.exists.source}")
    _kind(rows, field.name, field.kind, depth, notes)


def _kind(rows: list[_Row], name: str, kind: Kind, depth: int, notes: list[str]) -> None:
    """The row of *kind* under *name*, then the rows nested in it."""
    text, size = kind.describe()
    rows.append(_Row(depth, name, text, size, ", ".join([*notes, *kind.describe_notes()])))
    for part in kind.described_parts():
        if isinstance(part, Description):
            _description(rows, part, depth + 1)
        else:
            _kind(rows, part[0], part[1], depth + 1, [])
