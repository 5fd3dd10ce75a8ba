"""Where each value lies: the spans a traced load or save records.

A traced run (``Ctx(trace=True)``) gives every field, element and subsection a
:class:`Span` with its absolute offsets, so rendering, diffs, vmdesc export and
error reports read sizes and positions instead of encoding values again.
Bytes that frame values (a subsection's header, a list's markers, a NULL
pointer) get spans of their own with a ``note`` and no kind.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class Span:
    """One value (or framing bytes) at ``start``..``end`` of the input or output."""

    __slots__ = ("children", "end", "kind", "name", "note", "start", "value", "version")

    def __init__(
        self,
        name: str | int,
        kind: Any,
        value: Any,
        start: int,
        end: int,
        children: list[Span] | None = None,
        note: str = "",
        version: int | None = None,
    ) -> None:
        #: field name, element index, or subsection name
        self.name = name
        #: the value's kind (a Description for a subsection), None for framing bytes
        self.kind = kind
        self.value = value
        self.start = start
        self.end = end
        self.children = children or []
        #: what framing bytes are ("-- subsection v1", "NULL", ...)
        self.note = note
        #: for a description's span (a whole section, a subsection): its version on the wire
        self.version = version

    @property
    def size(self) -> int:
        return self.end - self.start

    def walk(self, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Span]]:
        """Every span below this one with its path, depth first, in wire order."""
        for child in self.children:
            here = (*path, child.name)
            yield here, child
            yield from child.walk(here)

    def __repr__(self) -> str:
        what = self.note or type(self.kind).__name__
        return f"Span({self.name!r}, {what}, {self.start:#x}..{self.end:#x})"
