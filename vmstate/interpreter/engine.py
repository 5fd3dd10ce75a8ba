"""The interpreter: QEMU's ``vmstate_load_state`` and ``vmstate_save_state`` over a plan.

Both directions follow QEMU's rules from the same compiled :mod:`plan`: the
version window, exists-tests, VMSTATE_VALIDATE, subsections (sent when
``needed``; on load taken while the next bytes name one of this description's,
in any order, each at most once, an unknown one rejected) and the hooks.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vmstate.errors import (
    DecodeError,
    DescriptionError,
    EncodeError,
    IncompatibleError,
    LimitError,
    VMStateError,
)
from vmstate.hooks import hook
from vmstate.interpreter.context import Ctx, Frame, need
from vmstate.interpreter.plan import Run, plan
from vmstate.interpreter.spans import Span
from vmstate.predicates import is_opaque

if TYPE_CHECKING:
    from vmstate.kinds.base import DescriptionLike
    from vmstate.kinds.base import FieldLike as Field
    from vmstate.kinds.base import SubsectionLike as Subsection

SUBSECTION = 0x05
_BE32 = struct.Struct(">I")

State = dict[str, Any]


# -- load ---------------------------------------------------------------------


def load(
    desc: DescriptionLike,
    buf: Any,
    pos: int,
    version_id: int,
    ctx: Ctx,
    held: Mapping[str, Any] | None,
    outer: Mapping[str, Any] | None = None,
    spans: list[Span] | None = None,
) -> tuple[State, int]:
    """One instance of *desc* at *pos*; the state and the position after it.

    With *spans* (a traced run), the spans of its fields and subsections are
    appended to it."""
    if version_id > desc.version_id:
        raise IncompatibleError(
            f"incoming version_id {version_id} is too new for local version_id {desc.version_id}",
            offset=pos,
            expected=f"version <= {desc.version_id}",
            found=str(version_id),
        )
    if version_id < desc.minimum_version_id:
        raise IncompatibleError(
            f"incoming version_id {version_id} is too old "
            f"for local minimum version_id {desc.minimum_version_id}",
            offset=pos,
            expected=f"version >= {desc.minimum_version_id}",
            found=str(version_id),
        )
    ctx.depth += 1
    if ctx.depth > ctx.limits.max_depth:
        raise LimitError(
            "structs nest too deeply", offset=pos, expected=f"depth <= {ctx.limits.max_depth}"
        )
    if desc.hooks.pre_load:
        _run_load_hook(desc.hooks.pre_load, pos, held)
    values: State = {}
    frame = Frame(values, version_id, held, ctx, outer)
    checked = ctx.checks and held is not None
    for step in plan(desc, version_id, fast=spans is None, checked=checked).steps:
        if step.__class__ is Run:
            codec = step.codec
            end = pos + codec.size
            if end > len(buf):
                _explain_short_run(step, buf, pos, frame)
            raw = codec.unpack_from(buf, pos)
            if step.plain:
                values.update(zip(step.names, raw, strict=True))
            else:
                step.assign(values, raw)
            pos = end
            continue
        field: Field = step
        kind = field.kind
        try:
            if field.exists is not None and not _exists_on_load(desc, field, frame, pos):
                if kind.validates:
                    raise IncompatibleError(
                        f"Input validation failed: {desc.name}/{field.name}",
                        offset=pos,
                        expected=f"{field.exists.source} to hold",
                        found="false",
                    )
                continue
            start = pos
            parts: list[Span] | None = [] if spans is not None else None
            value, pos = kind.load(buf, pos, frame, field.name, parts)
        except DecodeError as e:
            raise e.within(field.name) from None
        if kind.stored:
            values[field.name] = value
        if spans is not None:
            spans.append(Span(field.name, kind, value, start, pos, parts))
    pos = _load_subsections(desc, buf, pos, frame, spans)
    if desc.hooks.post_load:
        values = _run_load_hook(desc.hooks.post_load, pos, values, version_id)
    ctx.depth -= 1
    return values, pos


def _explain_short_run(run: Run, buf: Any, pos: int, frame: Frame) -> None:
    """A run the input cuts short: its fields one by one through their kinds, so
    the error names the exact field, element and offset the general path would."""
    for field in run.fields:
        try:
            _, pos = field.kind.load(buf, pos, frame, field.name, None)
        except DecodeError as e:
            raise e.within(field.name) from None
    raise AssertionError("a run that does not fit fails in one of its fields")


def _exists_on_load(desc: DescriptionLike, field: Field, frame: Frame, pos: int) -> bool:
    cond = field.exists
    assert cond is not None
    if is_opaque(cond):
        if frame.ctx.opaque is None:
            raise DecodeError(
                f"exists-test of {desc.name}/{field.name} is not known",
                offset=pos,
                expected="a description with the test, or a stream's vmdesc",
                found=cond.source,
            )
        return frame.ctx.opaque(f"{desc.name}/{field.name}", frame.values)
    try:
        return cond(frame)
    except DescriptionError as e:
        raise DecodeError(
            f"exists-test failed: {e.message}", offset=pos, expected=cond.source, found="error"
        ) from None


def _load_subsections(
    desc: DescriptionLike, buf: Any, pos: int, frame: Frame, spans: list[Span] | None
) -> int:
    if not desc.subsections:
        return pos
    prefix = desc.name.encode()
    by_wire_name = desc.subsections_by_wire_name
    seen: set[bytes] = set()
    while pos + 1 < len(buf) and buf[pos] == SUBSECTION:
        length = buf[pos + 1]
        if length < len(prefix) + 1 or pos + 2 + length > len(buf):
            break
        wire_name = bytes(buf[pos + 2 : pos + 2 + length])
        if not wire_name.startswith(prefix):
            break
        shown = wire_name.decode("utf-8", "replace")
        sub = by_wire_name.get(wire_name)
        if sub is None:
            known = ", ".join(s.name for s in desc.subsections) or "none"
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
        header = pos
        pos += 2 + length
        need(buf, pos, 4, "subsection version")
        (version,) = _BE32.unpack_from(buf, pos)
        pos += 4
        parts: list[Span] | None = None
        if spans is not None:
            parts = [Span("", None, None, header, pos, note=f"-- subsection v{version}")]
        try:
            value, pos = load(
                sub.description,
                buf,
                pos,
                version,
                frame.ctx,
                frame.held_of(sub.name),
                frame.values,
                parts,
            )
        except DecodeError as e:
            raise e.within(sub.name) from None
        frame.values[sub.name] = value
        if spans is not None:
            spans.append(
                Span(sub.name, sub.description, value, header, pos, parts, version=version)
            )
    return pos


def _run_load_hook(name: str, pos: int, *args: Any) -> Any:
    try:
        return hook(name)(*args)
    except DecodeError:
        raise
    except Exception as exc:  # hooks are user code; report them as load errors
        raise DecodeError(f"hook {name} failed: {exc}", offset=pos) from exc


# -- save ---------------------------------------------------------------------


def save(
    desc: DescriptionLike,
    out: bytearray,
    state: Mapping[str, Any],
    version_id: int,
    ctx: Ctx,
    outer: Mapping[str, Any] | None = None,
    held: Mapping[str, Any] | None = None,
    spans: list[Span] | None = None,
) -> None:
    """Append *state* encoded as *desc* at *version_id* to *out*."""
    if not isinstance(state, Mapping):
        raise EncodeError(f"expected a mapping for {desc.name}, got {type(state).__name__}")
    if desc.hooks.pre_save:
        state = _run_save_hook(desc.hooks.pre_save, state)
    unknown = set(state) - desc.stored_names
    if unknown:
        raise EncodeError(f"state has fields {sorted(unknown)} that {desc.name} does not know")
    # what the conditions see is what is sent, as on load: a field not written is
    # not there, whatever the state holds for it
    frame = Frame(dict(state), version_id, held, ctx, outer)
    planned = plan(desc, version_id, fast=spans is None)
    for name in planned.unsent:
        frame.values.pop(name, None)
    for step in planned.steps:
        if step.__class__ is Run:
            try:
                values = [state[n] for n in step.names] if step.packs_plain else step.pack(state)
                out += step.codec.pack(*values)
            except (KeyError, struct.error, TypeError, OverflowError):
                # field by field, so that the error names the field that does not fit
                for field in step.fields:
                    _save_field(desc, out, field, state, frame, None)
            continue
        field: Field = step
        if field.exists is not None and not _exists_on_save(desc, field, state, frame):
            frame.values.pop(field.name, None)
            continue
        start = len(out)
        parts: list[Span] | None = [] if spans is not None else None
        _save_field(desc, out, field, state, frame, parts)
        if spans is not None and not field.kind.validates:
            spans.append(
                Span(field.name, field.kind, state.get(field.name), start, len(out), parts)
            )
    for sub in desc.subsections:
        if not _needed(sub, state, frame):
            continue
        if sub.name not in state:
            raise EncodeError(f"subsection {sub.name} is needed but the state has none")
        header = len(out)
        wire_name = sub.name.encode()
        out.append(SUBSECTION)
        out.append(len(wire_name))
        out += wire_name
        out += _BE32.pack(sub.description.version_id)
        parts = None
        if spans is not None:
            parts = [
                Span(
                    "",
                    None,
                    None,
                    header,
                    len(out),
                    note=f"-- subsection v{sub.description.version_id}",
                )
            ]
        try:
            save(
                sub.description,
                out,
                state[sub.name],
                sub.description.version_id,
                ctx,
                frame.values,
                held.get(sub.name) if held is not None else None,
                parts,
            )
        except EncodeError as e:
            raise e.within(sub.name) from None
        if spans is not None:
            spans.append(
                Span(
                    sub.name,
                    sub.description,
                    state[sub.name],
                    header,
                    len(out),
                    parts,
                    version=sub.description.version_id,
                )
            )
    if desc.hooks.post_save:
        _run_save_hook(desc.hooks.post_save, state)


def _save_field(
    desc: DescriptionLike,
    out: bytearray,
    field: Field,
    state: Mapping[str, Any],
    frame: Frame,
    spans: list[Span] | None,
) -> None:
    kind = field.kind
    if kind.validates:
        return
    try:
        if not kind.stored:
            kind.save(out, None, frame, field.name, spans)
            return
        if field.name not in state:
            raise EncodeError("missing from the state")
        kind.save(out, state[field.name], frame, field.name, spans)
    except EncodeError as e:
        raise e.within(field.name) from None


def _exists_on_save(
    desc: DescriptionLike, field: Field, state: Mapping[str, Any], frame: Frame
) -> bool:
    cond = field.exists
    assert cond is not None
    if is_opaque(cond):
        return field.name in state or not field.kind.stored
    try:
        present = cond(frame)
    except DescriptionError as e:
        raise EncodeError(f"exists-test failed: {e.message}", path=(field.name,)) from None
    if not present and field.kind.validates:
        raise EncodeError(f"Output state validation failed: {desc.name}/{field.name}")
    return bool(present)


def _needed(sub: Subsection, state: Mapping[str, Any], frame: Frame) -> bool:
    if sub.needed is None:
        return True
    if is_opaque(sub.needed):
        return sub.name in state
    try:
        return sub.needed(frame)
    except DescriptionError as e:
        raise EncodeError(f"needed test of {sub.name} failed: {e.message}") from None


def _run_save_hook(name: str, state: Mapping[str, Any]) -> Any:
    try:
        result = hook(name)(state)
    except EncodeError:
        raise
    except VMStateError as exc:
        raise EncodeError(f"hook {name} failed: {exc}") from exc
    except Exception as exc:
        raise EncodeError(f"hook {name} failed: {exc}") from exc
    return state if result is None else result
