"""Walking two field lists side by side, for :mod:`vmstate.compat`: a cursor that
can step into a substruct and back out, and QEMU's ``unused`` padding standing for
fields of the same total size (what ``vmstate-static-checker.py`` calls absorbing)."""

from __future__ import annotations

from vmstate.fields import Field, Kind
from vmstate.kinds.base import DescriptionLike


class Cursor:
    """A position in a field list that can step into a substruct and back out."""

    def __init__(self, fields: tuple[Field, ...]) -> None:
        self.stack: list[tuple[tuple[Field, ...], int]] = [(fields, 0)]

    def peek(self) -> Field | None:
        while self.stack:
            fields, i = self.stack[-1]
            if i < len(fields):
                return fields[i]
            self.stack.pop()
            if self.stack:
                outer, j = self.stack[-1]
                self.stack[-1] = (outer, j + 1)
        return None

    def advance(self) -> None:
        fields, i = self.stack[-1]
        self.stack[-1] = (fields, i + 1)

    def descend(self) -> None:
        fields, i = self.stack[-1]
        nested = struct_of(fields[i].kind)
        assert nested is not None
        self.stack.append((nested.fields, 0))

    def clone(self) -> Cursor:
        copy = Cursor(())
        copy.stack = list(self.stack)
        return copy

    def rest(self) -> list[Field]:
        out = []
        while (f := self.peek()) is not None:
            out.append(f)
            self.advance()
        return out


def absorb(src: Cursor, dst: Cursor, counts_known: bool) -> str | None:
    """``unused`` padding on one side standing for fields of the same total size on the other.

    Of the runs of fields whose sizes add up to the padding's, the one after
    which both sides go on with the same field name wins.  Without array
    lengths (a dump before QEMU 10.0) a field stands for any whole number of its
    elements.  Returns the name of the field where the sizes stop adding up, or None."""
    pad_side, other = (dst, src) if is_padding(peeked(dst)) else (src, dst)
    pad = peeked(pad_side)
    pad_side.advance()
    total = total_size(pad.kind) or 0
    trial = other.clone()
    sizes: list[int] = []
    chosen: Cursor | None = None
    while (f := trial.peek()) is not None:
        sizes.append(total_size(f.kind) or 0)
        trial.advance()
        if sum(sizes) > total:
            break
        if fits(sizes, total, counts_known):
            chosen = chosen or trial.clone()
            if next_name(pad_side) == next_name(trial):
                chosen = trial.clone()
                break
    if chosen is None:
        return f.name if f is not None else "<end>"
    other.stack = chosen.stack
    return None


def fits(sizes: list[int], total: int, counts_known: bool) -> bool:
    """Whether fields of *sizes* bytes fill *total* bytes, each taken once, or (lengths
    unknown) each any positive number of times."""
    rest = total - sum(sizes)
    if counts_known or rest == 0:
        return rest == 0
    reachable = [True] + [False] * rest  # rest <= a padding's size: small
    for amount in range(1, rest + 1):
        reachable[amount] = any(0 < s <= amount and reachable[amount - s] for s in sizes)
    return reachable[rest]


def peeked(cursor: Cursor) -> Field:
    field = cursor.peek()
    assert field is not None
    return field


def next_name(cursor: Cursor) -> str | None:
    field = cursor.peek()
    return field.name if field is not None else None


def struct_of(kind: Kind) -> DescriptionLike | None:
    return kind.element_description()


def is_padding(field: Field) -> bool:
    """QEMU's VMSTATE_UNUSED, as described or as a vmdesc records it."""
    return field.kind.padding


def struct_name(field: Field) -> str:
    nested = struct_of(field.kind)
    return nested.name if nested is not None else ""


def first_name(field: Field) -> str | None:
    nested = struct_of(field.kind)
    return nested.fields[0].name if nested is not None and nested.fields else None


def element_size(kind: Kind) -> int | None:
    element = kind.one_element()
    return element.size if element is not None else 0


def total_size(kind: Kind) -> int | None:
    """Bytes of a field: an array's elements together, where its length is known."""
    return kind.total_size()


def info_of(kind: Kind) -> str:
    element = kind.one_element()
    return element.info if element is not None else ""
