"""What one load or save carries around: input bounds, limits and the current frame.

Kept apart from the field kinds so that every kind reads input the same way
and every bound is checked in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from vmstate.errors import LimitError, TruncatedError


@attrs.frozen
class Limits:
    """Explicit upper bounds for anything sized by untrusted input."""

    max_elements: int = 1 << 22  # array/list elements in one load, all fields together
    max_buffer: int = 1 << 30  # bytes of one variable buffer
    max_depth: int = 64  # struct nesting


DEFAULT_LIMITS = Limits()


@attrs.define(slots=True)
class Ctx:
    """State of one top-level load or save."""

    limits: Limits = DEFAULT_LIMITS
    budget: int = DEFAULT_LIMITS.max_elements
    depth: int = 0
    #: decides QEMU exists-tests/needed that were not exported (name -> present?)
    opaque: Callable[[str, Mapping[str, Any]], bool] | None = None
    #: check "equal"/"le" fields against held state
    checks: bool = True

    def spend(self, n: int, offset: int) -> None:
        """Charge *n* elements to the load's budget."""
        if n > self.budget:
            raise LimitError(
                "too many array elements",
                offset=offset,
                expected=f"at most {self.limits.max_elements} elements in one load",
                found=f"{n} more",
            )
        self.budget -= n


@attrs.define(slots=True)
class Frame:
    """One struct being loaded or saved."""

    values: dict[str, Any]
    version_id: int
    held: Mapping[str, Any] | None
    ctx: Ctx
    #: names visible to conditions and counts (values, then an enclosing subsection's parent)
    outer: Mapping[str, Any] | None = None

    def has(self, name: str) -> bool:
        try:
            self.lookup(name)
        except KeyError:
            return False
        return True

    def lookup(self, name: str) -> Any:
        if name == "version_id":
            return self.version_id
        if name in self.values:
            return self.values[name]
        if self.outer is not None and name in self.outer:
            return self.outer[name]
        if self.held is not None and name in self.held:
            return self.held[name]
        raise KeyError(name)


def need(buf: bytes, pos: int, n: int, what: str) -> None:
    """Raise unless *n* more bytes exist at *pos*."""
    if pos + n > len(buf):
        raise TruncatedError(
            "input ends early",
            offset=pos,
            expected=f"{n} bytes of {what}",
            found=f"{len(buf) - pos} bytes",
        )
