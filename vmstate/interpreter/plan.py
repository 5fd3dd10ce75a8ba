"""A description compiled for one version: the steps every load and save takes.

QEMU's ``vmstate_load_state`` walks a field list and asks each field whether
it is there (its version, its exists-test).  Here that walk is decided once per
(description, version): fields absent at the version are dropped, and
consecutive fields that are always there and have a fixed :class:`Layout`
(their kinds say so) become one :class:`Run`, read or written by one ``struct``
call.  Those runs are the only fast path there is, and the kinds' own layouts
are its only rules; a plan compiled with ``fast=False`` takes every field one
by one through its kind, which is how a traced run records every span and how
the tests check that both ways agree.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vmstate.errors import EncodeError
from vmstate.kinds.base import Layout, codec, single

if TYPE_CHECKING:
    from vmstate.kinds.base import DescriptionLike
    from vmstate.kinds.base import FieldLike as Field


class Run:
    """Consecutive always-present fields with fixed layouts: one struct call."""

    __slots__ = ("codec", "fields", "layouts", "names", "packs_plain", "plain")

    def __init__(self, fields: Sequence[Field], layouts: Sequence[Layout]) -> None:
        order = next((lay.order for lay in layouts if lay.order), ">")
        self.fields = tuple(fields)
        self.layouts = tuple(layouts)
        self.codec = codec(order, "".join(lay.fmt for lay in layouts))
        #: every field one value taken as it is: the state is zip(names, values)
        self.plain = all(lay.nvalues == 1 and lay.unpack is None for lay in layouts)
        #: and written as it is, with nothing to check beyond what struct checks
        self.packs_plain = self.plain and all(lay.pack is single for lay in layouts)
        self.names = tuple(f.name for f in fields)

    @property
    def size(self) -> int:
        return self.codec.size

    def assign(self, values: dict[str, Any], raw: Sequence[Any]) -> None:
        """Store the run's unpacked *raw* values into *values*, converted."""
        at = 0
        for field, lay in zip(self.fields, self.layouts, strict=True):
            n = lay.nvalues
            if lay.unpack is None:
                values[field.name] = raw[at]
            elif field.kind.stored:
                values[field.name] = lay.unpack(raw[at : at + n])
            at += n

    def pack(self, state: Any) -> list[Any]:
        """The run's values from *state* (an EncodeError names the field that is off)."""
        out: list[Any] = []
        for field, lay in zip(self.fields, self.layouts, strict=True):
            if not field.kind.stored:
                continue
            if field.name not in state:
                raise EncodeError("missing from the state", path=(field.name,))
            try:
                out.extend(lay.pack(state[field.name]))
            except EncodeError as e:
                raise e.within(field.name) from None
        return out


Step = Run | Any  # a Run, or a Field its kind handles


class Plan:
    """The steps of one description at one version (see the module docstring)."""

    __slots__ = ("description", "flat", "steps", "unsent", "version")

    def __init__(self, description: DescriptionLike, version: int, steps: tuple[Step, ...]) -> None:
        self.description = description
        self.version = version
        self.steps = steps
        #: stored fields too new for this version: never on the wire, so a save's
        #: conditions must not see them either (a load's cannot)
        self.unsent = tuple(f.name for f in description.fields
                            if f.exists is None and f.since > version and f.kind.stored)
        #: the description's own layout when it is one run and nothing else
        self.flat = _flat(description, steps)


def plan(desc: DescriptionLike, version: int, *, fast: bool = True, checked: bool = False) -> Plan:
    """The plan of *desc* at *version*, compiled on first use.

    *fast* merges fixed fields into runs; *checked* keeps fields whose values are
    compared with held state (a load that has the destination's state) out of them.
    """
    key = (version, fast, checked)
    found = desc.plans.get(key)
    if found is None:
        found = desc.plans[key] = Plan(desc, version, _steps(desc, version, fast, checked))
    return found


def _steps(desc: DescriptionLike, version: int, fast: bool, checked: bool) -> tuple[Step, ...]:
    steps: list[Step] = []
    fields: list[Field] = []
    layouts: list[Layout] = []
    order = ""

    def flush() -> None:
        nonlocal order
        if len(fields) == 1 and layouts[0].nvalues <= 1 and layouts[0].unpack is None:
            steps.append(fields[0])
        elif fields:
            steps.append(Run(fields, layouts))
        fields.clear()
        layouts.clear()
        order = ""

    for field in desc.fields:
        if field.exists is None and field.since > version:
            continue
        lay = field.kind.layout() if fast and field.exists is None else None
        if lay is None or (checked and lay.checked):
            flush()
            steps.append(field)
            continue
        if lay.order and order and lay.order != order:
            flush()
        order = order or lay.order
        fields.append(field)
        layouts.append(lay)
    flush()
    return tuple(steps)


def _flat(desc: DescriptionLike, steps: tuple[Step, ...]) -> Layout | None:
    """The layout of a description that is one run: a struct element read in bulk."""
    if desc.subsections or desc.hooks or len(steps) != 1:
        return None
    step = steps[0]
    if not isinstance(step, Run):
        if step.exists is not None:  # not always there: not a fixed layout
            return None
        lay = step.kind.layout()
        if lay is None or not step.kind.stored:
            return None
        step = Run((step,), (lay,))
    run = step
    checked = any(lay.checked for lay in run.layouts)
    order, fmt = run.codec.format[:1], run.codec.format[1:]
    names = tuple(f.name for f in run.fields if f.kind.stored)
    keys = frozenset(names)
    getter = operator.itemgetter(*names) if len(names) > 1 else None

    def unpack(raw: Sequence[Any]) -> dict[str, Any]:
        if run.plain:
            return dict(zip(names, raw, strict=True))
        values: dict[str, Any] = {}
        run.assign(values, raw)
        return values

    def pack(value: Any) -> Sequence[Any]:
        if not isinstance(value, dict) or value.keys() != keys:
            _exact_keys(value, names)
        if getter is not None and run.packs_plain:
            return getter(value)  # type: ignore[no-any-return]
        return run.pack(value)

    lay = Layout(fmt, order, sum(lay.nvalues for lay in run.layouts), unpack, pack, checked)
    if run.plain:
        lay.names = names
        if run.packs_plain and getter is not None:
            lay.getter = getter
    return lay


def _exact_keys(value: Any, names: tuple[str, ...]) -> None:
    if not isinstance(value, dict):
        raise EncodeError(f"expected a mapping, got {type(value).__name__}")
    missing = [n for n in names if n not in value]
    if missing:
        raise EncodeError("missing from the state", path=(missing[0],))
    unknown = set(value) - set(names)
    if unknown:
        raise EncodeError(f"state has fields {sorted(unknown)} that the struct does not know")


__all__ = ["Plan", "Run", "plan"]
