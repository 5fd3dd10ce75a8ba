"""What one load or save carries: explicit limits, the run's budget, the current frame.

Every kind reads input through :func:`need` and charges elements to the same
budget, so every bound on untrusted input is checked in one place.
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

#: decides a QEMU exists-test or ``needed`` that was not exported: (path, values) -> present?
Opaque = Callable[[str, Mapping[str, Any]], bool]


class Ctx:
    """State of one top-level load or save (a plain slotted class: it is made per call)."""

    __slots__ = ("budget", "checks", "depth", "limits", "opaque", "trace")

    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        *,
        opaque: Opaque | None = None,
        checks: bool = True,
        trace: bool = False,
    ) -> None:
        self.limits = limits
        self.budget = limits.max_elements
        self.depth = 0
        self.opaque = opaque
        #: compare "equal"/"le" fields with the destination's held state
        self.checks = checks
        #: record a Span for every value (render, diff, vmdesc export)
        self.trace = trace

    def spend(self, n: int, offset: int) -> None:
        """Charge *n* elements to the run's budget."""
        if n > self.budget:
            raise LimitError(
                "too many array elements",
                offset=offset,
                expected=f"at most {self.limits.max_elements} elements in one load",
                found=f"{n} more",
            )
        self.budget -= n


class Frame:
    """One struct being loaded or saved: what its conditions and counts can see."""

    __slots__ = ("ctx", "held", "outer", "spans", "values", "version_id")

    def __init__(
        self,
        values: dict[str, Any],
        version_id: int,
        held: Mapping[str, Any] | None,
        ctx: Ctx,
        outer: Mapping[str, Any] | None = None,
    ) -> None:
        self.values = values
        self.version_id = version_id
        #: the destination's own state: "equal" checks and sizes that are not on the wire
        self.held = held
        self.ctx = ctx
        #: the enclosing description's values, for a subsection's conditions
        self.outer = outer
        #: child spans in wire order, when the run traces
        self.spans: list[Any] | None = [] if ctx.trace else None

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

    def held_of(self, name: str) -> Any:
        """What the destination holds for field *name*, if anything."""
        return self.held.get(name) if self.held is not None else None


def need(buf: Any, pos: int, n: int, what: str) -> None:
    """Raise unless *n* more bytes exist at *pos*."""
    if pos + n > len(buf):
        raise TruncatedError(
            "input ends early",
            offset=pos,
            expected=f"{n} bytes of {what}",
            found=f"{len(buf) - pos} bytes",
        )
