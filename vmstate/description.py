"""Descriptions and the interpreter that loads and saves them with QEMU's semantics.

A :class:`Description` is QEMU's ``VMStateDescription`` as a value: name,
version, minimum version, an ordered field list, subsections with ``needed``
conditions, and named hooks.  ``load`` checks the whole input before it
returns anything and raises only :class:`~vmstate.errors.VMStateError`.

State is plain data: a dict of field name to value, and each subsection that
was on the wire under its full name (``"e1000/full_mac_state"``; field names
never contain ``/``).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from vmstate._wire import DEFAULT_LIMITS, Ctx, Frame, Limits, need
from vmstate.errors import (
    DecodeError,
    DescriptionError,
    EncodeError,
    IncompatibleError,
    LimitError,
    TruncatedError,
    VMStateError,
)
from vmstate.fields import Field, Kind, Validate
from vmstate.predicates import Condition, as_condition, is_opaque

SUBSECTION = 0x05
_BE32 = struct.Struct(">I")

State = dict[str, Any]
PreSave = Callable[[State], State]
PostSave = Callable[[State], None]
PreLoad = Callable[[Mapping[str, Any] | None], None]
PostLoad = Callable[[State, int], State]
_HOOKS: dict[str, Callable[..., Any]] = {}


def register_hook(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make a Python function usable as a named hook in descriptions.

    Signatures: ``pre_save(state) -> state``, ``post_save(state)``,
    ``pre_load(held)``, ``post_load(state, version_id) -> state``.
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _HOOKS and _HOOKS[name] is not fn:
            raise DescriptionError(f"hook {name!r} is already registered")
        _HOOKS[name] = fn
        return fn

    return deco


def registered_hooks() -> frozenset[str]:
    """Names usable as hooks now (description files are checked against them)."""
    return frozenset(_HOOKS)


def _hook(name: str) -> Callable[..., Any]:
    try:
        return _HOOKS[name]
    except KeyError:
        raise DescriptionError(f"no hook named {name!r} is registered") from None


@attrs.frozen
class Hooks:
    """Names of registered hook functions (QEMU's pre/post save/load callbacks)."""

    pre_save: str | None = None
    post_save: str | None = None
    pre_load: str | None = None
    post_load: str | None = None

    def __bool__(self) -> bool:
        return any((self.pre_save, self.post_save, self.pre_load, self.post_load))


@attrs.frozen
class Subsection:
    """An optional part sent when ``needed`` holds (always, when it has none)."""

    description: Description
    needed: Condition | None = attrs.field(default=None, converter=as_condition)

    @property
    def name(self) -> str:
        return self.description.name


# A step of a load/save plan: a run of plain fields read with one struct call,
# or one field handled by its kind.
@attrs.frozen
class _Run:
    fields: tuple[Field, ...]
    names: tuple[str, ...]
    codec: struct.Struct

    def truncated(self, buf: bytes, pos: int) -> DecodeError:
        """The error for the first field of the run that the input cuts short."""
        for field in self.fields:
            size = field.kind.size or 0
            if pos + size > len(buf):
                err = TruncatedError(
                    "input ends early",
                    offset=pos,
                    expected=f"{size} bytes of {field.kind.info}",
                    found=f"{len(buf) - pos} bytes",
                )
                return err.within(field.name)
            pos += size
        raise AssertionError("the run fits the input")


_Step = _Run | Field


@functools.lru_cache(maxsize=4096)
def _run_codec(fmt: str) -> struct.Struct:
    """Runs of the same layout recur across descriptions: compile each once."""
    return struct.Struct(fmt)


@attrs.frozen(cache_hash=True)
class Description:
    """QEMU's VMStateDescription as an immutable value."""

    name: str
    version_id: int = 1
    minimum_version_id: int = 0
    fields: tuple[Field, ...] = attrs.field(default=(), converter=tuple)
    subsections: tuple[Subsection, ...] = attrs.field(default=(), converter=tuple)
    hooks: Hooks = Hooks()

    def __attrs_post_init__(self) -> None:
        if not self.name or len(self.name.encode()) > 255:
            raise DescriptionError(f"description name {self.name!r} must be 1..255 bytes")
        seen: set[str] = set()
        for field in self.fields:
            if not field.stored:
                continue
            if field.name in seen:
                raise DescriptionError(f"field {field.name!r} appears twice", location=self.name)
            if "/" in field.name:
                raise DescriptionError(
                    f"field name {field.name!r} contains '/'", location=self.name
                )
            seen.add(field.name)
        for sub in self.subsections:
            if len(sub.name.encode()) > 255:
                raise DescriptionError(f"subsection name {sub.name!r} too long", location=self.name)
        names = [sub.name for sub in self.subsections]
        if len(set(names)) != len(names):
            raise DescriptionError("a subsection appears twice", location=self.name)

    # -- derived, cached --------------------------------------------------

    @functools.cached_property
    def _subsections_by_wire_name(self) -> dict[bytes, Subsection]:
        return {sub.name.encode(): sub for sub in self.subsections}

    @functools.cached_property
    def _stored_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields if f.stored) | frozenset(
            s.name for s in self.subsections
        )

    @functools.cached_property
    def _plans(self) -> dict[int, tuple[_Step, ...]]:
        return {}

    def _plan(self, version_id: int) -> tuple[_Step, ...]:
        """Fields present at *version_id*, consecutive plain ones merged into runs."""
        plan = self._plans.get(version_id)
        if plan is not None:
            return plan
        steps: list[_Step] = []
        run: list[Field] = []

        def flush() -> None:
            if len(run) == 1:
                steps.append(run[0])
            elif run:
                fmt = ">" + "".join(f.kind.fmt or "" for f in run)
                steps.append(_Run(tuple(run), tuple(f.name for f in run), _run_codec(fmt)))
            run.clear()

        for field in self.fields:
            if field.exists is None and field.since > version_id:
                continue
            if field.exists is None and field.kind.fmt is not None:
                run.append(field)
            else:
                flush()
                steps.append(field)
        flush()
        plan = tuple(steps)
        self._plans[version_id] = plan
        return plan

    @functools.cached_property
    def flat_layout(self) -> tuple[tuple[str, ...], struct.Struct] | None:
        """Names and codec when every field is plain and always present (fast arrays)."""
        if self.subsections or self.hooks or not self.fields:
            return None
        plan = self._plan(self.version_id)
        if len(plan) != 1 or len(self.fields) != len(getattr(plan[0], "names", ())):
            if len(plan) == 1 and isinstance(plan[0], Field) and plan[0].kind.fmt is not None:
                field = plan[0]
                return (field.name,), struct.Struct(">" + (field.kind.fmt or ""))
            return None
        step = plan[0]
        assert isinstance(step, _Run)
        return step.names, step.codec

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

    def subsection(self, name: str) -> Subsection:
        for sub in self.subsections:
            if sub.name == name:
                return sub
        raise KeyError(name)

    def walk(self) -> Iterable[Description]:
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
                stack.extend(_nested(field.kind))

    # -- load -------------------------------------------------------------

    def load(
        self,
        data: bytes | bytearray | memoryview,
        version_id: int | None = None,
        *,
        held: Mapping[str, Any] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        opaque: Callable[[str, Mapping[str, Any]], bool] | None = None,
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
        buf: bytes,
        pos: int,
        version_id: int | None = None,
        *,
        held: Mapping[str, Any] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        opaque: Callable[[str, Mapping[str, Any]], bool] | None = None,
        checks: bool = True,
    ) -> tuple[State, int]:
        """Decode one instance at *pos* in *buf*; return the state and the end offset.

        With *checks* False, "equal" and "le" fields are not compared with *held*."""
        ctx = Ctx(limits=limits, budget=limits.max_elements, opaque=opaque, checks=checks)
        version = self.version_id if version_id is None else version_id
        try:
            return self.load_at(buf, pos, version, ctx, held)
        except DecodeError as e:
            raise e.within(self.name).with_excerpt(buf) from None
        except RecursionError:
            raise LimitError("description nests too deeply", offset=pos) from None

    def load_at(
        self,
        buf: bytes,
        pos: int,
        version_id: int,
        ctx: Ctx,
        held: Mapping[str, Any] | None,
        outer: Mapping[str, Any] | None = None,
    ) -> tuple[State, int]:
        """The interpreter: QEMU's vmstate_load_state over *buf* from *pos*."""
        if version_id > self.version_id:
            raise IncompatibleError(
                f"{self.name}: incoming version_id {version_id} is too new "
                f"for local version_id {self.version_id}",
                offset=pos,
                expected=f"version <= {self.version_id}",
                found=str(version_id),
            )
        if version_id < self.minimum_version_id:
            raise IncompatibleError(
                f"{self.name}: incoming version_id {version_id} is too old "
                f"for local minimum version_id {self.minimum_version_id}",
                offset=pos,
                expected=f"version >= {self.minimum_version_id}",
                found=str(version_id),
            )
        ctx.depth += 1
        if ctx.depth > ctx.limits.max_depth:
            raise LimitError(
                "structs nest too deeply", offset=pos, expected=f"depth <= {ctx.limits.max_depth}"
            )
        if self.hooks.pre_load:
            self._run_hook(self.hooks.pre_load, pos, held)
        values: State = {}
        frame = Frame(values, version_id, held, ctx, outer)
        for step in self._plan(version_id):
            if type(step) is _Run:
                codec = step.codec
                if pos + codec.size > len(buf):
                    raise step.truncated(buf, pos)
                values.update(zip(step.names, codec.unpack_from(buf, pos), strict=True))
                pos += codec.size
                continue
            assert isinstance(step, Field)
            field = step
            try:
                if field.exists is not None and not self._exists_on_load(field, frame, pos):
                    if isinstance(field.kind, Validate):
                        raise IncompatibleError(
                            f"Input validation failed: {self.name}/{field.name}",
                            offset=pos,
                            expected=f"{field.exists.source} to hold",
                            found="false",
                        )
                    continue
                value, pos = field.kind.load(buf, pos, frame, field.name)
            except DecodeError as e:
                raise e.within(field.name) from None
            if field.kind.stored:
                values[field.name] = value
        pos = self._load_subsections(buf, pos, frame)
        if self.hooks.post_load:
            values = self._run_hook(self.hooks.post_load, pos, values, version_id)
        ctx.depth -= 1
        return values, pos

    def _exists_on_load(self, field: Field, frame: Frame, pos: int) -> bool:
        cond = field.exists
        assert cond is not None
        if is_opaque(cond):
            if frame.ctx.opaque is None:
                raise DecodeError(
                    f"exists-test of {self.name}/{field.name} is not known",
                    offset=pos,
                    expected="a description with the test, or a stream's vmdesc",
                    found=cond.source,
                )
            return frame.ctx.opaque(f"{self.name}/{field.name}", frame.values)
        try:
            return cond(frame)
        except DescriptionError as e:
            raise DecodeError(
                f"exists-test failed: {e.message}", offset=pos, expected=cond.source, found="error"
            ) from None

    def _load_subsections(self, buf: bytes, pos: int, frame: Frame) -> int:
        prefix = self.name.encode()
        seen: set[bytes] = set()
        while pos + 1 < len(buf) and buf[pos] == SUBSECTION:
            length = buf[pos + 1]
            if length < len(prefix) + 1 or pos + 2 + length > len(buf):
                break
            wire_name = buf[pos + 2 : pos + 2 + length]
            if not wire_name.startswith(prefix):
                break
            shown = wire_name.decode("utf-8", "replace")
            sub = self._subsections_by_wire_name.get(wire_name)
            if sub is None:
                known = ", ".join(s.name for s in self.subsections) or "none"
                raise IncompatibleError(
                    f"unknown subsection {shown!r}",
                    offset=pos,
                    expected=f"one of: {known}",
                    found=shown,
                )
            if wire_name in seen:
                raise DecodeError(
                    f"subsection {shown!r} sent twice", offset=pos, expected="once", found="again"
                )
            seen.add(wire_name)
            pos += 2 + length
            need(buf, pos, 4, "subsection version")
            (version,) = _BE32.unpack_from(buf, pos)
            pos += 4
            held = frame.held.get(sub.name) if frame.held is not None else None
            try:
                value, pos = sub.description.load_at(
                    buf, pos, version, frame.ctx, held, frame.values
                )
            except DecodeError as e:
                raise e.within(sub.name) from None
            frame.values[sub.name] = value
        return pos

    def _run_hook(self, name: str, pos: int, *args: Any) -> Any:
        try:
            return _hook(name)(*args)
        except DecodeError:
            raise
        except Exception as exc:  # hooks are user code; report them as load errors
            raise DecodeError(f"hook {name} failed: {exc}", offset=pos) from exc

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
        ctx = Ctx()
        version = self.version_id if version_id is None else version_id
        try:
            self.save_into(out, state, version, ctx, held=held)
        except EncodeError as e:
            raise e.within(self.name) from None
        return bytes(out)

    def save_into(
        self,
        out: bytearray,
        state: Mapping[str, Any],
        version_id: int,
        ctx: Ctx,
        outer: Mapping[str, Any] | None = None,
        held: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(state, Mapping):
            raise EncodeError(f"expected a mapping for {self.name}, got {type(state).__name__}")
        if self.hooks.pre_save:
            state = self._run_save_hook(self.hooks.pre_save, state)
        unknown = set(state) - self._stored_names
        if unknown:
            raise EncodeError(f"state has fields {sorted(unknown)} that {self.name} does not know")
        frame = Frame(dict(state), version_id, held, ctx, outer)
        for step in self._plan(version_id):
            if type(step) is _Run:
                try:
                    out += step.codec.pack(*[state[n] for n in step.names])
                except (KeyError, struct.error, TypeError, OverflowError):
                    # field by field, so the error names the one that does not fit
                    for field in self.fields:
                        if field.name in step.names:
                            self._save_field(out, field, state, frame)
                continue
            assert isinstance(step, Field)
            field = step
            if field.exists is not None and not self._exists_on_save(field, state, frame):
                continue
            self._save_field(out, field, state, frame)
        for sub in self.subsections:
            if not self._needed(sub, state, frame):
                continue
            if sub.name not in state:
                raise EncodeError(f"subsection {sub.name} is needed but the state has none")
            wire_name = sub.name.encode()
            out.append(SUBSECTION)
            out.append(len(wire_name))
            out += wire_name
            out += _BE32.pack(sub.description.version_id)
            try:
                sub_held = held.get(sub.name) if held is not None else None
                sub.description.save_into(
                    out, state[sub.name], sub.description.version_id, ctx, state, sub_held
                )
            except EncodeError as e:
                raise e.within(sub.name) from None
        if self.hooks.post_save:
            self._run_save_hook(self.hooks.post_save, state)

    def _save_field(
        self, out: bytearray, field: Field, state: Mapping[str, Any], frame: Frame
    ) -> None:
        kind: Kind = field.kind
        if isinstance(kind, Validate):
            return
        try:
            if not kind.stored:
                kind.save(out, None, frame, field.name)
                return
            if field.name not in state:
                raise EncodeError("missing from the state")
            kind.save(out, state[field.name], frame, field.name)
        except EncodeError as e:
            raise e.within(field.name) from None

    def _exists_on_save(self, field: Field, state: Mapping[str, Any], frame: Frame) -> bool:
        cond = field.exists
        assert cond is not None
        if is_opaque(cond):
            return field.name in state or not field.kind.stored
        try:
            present = cond(frame)
        except DescriptionError as e:
            raise EncodeError(f"exists-test failed: {e.message}", path=(field.name,)) from None
        if not present and isinstance(field.kind, Validate):
            raise EncodeError(f"Output state validation failed: {self.name}/{field.name}")
        return present

    def _needed(self, sub: Subsection, state: Mapping[str, Any], frame: Frame) -> bool:
        if sub.needed is None:
            return True
        if is_opaque(sub.needed):
            return sub.name in state
        try:
            return sub.needed(frame)
        except DescriptionError as e:
            raise EncodeError(f"needed test of {sub.name} failed: {e.message}") from None

    def _run_save_hook(self, name: str, state: Mapping[str, Any]) -> Any:
        try:
            result = _hook(name)(state)
        except EncodeError:
            raise
        except VMStateError as exc:
            raise EncodeError(f"hook {name} failed: {exc}") from exc
        except Exception as exc:
            raise EncodeError(f"hook {name} failed: {exc}") from exc
        return state if result is None else result


def _nested(kind: Kind) -> list[Description]:
    from vmstate.fields import Array, QTailQ, Seq, Struct, VArray

    if isinstance(kind, Struct):
        return [kind.description]
    if isinstance(kind, Array | VArray | QTailQ):
        return _nested(kind.element)
    if isinstance(kind, Seq):
        return [d for el in kind.elements for d in _nested(el)]
    return []
