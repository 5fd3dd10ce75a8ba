"""Decoding a stream without a vmdesc with the source QEMU's ``-dump-vmstate``.

QEMU leaves the vmdesc out with ``suppress-vmdesc=on`` and in postcopy.  A dump
describes every device class but not exactly enough to decode: it does not say
which fields an exists-test sends, how many elements a struct array without
``num`` has, how long a custom field (``virtio``, ``msix state``) is.  The
stream says how long each section is, though: since machine types 2.4 every
section ends with a footer (0x7e and its section id).  So each section's bytes
are fitted to its description: of the readings that end exactly at the footer
(subsections name themselves on the wire, and where one starts no field does),
the likeliest wins, counting one for each departure from what such a field most
often is (an exists-tested field absent; a struct field other than one struct).
What wins becomes a description of fixed sizes, like one built from a vmdesc,
and the section is decoded with it (fields as raw bytes: a dump has no types).

A section no dump entry describes (``timer``, ``cpu``, ``slirp``: not device
classes), one that two readings fit as well (the dump cannot tell them apart),
or one whose search goes past a bound stays one opaque buffer: the whole stream
still decodes and re-encodes byte for byte, and nothing is read wrongly.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterator
from typing import Any

import attrs

from vmstate.compat import DescriptionSet
from vmstate.description import Description, Subsection
from vmstate.fields import Buffer, Field, Kind, Seq, Struct
from vmstate.interpreter.engine import SUBSECTION
from vmstate.predicates import opaque_condition

FOOTER = 0x7E
#: section types that may follow a footer (EOF, START/PART/END/FULL, COMMAND)
_NEXT_TYPES = frozenset({0x00, 0x01, 0x02, 0x03, 0x04, 0x08})
#: steps of one section's search before it gives up (each tries one way to read a field)
MAX_STEPS = 20_000
#: footers tried as a section's end, in order, before it is read as opaque
MAX_ENDS = 8
UNDESCRIBED = "undescribed"
UNKNOWN = "unknown"
_BE32 = struct.Struct(">I")


@attrs.frozen
class Fitted:
    """How one section was read: its description and whether the dump described it."""

    description: Description
    described: bool


class DumpLayouts:
    """A stream resolver from a dump: call with the section's bytes (see stream.parse)."""

    def __init__(self, dump: DescriptionSet, max_steps: int = MAX_STEPS) -> None:
        self.max_steps = max_steps
        self.by_name: dict[str, list[Description]] = {}
        for desc in dump.sections.values():
            if desc not in self.by_name.setdefault(desc.name, []):
                self.by_name[desc.name].append(desc)
        #: (section id string, instance) -> how it was read, for reports
        self.fitted: dict[tuple[str, int], Fitted] = {}

    def __call__(
        self, buf: Any, start: int, section_id: int, idstr: str, instance_id: int, version_id: int
    ) -> Description | None:
        ends = list(_footers(buf, start, section_id))
        if not ends:
            return None  # no footer: only a description that decodes can find the end
        candidates = self.by_name.get(idstr.rsplit("/", 1)[-1], [])
        for end in ends:
            for desc in candidates:
                if not desc.minimum_version_id <= version_id <= desc.version_id:
                    continue
                found = _Fit(buf, end, self.max_steps).section(desc, version_id, start)
                if found is not None:
                    self.fitted[(idstr, instance_id)] = Fitted(found, True)
                    return found
        opaque = Description(
            idstr.rsplit("/", 1)[-1] or idstr,
            version_id,
            0,
            [Field("data", Buffer(ends[0] - start, UNDESCRIBED))],
        )
        self.fitted[(idstr, instance_id)] = Fitted(opaque, False)
        return opaque


def _footers(buf: Any, start: int, section_id: int) -> Iterator[int]:
    """Offsets where this section's footer may start: the footer bytes, then what a
    stream may have next (another section, a command, EOF)."""
    marker = bytes([FOOTER]) + _BE32.pack(section_id)
    pos, found = start, 0
    while found < MAX_ENDS and (pos := buf.find(marker, pos)) >= 0:
        after = pos + 5
        if after < len(buf) and buf[after] in _NEXT_TYPES:
            found += 1
            yield pos
        pos += 1


@attrs.frozen
class _Frame:
    """Where the search is inside one description: at field *i*, or past the last
    field reading subsections (*seen* so far).  *left* says what the description is:
    0 the section or a subsection, n > 0 an element of a struct array with n
    elements left, -1 an element of a variable struct array."""

    desc: Description
    version: int
    left: int = 0
    i: int = 0
    seen: tuple[str, ...] = ()


#: the search's state: the position in the stream and the frames, outermost first
_State = tuple[int, tuple[_Frame, ...]]
#: one move: ("field", Field) | ("skip",) | ("enter", field name, description) |
#: ("next",) | ("sub", name, version) | ("end",)
_Move = tuple[Any, ...]


class _Fit:
    """A search for one reading of a description that ends exactly at *end*.

    Depth first over (position, frames), likeliest move first (an exists-tested
    field present, a struct without ``num`` one element, then more, then none, a
    custom field shortest first), remembering the states that cannot reach the end
    so that none is searched twice."""

    def __init__(self, buf: Any, end: int, max_steps: int) -> None:
        self.buf = buf
        self.end = end
        self.max_steps = max_steps
        self.bounds: dict[tuple[int, int], tuple[int, int | None]] = {}

    def bound(self, desc: Description, i: int) -> tuple[int, int | None]:
        """The fewest and most bytes (None: no limit) the fields of *desc* from *i* on
        can take, its subsections left out of the fewest."""
        key = (id(desc), i)
        if key not in self.bounds:
            low, high = 0, 0 if not desc.subsections else None
            for field in desc.fields[i:]:
                if field.exists is None and field.since > desc.version_id:
                    continue
                f_low, f_high = self.field_bound(field)
                low += f_low if field.exists is None else 0
                high = None if high is None or f_high is None else high + f_high
            self.bounds[key] = (low, high)
        return self.bounds[key]

    def field_bound(self, field: Field) -> tuple[int, int | None]:
        kind = field.kind
        nested = _struct_of(kind)
        if nested is not None:
            low, high = self.bound(nested, 0)
            count = kind.fixed_count()
            if count is not None:
                return low * count, None if high is None else high * count
            return 0, None  # a variable array of them
        size = kind.certain_size()
        return (size, size) if size is not None else (0, None)

    def rest(self, frames: tuple[_Frame, ...]) -> tuple[int, int | None]:
        """The fewest and most bytes left to read after *frames*' current fields."""
        low, high = 0, 0
        for frame in frames:
            f_low, f_high = self.bound(frame.desc, frame.i)
            if frame.left > 1:
                e_low, e_high = self.bound(frame.desc, 0)
                f_low += e_low * (frame.left - 1)
                f_high = (
                    None if f_high is None or e_high is None else f_high + e_high * (frame.left - 1)
                )
            elif frame.left == -1:
                f_high = None
            low += f_low
            high = None if high is None or f_high is None else high + f_high
        return low, high

    def section(self, desc: Description, version: int, pos: int) -> Description | None:
        """The likeliest reading that ends at the end: fewest departures from what a
        dump's field most often is (a tested field absent, a struct array other than
        one element cost one each).  None when there is none, when another reading is
        as likely (the dump cannot tell them apart), or when the search takes too long."""
        start: _State = (pos, (_Frame(desc, version),))
        best: dict[_State, int] = {start: 0}
        came: dict[_State, tuple[_State, _Move]] = {}
        tied: set[_State] = set()  # reached as cheaply in two ways
        queue: list[tuple[int, int, _State]] = [(0, 0, start)]
        popped: set[_State] = set()
        goal: list[tuple[_State, _Move]] = []
        goal_cost: int | None = None
        pushed = 0
        while queue:
            cost, _, state = heapq.heappop(queue)
            if state in popped:
                continue
            if goal_cost is not None and cost > goal_cost:
                break
            popped.add(state)
            if len(popped) > self.max_steps:
                return None
            for move, after, extra in self.moves(state):
                if after[0] + self.rest(after[1])[0] > self.end:
                    continue
                total = cost + extra
                if not after[1]:
                    if after[0] != self.end or (goal_cost is not None and total > goal_cost):
                        continue
                    if goal_cost is None or total < goal_cost:
                        goal_cost, goal = total, []
                    goal.append((state, move))
                    continue
                known = best.get(after)
                if known is None or total < known:
                    best[after] = total
                    came[after] = (state, move)
                    tied.discard(after)
                    pushed += 1
                    heapq.heappush(queue, (total, pushed, after))
                elif total == known and came[after] != (state, move):
                    tied.add(after)
        if len(goal) != 1:
            return None
        state, move = goal[0]
        moves = [move]
        while state != start:
            if state in tied:
                return None
            state, move = came[state]
            moves.append(move)
        return _build(desc, version, moves[::-1])

    def at_subsection(self, pos: int, frames: tuple[_Frame, ...]) -> bool:
        """Whether a subsection of one of *frames*' descriptions starts at *pos*: no
        field does then (QEMU reads fields first, then the subsections)."""
        buf = self.buf
        if pos + 2 > self.end or buf[pos] != SUBSECTION:
            return False
        name = bytes(buf[pos + 2 : pos + 2 + buf[pos + 1]]).decode("utf-8", "replace")
        return any(sub.name == name for frame in frames for sub in frame.desc.subsections)

    def moves(self, state: _State) -> Iterator[tuple[_Move, _State, int]]:
        pos, frames = state
        frame, outer = frames[-1], frames[:-1]
        if frame.i == len(frame.desc.fields):
            yield from self.past_fields(pos, outer, frame)
            return
        field = frame.desc.fields[frame.i]
        on = (*outer, attrs.evolve(frame, i=frame.i + 1))
        if field.exists is None and field.since > frame.version:
            yield ("skip",), (pos, on), 0
            return
        kind = field.kind
        nested = _struct_of(kind)
        if self.at_subsection(pos, frames):
            if field.exists is not None or (nested is not None and kind.fixed_count() is None):
                yield ("skip",), (pos, on), 1  # absent, or an array left empty
            elif kind.unknown_length():
                yield ("field", Field(field.name, Buffer(0, UNKNOWN))), (pos, on), 0
            return
        if nested is not None:
            count = kind.fixed_count()
            left = -1 if count is None else count
            if left != 0:
                inner = _Frame(nested, nested.version_id, left)
                yield ("enter", field.name, nested), (pos, (*on, inner)), 0
            if left <= 0:
                yield ("skip",), (pos, on), 1  # none: a variable array left empty
        elif kind.unknown_length():
            # a custom field: as long as what is left allows, shortest first
            low, high = self.rest(on)
            shortest = 0 if high is None else max(0, self.end - pos - high)
            for length in range(shortest, self.end - pos - low + 1):
                yield ("field", Field(field.name, Buffer(length, UNKNOWN))), (pos + length, on), 0
        else:
            size = kind.certain_size()
            if size is not None and pos + size <= self.end:
                yield ("field", Field(field.name, kind.untyped())), (pos + size, on), 0
        if field.exists is not None and nested is None:
            yield ("skip",), (pos, on), 1

    def past_fields(
        self, pos: int, outer: tuple[_Frame, ...], frame: _Frame
    ) -> Iterator[tuple[_Move, _State, int]]:
        """Subsections: QEMU reads every one on the wire whose name starts with the
        description's; then the description is done."""
        buf, desc = self.buf, frame.desc
        if pos + 2 <= self.end and buf[pos] == SUBSECTION:
            length = buf[pos + 1]
            name = bytes(buf[pos + 2 : pos + 2 + length]).decode("utf-8", "replace")
            if name.startswith(desc.name) and len(name) > len(desc.name):
                sub = next((s for s in desc.subsections if s.name == name), None)
                if sub is not None and name not in frame.seen and pos + 6 + length <= self.end:
                    version = _BE32.unpack_from(buf, pos + 2 + length)[0]
                    here = attrs.evolve(frame, seen=(*frame.seen, name))
                    inner = _Frame(sub.description, version)
                    yield ("sub", name, version), (pos + 6 + length, (*outer, here, inner)), 0
                return
        if frame.left > 1 or frame.left == -1:
            # another element; a variable array may also stop here (tried first)
            again = _Frame(frame.desc, frame.desc.version_id, max(frame.left - 1, -1))
            if frame.left == -1:
                yield ("end",), (pos, outer), 0
            yield ("next",), (pos, (*outer, again)), 1 if frame.left == -1 else 0
        else:
            yield ("end",), (pos, outer), 0


@attrs.define
class _Builder:
    """One description being put together from the moves of a successful search."""

    name: str
    version: int
    #: the field of the parent whose array this is an element of, or the subsection name
    owner: str | None = None
    subsection: bool = False
    fields: list[Field] = attrs.Factory(list)
    subs: list[Subsection] = attrs.Factory(list)
    #: earlier elements of the same array
    elements: list[Description] = attrs.Factory(list)

    def description(self) -> Description:
        return Description(self.name, self.version, 0, self.fields, self.subs)


def _build(desc: Description, version: int, moves: list[_Move]) -> Description:
    """The description the moves read: fixed sizes, no tests, what was on the wire."""
    stack = [_Builder(desc.name, version)]
    for move in moves:
        top = stack[-1]
        if move[0] == "field":
            top.fields.append(move[1])
        elif move[0] == "enter":
            nested = move[2]
            stack.append(_Builder(nested.name, nested.version_id, move[1]))
        elif move[0] == "next":
            stack[-1] = _Builder(
                top.name, top.version, top.owner, elements=[*top.elements, top.description()]
            )
        elif move[0] == "sub":
            stack.append(_Builder(move[1], move[2], move[1], subsection=True))
        elif move[0] == "end" and len(stack) > 1:
            stack.pop()
            if top.subsection:
                stack[-1].subs.append(Subsection(top.description(), opaque_condition(top.name)))
            else:
                elements = [*top.elements, top.description()]
                kind: Kind = (
                    Struct(elements[0])
                    if len(elements) == 1
                    else Seq(tuple(Struct(e) for e in elements))
                )
                stack[-1].fields.append(Field(top.owner or top.name, kind))
    return stack[0].description()


def _struct_of(kind: Kind) -> Description | None:
    return kind.element_description()  # type: ignore[return-value]
