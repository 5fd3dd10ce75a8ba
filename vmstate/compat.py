"""Migration compatibility of two description sets: can DST load what SRC sends?

Covers what QEMU's ``scripts/vmstate-static-checker.py`` reports (missing
sections, version and minimum-version errors, field order and names, sizes,
``unused`` padding absorbing fields, substructs added or removed, missing
subsections) and what it misses: the machine type (QEMU refuses a stream of
another machine type), exists-test changes (a field one side sends only when a
test holds while the other always expects it), ``needed`` changes, field kind
changes, array counts, variable-size bounds, fields the destination expects
that the source never sends.  It also avoids the checker's false alarms: a
nested struct's version is never on the wire, so it is not compared; a device
class one QEMU has and the other lacks is an error only when a stream says the
VM has that device.  Renames and accepted differences come from a waiver file
(:mod:`vmstate.waivers`), never from code.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping

import attrs

from vmstate.compat_fields import (
    Cursor,
    absorb,
    element_size,
    first_name,
    info_of,
    is_padding,
    struct_name,
    struct_of,
)
from vmstate.description import Description
from vmstate.fields import Field, Kind
from vmstate.findings import ERROR, WARNING, Finding
from vmstate.predicates import Condition, is_opaque
from vmstate.waivers import NO_WAIVERS, Waivers

FILES = "files"
DUMP = "dump"
VMDESC = "vmdesc"


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
    #: the machine type the set belongs to (a dump's, a stream's configuration), when known ("" when not)
    machine: str = ""
    #: False for a dump of a QEMU that does not write array lengths ("num", QEMU 10.0+):
    #: any field of it may be an array of unknown length
    counts_known: bool = True

    @property
    def decodes(self) -> bool:
        """Whether the descriptions can decode bytes (a -dump-vmstate set cannot)."""
        return self.kind != DUMP

    def find(self, name: str, desc: Description | None = None) -> tuple[str, Description] | None:
        """The section *name*, else (given *desc*) the one with the same description name:
        sets of different kinds name sections differently (device type, id string), and
        QEMU finds a section by its description's name, whatever the device type is called."""
        if name in self.sections:
            return name, self.sections[name]
        if desc is not None:
            for key, other in self.sections.items():
                if other.name == desc.name:
                    return key, other
        return None

    def named(self, name: str) -> int:
        """How many sections are described *name*."""
        return sum(desc.name == name for desc in self.sections.values())

    def describes(self, name: str) -> bool:
        """Whether any section of the set, or any struct in one, is described *name*."""
        return name in self._names

    @functools.cached_property
    def _names(self) -> frozenset[str]:
        return frozenset(d.name for desc in self.sections.values() for d in desc.walk())


def compare(
    src: DescriptionSet, dst: DescriptionSet, waivers: Waivers = NO_WAIVERS
) -> list[Finding]:
    """Every problem migrating from *src* to *dst*, waived ones removed."""
    problems: list[Finding] = list(machine_problems(src.machine, dst.machine))
    for name, desc in src.sections.items():
        if name in src.unmigratable:
            continue
        target = find_section(name, desc, src, dst, waivers)
        if target is None and name not in dst.unmigratable:
            problems.append(missing_section(name, desc, src, dst))
        elif target is None or target[0] in dst.unmigratable:
            reason = "the destination has this device but cannot migrate it"
            problems.append(Finding(ERROR, name, "", "section-unmigratable", reason))
        else:
            comparison = _Comparison(name, waivers, src, dst)
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
    return [p for p in problems if not waivers.accepts(p, dst.machine or src.machine)]


def find_section(
    name: str, desc: Description, src: DescriptionSet, dst: DescriptionSet, waivers: Waivers
) -> tuple[str, Description] | None:
    """*dst*'s section for *src*'s section *name*: the same name, a waiver's rename of it,
    else the section with the same description name (QEMU matches sections by it, not
    by device type: a type renamed between two dumps is still found, unless the name
    is ambiguous in either dump)."""
    found = dst.find(name) or dst.find(waivers.section_name(name))
    if found is not None or dst.kind == VMDESC:
        return found  # two streams name the same device alike (path and instance)
    if src.kind == DUMP and (src.named(desc.name) > 1 or dst.named(desc.name) > 1):
        return None  # device classes sharing a description name (isa-serial, serial-mm)
    return dst.find(waivers.section_name(name), desc)


def machine_problems(src: str, dst: str, subject: str = "the source") -> list[Finding]:
    """QEMU refuses a stream whose configuration names another machine type."""
    if not src or not dst or src == dst:
        return []
    reason = (
        f"{subject} is of machine type {src}, the destination's descriptions are of {dst}: "
        f"QEMU loads a stream only into its own machine type (describe the destination with "
        f"-M {src}; if its QEMU lacks that machine type, it cannot load it)"
    )
    return [Finding(ERROR, "configuration", "machine", "machine-type", reason)]


def missing_section(
    name: str, desc: Description | None, src: DescriptionSet, dst: DescriptionSet
) -> Finding:
    """The problem of section *name* (described *desc*) having no description in *dst*.

    A dump lists device classes, not every section a stream carries (``timer``,
    ``cpu``, ``ram``...), and not what a VM is made of:

    - dump to dump: the destination QEMU lacks that device class, which matters
      only to a VM with that device (a warning);
    - a stream's section against a dump: a VMState section of a device (``<device
      path>/<description name>``) that no device class of the dump describes is a
      device the destination cannot take (QEMU: "Unknown savevm section"); a system
      section the dump cannot describe is unknown, not known to be missing.
    """
    if dst.kind == DUMP and src.kind == DUMP:
        reason = (
            "the destination QEMU has no device class of this name or description: a VM "
            "with this device cannot migrate there"
        )
        return Finding(WARNING, name, "", "device-class-missing", reason)
    if dst.kind == DUMP:
        if desc is not None and is_device_section(name, desc) and not dst.describes(desc.name):
            reason = (
                f"no device class of the destination QEMU is described {desc.name!r}: it "
                'cannot load this device (QEMU: "Unknown savevm section or instance")'
            )
            return Finding(ERROR, name, "", "section-missing", reason)
        reason = "not described by the destination's dump (-dump-vmstate lists device classes only)"
        return Finding(WARNING, name, "", "section-undescribed", reason)
    return Finding(ERROR, name, "", "section-missing", "section does not exist in the destination")


def is_device_section(name: str, desc: Description) -> bool:
    """Whether section *name* is a device's VMState: ``<qdev path>/<description name>``
    (an old-style section, like vfio's, is described by its id string instead)."""
    base = name.split(" (", 1)[0]  # a stream set keys instance > 0 as "name (n)"
    return "/" in base and base.endswith("/" + desc.name) and base != desc.name


class _Comparison:
    """Comparison of one section; collects problems in order."""

    def __init__(
        self, section: str, waivers: Waivers, src: DescriptionSet, dst: DescriptionSet
    ) -> None:
        self.section = section
        self.waivers = waivers
        kinds = {src.kind, dst.kind}
        #: a vmdesc side says nothing of tests; a dump side nothing of types
        self.tests_known = VMDESC not in kinds
        self.types_known = DUMP not in kinds
        #: a vmdesc leaves out arrays that had no elements, so a field may be absent
        self.sent_only = VMDESC in kinds
        #: a dump of a QEMU before 10.0 says no array lengths: any field may be an array
        self.counts_known = src.counts_known and dst.counts_known
        self.dst_kind = dst.kind

    def problem(self, severity: str, path: str, rule: str, reason: str) -> Finding:
        return Finding(severity, self.section, path, rule, reason)

    def versions(self, s: tuple[int, int], d: tuple[int, int], path: str) -> Iterator[Finding]:
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

    def descriptions(
        self, s: Description, d: Description, path: str, nested: bool = False
    ) -> Iterator[Finding]:
        """Compare two descriptions.  A section's or subsection's version is on the wire
        and the destination loads at it; a *nested* struct's is not: each side uses its
        own, so versions are not compared and the destination reads at its own."""
        if not nested:
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
        yield from self.fields(s, d, path, d.version_id if nested else s.version_id)
        yield from self.subsections(s, d, path)

    def subsections(self, s: Description, d: Description, path: str) -> Iterator[Finding]:
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
            ):  # a subsection names itself on the wire: a changed needed() loses nothing
                yield self.problem(
                    WARNING,
                    f"{path}/{sub.name}",
                    "needed-changed",
                    f"needed changed from {_source(sub.needed)} to {_source(other.needed)}",
                )
            yield from self.descriptions(sub.description, other.description, f"{path}/{sub.name}")

    def fields(
        self, s: Description, d: Description, path: str, read_version: int
    ) -> Iterator[Finding]:
        """The field lists; the destination reads fields up to *read_version*."""
        src = Cursor(s.fields)
        dst = Cursor(d.fields)
        while (sf := src.peek()) is not None:
            df = dst.peek()
            if df is None:
                when = (
                    f" (sent when {_source(sf.exists)} holds: migration breaks whenever it is)"
                    if sf.exists is not None
                    else ""
                )
                yield self.problem(
                    ERROR,
                    f"{path}.{sf.name}",
                    "field-missing",
                    f"expected field {sf.name!r}, while the destination has no further fields{when}",
                )
                return
            if self.matches(d.name, sf.name, df.name):
                yield from self.field(sf, df, f"{path}.{sf.name}", s.version_id)
                src.advance()
                dst.advance()
                continue
            if (first := first_name(df)) is not None and self.matches(
                struct_name(df), sf.name, first
            ):
                dst.descend()  # the destination moved fields into a substruct; the wire is the same
                continue
            if (first := first_name(sf)) is not None and self.matches(
                struct_name(sf), first, df.name
            ):
                src.descend()  # the source had them in a substruct the destination dropped
                continue
            if df.exists is not None or df.since > read_version:
                dst.advance()  # the destination's field is not on the wire from this source
                continue
            if sf.exists is not None:
                yield self.problem(
                    ERROR,
                    f"{path}.{sf.name}",
                    "field-missing",
                    f"the source sends {sf.name!r} when {_source(sf.exists)} holds, the "
                    "destination has no such field: migration breaks whenever it is sent",
                )
                src.advance()
                continue
            if is_padding(sf) or is_padding(df):
                problem = absorb(src, dst, self.counts_known)
                if problem is not None:
                    yield self.problem(
                        ERROR,
                        f"{path}.{problem}",
                        "unused-size",
                        f"unused size mismatch near {problem!r}",
                    )
                    return
                continue
            if self.may_be_empty(df) and not self.swapped(src, dst, sf, df):
                yield from self.maybe_not_sent(df, path)
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
            if df.exists is None and df.since <= read_version and self.may_be_empty(df):
                yield from self.maybe_not_sent(df, path)
            elif df.exists is None and df.since <= read_version:
                yield self.problem(
                    ERROR,
                    f"{path}.{df.name}",
                    "field-not-sent",
                    f"the destination expects {df.name!r} (since version {df.since}, reading "
                    f"at version {read_version}) but the source at version {s.version_id} "
                    "does not send it",
                )

    def may_be_empty(self, field: Field) -> bool:
        """Whether the destination's *field* can take no bytes, so that a source may leave
        it out: a variable list.  A vmdesc leaves out arrays that had no elements; against
        a dump that states array lengths (QEMU 10.0+) only its variable parts can be such
        an array: a struct or custom field without ``num`` (a scalar is always sent)."""
        kind = field.kind
        if kind.variable:
            return True
        if not self.sent_only:
            return False
        if self.dst_kind != DUMP or not self.counts_known:
            return True
        return kind.struct_description() is not None or kind.size == 0

    def swapped(self, src: Cursor, dst: Cursor, sf: Field, df: Field) -> bool:
        """Whether each list has the other's field later: then they are in another order,
        not a list the source left out (a stream's vmdesc lists only what was sent)."""
        return any(
            self.matches(self.section, f.name, df.name) for f in src.clone().rest()[1:]
        ) and any(self.matches(self.section, sf.name, f.name) for f in dst.clone().rest()[1:])

    def maybe_not_sent(self, df: Field, path: str) -> Iterator[Finding]:
        """Two streams show what each source sent, not what a destination expects: a
        field only the destination's stream has is an array the source sent empty, or
        one the source does not have at all."""
        if self.dst_kind == VMDESC and not df.kind.variable:
            yield self.problem(
                WARNING,
                f"{path}.{df.name}",
                "field-maybe-not-sent",
                f"the destination's stream has {df.name!r}, this source's has not: the load "
                "fails unless it is an array that was empty here",
            )

    def matches(self, desc_name: str, s: str, d: str) -> bool:
        return s == d or self.waivers.renamed(self.section, s, d, desc_name)

    def field(self, sf: Field, df: Field, path: str, version: int) -> Iterator[Finding]:
        if sf.since > df.since:
            yield self.problem(
                ERROR, path, "field-version", f"field version {sf.since} > {df.since}"
            )
        if self.tests_known and _tests_differ(sf.exists, df.exists):
            yield self.problem(ERROR, path, "exists-changed", _exists_reason(sf, df))
        s_struct, d_struct = struct_of(sf.kind), struct_of(df.kind)
        if s_struct is not None:
            if d_struct is None:
                yield self.problem(
                    ERROR,
                    path,
                    "struct-removed",
                    "the destination has no nested description for this field",
                )
                return
            yield from self.descriptions(s_struct, d_struct, f"{path}", nested=True)
        elif d_struct is not None:
            yield self.problem(
                ERROR, path, "struct-added", "the destination expects a nested description here"
            )
            return
        else:
            s_size, d_size = element_size(sf.kind), element_size(df.kind)
            # a dump's size 0 is QEMU's "custom" (virtio, msix): only a vmdesc knows it
            if s_size != d_size and (self.tests_known or 0 not in (s_size, d_size)):
                yield self.problem(
                    ERROR, path, "size-changed", f"size mismatch: {s_size} -> {d_size}"
                )
            elif self.types_known and info_of(sf.kind) != info_of(df.kind):
                yield self.problem(
                    WARNING,
                    path,
                    "kind-changed",
                    f"kind changed from {info_of(sf.kind)} to {info_of(df.kind)}",
                )
        yield from self.counts(sf.kind, df.kind, path)

    def counts(self, s: Kind, d: Kind, path: str) -> Iterator[Finding]:
        """Counts and bounds (each kind says what of another it cannot take), and a
        list that became a single value or the reverse."""
        for rule, reason in s.compare_shape(d):
            yield self.problem(ERROR, path, rule, reason)
        if self.types_known and type(s) is not type(d) and s.is_list != d.is_list:
            yield self.problem(
                ERROR, path, "array-kind", f"{type(s).__name__} became {type(d).__name__}"
            )


def _tests_differ(a: Condition | None, b: Condition | None) -> bool:
    if (a is None) != (b is None):
        return True
    return a is not None and a != b and not _opaque_pair(a, b)


def _opaque_pair(a: Condition | None, b: Condition | None) -> bool:
    """Both tests are QEMU code we cannot see: only their presence can be compared."""
    return a is not None and b is not None and is_opaque(a) and is_opaque(b)


def _exists_reason(sf: Field, df: Field) -> str:
    """When a changed exists-test breaks migration, in words."""
    name = sf.name
    if sf.exists is not None and df.exists is None:
        return (
            f"the source sends {name!r} only when {_source(sf.exists)} holds, the destination "
            "always reads it: migration breaks whenever that test is false (the destination "
            "reads the following bytes as this field)"
        )
    if sf.exists is None and df.exists is not None:
        return (
            f"the source always sends {name!r}, the destination reads it only when "
            f"{_source(df.exists)} holds: migration breaks whenever that test is false"
        )
    return (
        f"the source sends {name!r} when {_source(sf.exists)} holds, the destination reads "
        f"it when {_source(df.exists)} holds: migration breaks whenever the two disagree"
    )


def _source(cond: Condition | None) -> str:
    if cond is None:
        return "none"
    return "QEMU code" if is_opaque(cond) else repr(cond.source)
