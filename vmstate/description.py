"""Descriptions: QEMU's ``VMStateDescription`` as an immutable value.

A :class:`Description` is a name, a version, a minimum version, an ordered
field list, subsections with ``needed`` conditions, and named hooks.  Its
``load`` checks the whole input before it returns anything and raises only
:class:`~vmstate.errors.VMStateError`; ``save`` is the inverse, byte for byte.
Both run the one interpreter (:mod:`vmstate.interpreter`).

State is plain data: a dict of field name to value, and each subsection that
was on the wire under its full name (``"e1000/full_mac_state"``).  A field's
name may contain ``/`` too (QEMU's virtio-gpu has ``virtio-gpu/blob``), but
never equals a subsection's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

import attrs

from vmstate.errors import DecodeError, DescriptionError, EncodeError, LimitError
from vmstate.fields import Field
from vmstate.hooks import Hooks, register_hook, registered_hooks
from vmstate.interpreter import engine
from vmstate.interpreter.context import DEFAULT_LIMITS, Ctx, Limits, Opaque
from vmstate.interpreter.spans import Span
from vmstate.predicates import Condition, as_condition

__all__ = [
    "Description",
    "Hooks",
    "Subsection",
    "register_hook",
    "registered_hooks",
]

State = dict[str, Any]


def _as_tuple(items: Iterable[Any]) -> tuple[Any, ...]:
    """``tuple`` as a converter: attrs reads a converter's signature when it builds the
    class, and ``inspect.signature(tuple)`` parses a text signature (5-15 ms at every
    start-up); a Python function's is read at once."""
    return tuple(items)


@attrs.frozen
class Subsection:
    """An optional part sent when ``needed`` holds (always, when it has none)."""

    description: Description
    needed: Condition | None = attrs.field(default=None, converter=as_condition)

    @property
    def name(self) -> str:
        return self.description.name


@attrs.frozen(cache_hash=True)
class Description:
    """QEMU's VMStateDescription as an immutable value."""

    #: a description's value is shown part by part, like a struct's
    container: ClassVar[bool] = True

    name: str
    version_id: int = 1
    minimum_version_id: int = 0
    fields: tuple[Field, ...] = attrs.field(default=(), converter=_as_tuple)
    subsections: tuple[Subsection, ...] = attrs.field(default=(), converter=_as_tuple)
    hooks: Hooks = attrs.field(factory=Hooks)
    #: compiled plans by (version, fast, checked): see vmstate.interpreter.plan
    plans: dict[tuple[int, bool, bool], Any] = attrs.field(
        init=False, factory=dict, eq=False, repr=False, hash=False
    )
    stored_names: frozenset[str] = attrs.field(init=False, eq=False, repr=False, hash=False)
    subsections_by_wire_name: dict[bytes, Subsection] = attrs.field(
        init=False, eq=False, repr=False, hash=False
    )
    #: (name, kind) of each stored field, then (name, description) of each subsection:
    #: the parts a state may hold, in wire order (see :meth:`parts`)
    part_kinds: tuple[tuple[str, Any], ...] = attrs.field(
        init=False, eq=False, repr=False, hash=False
    )

    def __attrs_post_init__(self) -> None:
        if not self.name or len(self.name.encode()) > 255:
            raise DescriptionError(f"description name {self.name!r} must be 1..255 bytes")
        seen: set[str] = set()
        for field in self.fields:
            if not field.stored:
                continue
            if field.name in seen:
                raise DescriptionError(f"field {field.name!r} appears twice", location=self.name)
            seen.add(field.name)
        by_wire: dict[bytes, Subsection] = {}
        for sub in self.subsections:
            wire = sub.name.encode()
            if len(wire) > 255:
                raise DescriptionError(f"subsection name {sub.name!r} too long", location=self.name)
            if wire in by_wire:
                raise DescriptionError("a subsection appears twice", location=self.name)
            if not (sub.name.startswith(self.name) and len(sub.name) > len(self.name)):
                raise DescriptionError(
                    f"subsection {sub.name!r} does not start with its parent's name: QEMU "
                    "would not look for it",
                    location=self.name,
                )
            if sub.name in seen:
                raise DescriptionError(
                    f"field {sub.name!r} has the name of a subsection: state keeps both under "
                    "their names",
                    location=self.name,
                )
            by_wire[wire] = sub
        object.__setattr__(self, "subsections_by_wire_name", by_wire)
        object.__setattr__(self, "stored_names", frozenset(seen) | frozenset(
            s.name for s in self.subsections))
        object.__setattr__(self, "part_kinds", (
            *((f.name, f.kind) for f in self.fields if f.stored),
            *((s.name, s.description) for s in self.subsections),
        ))

    # -- derived ----------------------------------------------------------

    @property
    def fixed_size(self) -> int | None:
        """Bytes written at the local version when that never varies, else None."""
        if self.subsections:
            return None
        total = 0
        for field in self.fields:
            if field.exists is not None:
                return None
            if field.since > self.version_id:
                continue
            size = field.kind.size
            if size is None:
                return None
            total += size
        return total

    def parts(self, state: Mapping[str, Any]) -> list[tuple[str | int, Any, Any]]:
        """(name, kind, value) of each stored field in *state*, then (name, description,
        value) of each subsection it holds, in wire order."""
        return [(name, part, state[name]) for name, part in self.part_kinds if name in state]

    # -- views of a state -------------------------------------------------

    def to_json(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON-ready copy of *state* (bytes as hex; see each kind's ``to_json``)."""
        return {name: part.to_json(value) for name, part, value in self.parts(state)}

    def from_json(self, data: Mapping[str, Any]) -> State:
        """The inverse of :meth:`to_json`; an EncodeError names the field that is off."""
        if not isinstance(data, Mapping):
            raise EncodeError(f"expected an object for {self.name}, got {type(data).__name__}")
        out: State = {}
        known = [(f.name, f.kind) for f in self.fields if f.stored] + [
            (s.name, s.description) for s in self.subsections]
        for name, part in known:
            if name in data:
                try:
                    out[name] = part.from_json(data[name])
                except EncodeError as e:
                    raise e.within(name) from None
        unknown = set(data) - set(out)
        if unknown:
            raise EncodeError(f"{self.name} has no fields {sorted(unknown)}")
        return out

    def qemu_value(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """*state* as QEMU's ``analyze-migration.py -d state`` prints it."""
        return {name: part.qemu_value(state[name]) for name, part in self.part_kinds if name in state}

    def vmdesc_entry(self, span: Span, version: int | None = None) -> dict[str, Any]:
        """What QEMU writes to vmdesc for this description, given the span of an
        instance (from :meth:`save_traced` or :meth:`trace`): field by field, with
        QEMU's ``[k]`` suffix on names that repeat, then each subsection sent."""
        if version is None:
            version = self.version_id if span.version is None else span.version
        counts: dict[str, int] = {}
        for field in self.fields:
            counts[field.name] = counts.get(field.name, 0) + 1
        parts = [p for p in span.children if p.kind is not None and not isinstance(p.kind, Description)]
        subsections = [p.kind.vmdesc_entry(p) for p in span.children
                       if isinstance(p.kind, Description)]
        seen: dict[str, int] = {}
        fields: list[dict[str, Any]] = []
        at = 0
        for field in self.fields:
            k = seen.get(field.name, 0)  # QEMU numbers a repeated name by its place in the list
            seen[field.name] = k + 1
            if field.exists is None and field.since > version:
                continue
            if at >= len(parts) or parts[at].name != field.name:
                continue  # its exists-test did not hold: not on the wire
            part = parts[at]
            at += 1
            if part.kind.validates:
                continue
            wire_name = field.name if counts[field.name] == 1 else f"{field.name}[{k}]"
            fields.extend(part.kind.vmdesc_entries(wire_name, part, field.exists is not None))
        out: dict[str, Any] = {"vmsd_name": self.name, "version": version, "fields": fields}
        if subsections:
            out["subsections"] = subsections
        return out

    def subsection(self, name: str) -> Subsection:
        for sub in self.subsections:
            if sub.name == name:
                return sub
        raise KeyError(name)

    def walk(self) -> Iterator[Description]:
        """This description, then every nested and subsection description, once each."""
        seen: set[int] = set()
        stack: list[Description] = [self]
        while stack:
            desc = stack.pop()
            if id(desc) in seen:
                continue
            seen.add(id(desc))
            yield desc
            stack.extend(sub.description for sub in reversed(desc.subsections))
            for field in reversed(desc.fields):
                stack.extend(reversed(list(field.kind.nested())))

    # -- load -------------------------------------------------------------

    def load(
        self,
        data: bytes | bytearray | memoryview,
        version_id: int | None = None,
        *,
        held: Mapping[str, Any] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        opaque: Opaque | None = None,
    ) -> State:
        """Decode *data*, which must hold exactly this description at *version_id*.

        *held* is the destination's current state: "equal" and "le" fields
        are checked against it and counts not on the wire are taken from it.
        """
        buf = bytes(data)
        state, end = self.load_from(buf, 0, version_id, held=held, limits=limits, opaque=opaque)
        if end != len(buf):
            err = DecodeError(
                "unexpected bytes after the end of the description",
                offset=end,
                expected="end of input",
                found=f"{len(buf) - end} more bytes",
                path=(self.name,),
            )
            raise err.with_excerpt(buf)
        return state

    def load_from(
        self,
        buf: Any,
        pos: int,
        version_id: int | None = None,
        *,
        held: Mapping[str, Any] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        opaque: Opaque | None = None,
        checks: bool = True,
    ) -> tuple[State, int]:
        """Decode one instance at *pos* in *buf*; return the state and the end offset.

        With *checks* False, "equal" and "le" fields are not compared with *held*."""
        ctx = Ctx(limits, opaque=opaque, checks=checks)
        version = self.version_id if version_id is None else version_id
        try:
            return engine.load(self, buf, pos, version, ctx, held)
        except DecodeError as e:
            raise e.within(self.name).with_excerpt(buf) from None
        except RecursionError:
            raise LimitError("description nests too deeply", offset=pos) from None

    def trace(
        self,
        buf: Any,
        pos: int = 0,
        version_id: int | None = None,
        *,
        held: Mapping[str, Any] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        opaque: Opaque | None = None,
    ) -> Span:
        """Decode one instance at *pos* like :meth:`load_from`, recording where every
        field, element and subsection lies: the span of the whole, with its parts."""
        ctx = Ctx(limits, opaque=opaque, checks=False, trace=True)
        version = self.version_id if version_id is None else version_id
        parts: list[Span] = []
        try:
            state, end = engine.load(self, buf, pos, version, ctx, held, spans=parts)
        except DecodeError as e:
            raise e.within(self.name).with_excerpt(buf) from None
        except RecursionError:
            raise LimitError("description nests too deeply", offset=pos) from None
        return Span(self.name, self, state, pos, end, parts, version=version)

    # -- save -------------------------------------------------------------

    def save(
        self,
        state: Mapping[str, Any],
        version_id: int | None = None,
        *,
        held: Mapping[str, Any] | None = None,
    ) -> bytes:
        """Encode *state*; raise :class:`EncodeError` naming the field that does not fit.

        *held* gives values that are not on the wire but size it (QEMU's MSI-X
        table is sized by the device's own vector count)."""
        out = bytearray()
        version = self.version_id if version_id is None else version_id
        try:
            engine.save(self, out, state, version, Ctx(), held=held)
        except EncodeError as e:
            raise e.within(self.name) from None
        except RecursionError:
            raise EncodeError("state nests too deeply", path=(self.name,)) from None
        return bytes(out)

    def save_traced(
        self,
        state: Mapping[str, Any],
        version_id: int | None = None,
        *,
        held: Mapping[str, Any] | None = None,
    ) -> tuple[bytes, Span]:
        """:meth:`save`, and the span of every value in the bytes it wrote."""
        out = bytearray()
        version = self.version_id if version_id is None else version_id
        parts: list[Span] = []
        try:
            engine.save(self, out, state, version, Ctx(trace=True), held=held, spans=parts)
        except EncodeError as e:
            raise e.within(self.name) from None
        except RecursionError:
            raise EncodeError("state nests too deeply", path=(self.name,)) from None
        return bytes(out), Span(self.name, self, dict(state), 0, len(out), parts,
                                version=version)
