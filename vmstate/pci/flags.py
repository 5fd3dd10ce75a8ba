"""One-bit register fields by the names lspci gives them.

A register with a dozen single-bit fields is a :class:`Flags` value: each field's
name (lspci's abbreviation, which is the spec's) with its state, in the order lspci
prints them.  Multi-bit fields stay typed attributes of the capability body; only
the bits go here, so one table per register both decodes and names them.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

#: a register's one-bit fields: (name, mask) in print order
BitTable = Sequence[tuple[str, int]]


@attrs.frozen
class Flags:
    """Named one-bit fields of one register; JSON shows them as ``{name: bool}``."""

    bits: tuple[tuple[str, bool], ...]

    def __getitem__(self, name: str) -> bool:
        for key, value in self.bits:
            if key == name:
                return value
        raise KeyError(name)

    def text(self, *names: str) -> str:
        """``Name+`` or ``Name-`` for each of *names* (all, if none given), space-separated."""
        return " ".join(f"{n}{sign(self[n])}" for n in names or [k for k, _ in self.bits])


def flags(value: int, table: BitTable) -> Flags:
    """The bits of *value* that *table* names."""
    return Flags(tuple((name, bool(value & mask)) for name, mask in table))


def sign(value: bool | int) -> str:
    """lspci's ``+``/``-`` for a bit that is set or clear."""
    return "+" if value else "-"
