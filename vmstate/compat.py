"""Migration compatibility of two description sets: can DST load what SRC sends?

Covers what QEMU's ``scripts/vmstate-static-checker.py`` reports (missing
sections, version and minimum-version errors, field order and names, sizes,
``unused`` padding absorbing fields, substructs added or removed, missing
subsections) and what it misses (exists-test and ``needed`` changes, field
kind changes, array counts, variable-size bounds, fields the destination
expects that the source never sends).  Renames and accepted differences come
from a waiver file (:mod:`vmstate.waivers`), never from code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import attrs

from vmstate.description import Description
from vmstate.fields import Array, Buffer, Field, Kind, QTailQ, Seq, Struct, Unused, VArray, VBuffer
from vmstate.predicates import Condition, is_opaque
from vmstate.waivers import NO_WAIVERS, Waivers

ERROR = "error"
WARNING = "warning"
FILES = "files"
DUMP = "dump"
VMDESC = "vmdesc"
_LISTS = (Array, VArray, Seq, QTailQ)


@attrs.frozen
class Problem:
    """One incompatibility: where, which rule, and a one-line reason."""

    severity: str
    section: str
    path: str
    rule: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return attrs.asdict(self)

    def __str__(self) -> str:
        where = f"{self.section}: {self.path}" if self.path else self.section
        return f"{self.severity}: {where}: {self.reason} [{self.rule}]"


@attrs.frozen
class DescriptionSet:
    """Sections by name; ``unmigratable`` lists sections that exist but cannot migrate."""

    sections: Mapping[str, Description]
    unmigratable: frozenset[str] = frozenset()
    origin: str = ""
    #: FILES (full descriptions), DUMP (-dump-vmstate: no types, counts or tests)
    #: or VMDESC (what one stream sent: no tests, no needed)
    kind: str = FILES
    #: a dump entry's own (version_id, minimum_version_id), where it differs from its description's
    versions: Mapping[str, tuple[int, int]] = attrs.field(factory=dict)
    #: the machine type the set was taken from (a dump's), when known
    machine: str = ""

    @property
    def decodes(self) -> bool:
        """Whether the descriptions can decode bytes (a -dump-vmstate set cannot)."""
        return self.kind != DUMP

    def find(self, name: str, desc: Description | None = None) -> tuple[str, Description] | None:
        """The section *name*, else (given *desc*) the one with the same description name,
        as sets of different kinds name sections differently (device type, id string)."""
        if name in self.sections:
            return name, self.sections[name]
        if desc is not None:
            for key, other in self.sections.items():
                if other.name == desc.name:
                    return key, other
        return None


def compare(
    src: DescriptionSet, dst: DescriptionSet, waivers: Waivers = NO_WAIVERS
) -> list[Problem]:
    """Every problem migrating from *src* to *dst*, waived ones removed."""
    problems: list[Problem] = []
    for name, desc in src.sections.items():
        if name in src.unmigratable:
            continue
        # sets of one kind name sections alike; only across kinds match by description name
        target = dst.find(waivers.section_name(name), desc if src.kind != dst.kind else None)
        if target is None and name not in dst.unmigratable:
            problems.append(missing_section(name, src, dst))
        elif target is None or target[0] in dst.unmigratable:
            reason = "the destination has this device but cannot migrate it"
            problems.append(Problem(ERROR, name, "", "section-unmigratable", reason))
        else:
            comparison = _Comparison(name, waivers, {src.kind, dst.kind})
            if name in src.versions or target[0] in dst.versions:
                problems.extend(
                    comparison.versions(
                        src.versions.get(name, (desc.version_id, desc.minimum_version_id)),
                        dst.versions.get(
                            target[0], (target[1].version_id, target[1].minimum_version_id)
                        ),
                        "",
                    )
                )
            problems.extend(comparison.descriptions(desc, target[1], desc.name))
    return [p for p in problems if not waivers.accepts(p)]


def missing_section(name: str, src: DescriptionSet, dst: DescriptionSet) -> Problem:
    """The problem of section *name* having no description in *dst*.

    A dump lists device classes that have a vmsd, not every section a stream
    carries: against a dump, a stream's section that is not there is unknown,
    not known to be missing."""
    if dst.kind == DUMP and src.kind != DUMP:
        reason = "not described by the destination's dump (-dump-vmstate lists device classes only)"
        return Problem(WARNING, name, "", "section-undescribed", reason)
    return Problem(ERROR, name, "", "section-missing", "section does not exist in the destination")


class _Comparison:
    """Comparison of one section; collects problems in order."""

    def __init__(self, section: str, waivers: Waivers, kinds: set[str]) -> None:
        self.section = section
        self.waivers = waivers
        #: a vmdesc side says nothing of tests; a dump side nothing of types and counts
        self.tests_known = VMDESC not in kinds
        self.types_known = DUMP not in kinds
        #: a vmdesc leaves out arrays that had no elements, so a field may be absent
        self.sent_only = VMDESC in kinds

    def problem(self, severity: str, path: str, rule: str, reason: str) -> Problem:
        return Problem(severity, self.section, path, rule, reason)

    def versions(self, s: tuple[int, int], d: tuple[int, int], path: str) -> Iterator[Problem]:
        """QEMU's rule: the source's version within the destination's [minimum, version]."""
        if s[0] > d[0]:
            yield self.problem(
                ERROR,
                path,
                "version-too-new",
                f"source version {s[0]} > destination version {d[0]}",
            )
        if s[0] < d[1]:
            yield self.problem(
                ERROR,
                path,
                "version-too-old",
                f"source version {s[0]} < destination minimum version {d[1]}",
            )

    def descriptions(self, s: Description, d: Description, path: str) -> Iterator[Problem]:
        yield from self.versions(
            (s.version_id, s.minimum_version_id), (d.version_id, d.minimum_version_id), path
        )
        if s.name != d.name and not self.waivers.renamed(self.section, s.name, d.name):
            yield self.problem(
                ERROR,
                path,
                "description-renamed",
                f"description {s.name!r} missing, got {d.name!r} instead; skipping",
            )
            return
        yield from self.fields(s, d, path)
        yield from self.subsections(s, d, path)

    def subsections(self, s: Description, d: Description, path: str) -> Iterator[Problem]:
        by_name = {sub.name: sub for sub in d.subsections}
        for sub in s.subsections:
            other = by_name.get(sub.name)
            if other is None:
                yield self.problem(
                    ERROR,
                    f"{path}/{sub.name}",
                    "subsection-missing",
                    f"subsection {sub.name!r} not found in the destination",
                )
                continue
            if (
                self.tests_known
                and sub.needed != other.needed
                and not _opaque_pair(sub.needed, other.needed)
            ):
                yield self.problem(
                    WARNING,
                    f"{path}/{sub.name}",
                    "needed-changed",
                    f"needed changed from {_source(sub.needed)} to {_source(other.needed)}",
                )
            yield from self.descriptions(sub.description, other.description, f"{path}/{sub.name}")

    def fields(self, s: Description, d: Description, path: str) -> Iterator[Problem]:
        src = _Cursor(s.fields)
        dst = _Cursor(d.fields)
        while (sf := src.peek()) is not None:
            df = dst.peek()
            if df is None:
                yield self.problem(
                    ERROR,
                    f"{path}.{sf.name}",
                    "field-missing",
                    f"expected field {sf.name!r}, while the destination has no further fields",
                )
                return
            if self.matches(d.name, sf.name, df.name):
                yield from self.field(sf, df, f"{path}.{sf.name}", s.version_id)
                src.advance()
                dst.advance()
                continue
            if (first := _first_name(df)) is not None and self.matches(
                _struct_name(df), sf.name, first
            ):
                dst.descend()  # the destination moved fields into a substruct; the wire is the same
                continue
            if (first := _first_name(sf)) is not None and self.matches(
                _struct_name(sf), first, df.name
            ):
                src.descend()  # the source had them in a substruct the destination dropped
                continue
            if df.exists is not None or df.since > s.version_id:
                dst.advance()  # the destination's field is not on the wire from this source
                continue
            if _is_padding(sf) or _is_padding(df):
                problem = _absorb(src, dst, sf, df)
                if problem is not None:
                    yield self.problem(
                        ERROR,
                        f"{path}.{problem}",
                        "unused-size",
                        f"unused size mismatch near {problem!r}",
                    )
                    return
                continue
            if self.may_be_empty(df):
                dst.advance()  # a list the source may have sent empty
                continue
            yield self.problem(
                ERROR,
                f"{path}.{sf.name}",
                "field-order",
                f"expected field {sf.name!r}, got {df.name!r}; skipping the rest",
            )
            return
        for df in dst.rest():
            if df.exists is None and df.since <= s.version_id and not self.may_be_empty(df):
                yield self.problem(
                    ERROR,
                    f"{path}.{df.name}",
                    "field-not-sent",
                    f"the destination expects {df.name!r} (since version {df.since}) but the source at version {s.version_id} does not send it",
                )

    def may_be_empty(self, field: Field) -> bool:
        """Whether *field* can take no bytes: padding, or a list a vmdesc or dump cannot size."""
        if self.sent_only:
            return True
        return isinstance(field.kind, VArray | VBuffer | QTailQ)

    def matches(self, desc_name: str, s: str, d: str) -> bool:
        return s == d or self.waivers.renamed(self.section, s, d, desc_name)

    def field(self, sf: Field, df: Field, path: str, version: int) -> Iterator[Problem]:
        if sf.since > df.since:
            yield self.problem(
                ERROR, path, "field-version", f"field version {sf.since} > {df.since}"
            )
        if self.tests_known and _tests_differ(sf.exists, df.exists):
            yield self.problem(
                WARNING,
                path,
                "exists-changed",
                f"exists-test changed from {_source(sf.exists)} to {_source(df.exists)}",
            )
        s_struct, d_struct = _struct_of(sf.kind), _struct_of(df.kind)
        if s_struct is not None:
            if d_struct is None:
                yield self.problem(
                    ERROR,
                    path,
                    "struct-removed",
                    "the destination has no nested description for this field",
                )
                return
            yield from self.descriptions(s_struct, d_struct, f"{path}")
        elif d_struct is not None:
            yield self.problem(
                ERROR, path, "struct-added", "the destination expects a nested description here"
            )
            return
        else:
            s_size, d_size = _element_size(sf.kind), _element_size(df.kind)
            # a dump's size 0 is QEMU's "custom" (virtio, msix): only a vmdesc knows it
            if s_size != d_size and (self.tests_known or 0 not in (s_size, d_size)):
                yield self.problem(
                    ERROR, path, "size-changed", f"size mismatch: {s_size} -> {d_size}"
                )
            elif self.types_known and _info(sf.kind) != _info(df.kind):
                yield self.problem(
                    WARNING,
                    path,
                    "kind-changed",
                    f"kind changed from {_info(sf.kind)} to {_info(df.kind)}",
                )
        yield from self.counts(sf.kind, df.kind, path)

    def counts(self, s: Kind, d: Kind, path: str) -> Iterator[Problem]:
        if not self.types_known:
            return  # a -dump-vmstate side does not say how many elements there are
        if isinstance(s, Array) and isinstance(d, Array) and s.count != d.count:
            yield self.problem(
                ERROR, path, "array-count", f"array of {s.count} elements became {d.count}"
            )
        elif type(s) is not type(d) and isinstance(s, _LISTS) != isinstance(d, _LISTS):
            yield self.problem(
                ERROR, path, "array-kind", f"{type(s).__name__} became {type(d).__name__}"
            )
        if isinstance(s, VArray) and isinstance(d, VArray):
            if s.count_field != d.count_field or s.multiply != d.multiply:
                yield self.problem(
                    ERROR,
                    path,
                    "array-count",
                    f"count {s.count_field} x{s.multiply} became {d.count_field} x{d.multiply}",
                )
            if d.max_count < s.max_count:
                yield self.problem(
                    ERROR,
                    path,
                    "bound-shrunk",
                    f"the destination takes at most {d.max_count} elements, the source may send {s.max_count}",
                )
        if isinstance(s, VBuffer) and isinstance(d, VBuffer):
            if s.size_field != d.size_field or s.multiply != d.multiply:
                yield self.problem(
                    ERROR,
                    path,
                    "buffer-size",
                    f"size {s.size_field} x{s.multiply} became {d.size_field} x{d.multiply}",
                )
            if d.max_size < s.max_size:
                yield self.problem(
                    ERROR,
                    path,
                    "bound-shrunk",
                    f"the destination takes at most {d.max_size} bytes, the source may send {s.max_size}",
                )


class _Cursor:
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
        nested = _struct_of(fields[i].kind)
        assert nested is not None
        self.stack.append((nested.fields, 0))

    def rest(self) -> list[Field]:
        out = []
        while (f := self.peek()) is not None:
            out.append(f)
            self.advance()
        return out


def _absorb(src: _Cursor, dst: _Cursor, sf: Field, df: Field) -> str | None:
    """``unused`` padding on one side standing for fields of the same total size on the other.

    Returns the name of the field where the sizes stop adding up, or None."""
    s_size, d_size = _element_size(sf.kind), _element_size(df.kind)
    src.advance()
    dst.advance()
    if s_size == d_size:
        return None
    _, other, remaining = (
        (dst, src, d_size - s_size) if _is_padding(df) else (src, dst, s_size - d_size)
    )
    while remaining > 0:
        f = other.peek()
        if f is None:
            return "<end>"
        remaining -= _element_size(f.kind) or 0
        other.advance()
        if remaining < 0:
            return f.name
    return None


def _element(kind: Kind) -> Kind | None:
    """The kind of one element (the first, for a vmdesc Seq); the kind itself if not a list."""
    if isinstance(kind, Array | VArray):
        return kind.element
    if isinstance(kind, Seq):
        return kind.elements[0] if kind.elements else None
    return kind


def _struct_of(kind: Kind) -> Description | None:
    element = _element(kind)
    return element.description if isinstance(element, Struct) else None


def _is_padding(field: Field) -> bool:
    """QEMU's VMSTATE_UNUSED, as described or as a vmdesc records it."""
    return isinstance(field.kind, Unused) or (
        isinstance(field.kind, Buffer) and field.kind.info == "unused_buffer"
    )


def _struct_name(field: Field) -> str:
    nested = _struct_of(field.kind)
    return nested.name if nested is not None else ""


def _first_name(field: Field) -> str | None:
    nested = _struct_of(field.kind)
    return nested.fields[0].name if nested is not None and nested.fields else None


def _element_size(kind: Kind) -> int | None:
    element = _element(kind)
    return element.size if element is not None else 0


def _info(kind: Kind) -> str:
    element = _element(kind)
    return element.info if element is not None else ""


def _tests_differ(a: Condition | None, b: Condition | None) -> bool:
    if (a is None) != (b is None):
        return True
    return a is not None and a != b and not _opaque_pair(a, b)


def _opaque_pair(a: Condition | None, b: Condition | None) -> bool:
    """Both tests are QEMU code we cannot see: only their presence can be compared."""
    return a is not None and b is not None and is_opaque(a) and is_opaque(b)


def _source(cond: Condition | None) -> str:
    if cond is None:
        return "none"
    return "QEMU code" if is_opaque(cond) else repr(cond.source)
