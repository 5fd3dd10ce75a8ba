"""Reading description files: QEMU-style field tables as TOML data (docs/description-format.md).

A device type is described by data, not code, so that descriptions can be
shipped, reviewed and checked like QEMU's ``VMStateDescription`` tables::

    [description]
    name = "vfio-pci-config"
    version_id = 2
    fields = [
      { name = "vendor_id", type = "uint16 equal" },
      { name = "vectors", type = "varray", element = "msix_entry", count = "nr_vectors",
        max_count = 2048 },
    ]

Reading goes TOML -> cattrs-structured specs (:mod:`.schema`; each kind brings
its own) -> core :class:`~vmstate.description.Description`.  Every problem is
reported with its ``file:line:col``; :func:`check_description_text` returns all
of them, not just the first, so ``vmstate lint`` can list them.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any, Literal

import attrs
from cattrs.errors import ClassValidationError, IterableValidationError

from vmstate.description import Description, Hooks, Subsection
from vmstate.description_file.positions import Positions, index_positions
from vmstate.description_file.schema import (
    CONVERTER,
    DescriptionSpec,
    FieldSpec,
    HooksSpec,
    SubsectionSpec,
    key_name,
    structure_errors,
    toml_type,
    without,
)
from vmstate.errors import DescriptionError
from vmstate.fields import Field
from vmstate.hooks import registered_hooks
from vmstate.interpreter.context import DEFAULT_LIMITS
from vmstate.kinds.base import Element, Kind
from vmstate.kinds.registry import kind_class
from vmstate.kinds.scalar import SCALAR_TYPES, scalar_kind
from vmstate.kinds.struct import Struct
from vmstate.predicates import (
    Condition,
    opaque_condition,
    parse_condition,
    registered_predicates,
)

#: description files are small; a bigger one is a mistake, not a description
MAX_FILE_BYTES = 4 << 20
#: the opaque-test marker of vmstate.predicates, as written in files
_OPAQUE_PREFIX = "?"

Severity = Literal["error", "warning"]

#: every problem code, with what it means (``vmstate lint`` and the docs list them)
PROBLEM_CODES: dict[str, str] = {
    "toml-syntax": "the file is not TOML",
    "unknown-key": "a key the format does not have (here)",
    "missing-key": "a required key is missing",
    "bad-type": "a value of the wrong TOML type",
    "bad-value": "a value out of range or not allowed",
    "unknown-type": "a field type that is no kind and no scalar type",
    "unknown-struct": "a reference to a struct not in [structs]",
    "struct-cycle": "a struct that contains itself",
    "bad-condition": "a condition that does not parse",
    "condition-type": "a condition that uses a field's value where it cannot (bytes in arithmetic...)",
    "bad-version": "minimum_version_id above version_id",
    "since-above-version": "a field newer than its description",
    "duplicate-field": "two fields kept in state under one name",
    "duplicate-subsection": "two subsections of one name",
    "subsection-name": "a subsection whose name does not start with its parent's",
    "subsection-prefix": "a subsection whose name is a prefix of a sibling's: QEMU loads neither",
    "bad-description": "a description the core rejects",
    "reference-later": "a count, size or condition that names a later field",
    "bad-reference": "a count or size that names a field that is not an integer",
    "reference-unknown": "(warning) a name that is no earlier field: it must come from held state",
    "count-type": "(warning) count_type differs from the count field's type",
    "unknown-predicate": "(warning) a predicate not registered (yet)",
    "unknown-hook": "(warning) a hook not registered (yet)",
    "opaque-condition": "(warning) a QEMU test that was not exported",
    "unused-struct": "(warning) a struct nothing refers to",
    "over-limit": "a fixed count or size larger than any load accepts (vmstate's Limits)",
    "max-over-limit": "(warning) a max_count or max_size larger than any load accepts",
    "unreadable": "the file cannot be read, is larger than 4 MiB or is not UTF-8 (reported alone)",
}
#: what a load accepts at most (the defaults of vmstate's Limits): count keys in elements,
#: size keys in bytes, nbits in bits
_LIMITS = {
    "count": DEFAULT_LIMITS.max_elements,
    "max_count": DEFAULT_LIMITS.max_elements,
    "size": DEFAULT_LIMITS.max_buffer,
    "max_size": DEFAULT_LIMITS.max_buffer,
    "nbits": DEFAULT_LIMITS.max_buffer * 8,
}
_Path = tuple[str | int, ...]


@attrs.frozen
class Diagnostic:
    """One thing wrong in a description file, where it is written.

    Errors stop a file from loading; warnings (an unknown predicate or hook,
    a count taken from held state...) do not, but ``vmstate lint`` shows them.
    """

    source: str
    line: int
    col: int
    message: str
    code: str
    severity: Severity = "error"

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}:{self.col}"

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message} [{self.code}]"



# -- reading ------------------------------------------------------------------


@attrs.frozen
class _Scope:
    """Names a condition or count can see, and what they are."""

    earlier: Mapping[str, Field]
    #: names of earlier field tables, built or not (a broken one is reported already)
    earlier_names: frozenset[str]
    later: frozenset[str]
    outer: Mapping[str, Field]


class _Reader:
    """Builds one file's description, recording every problem with its position."""

    def __init__(self, source: str, positions: Positions, data: dict[str, Any]) -> None:
        self.source = source
        self.positions = positions
        self.data = data
        self.problems: list[Diagnostic] = []
        self.raw_structs: dict[str, Any] = {}
        self.structs: dict[str, Description | None] = {}
        self.building: list[str] = []

    def problem(self, path: _Path, message: str, code: str, severity: Severity = "error") -> None:
        line, col = self.positions.of(path)
        self.problems.append(Diagnostic(self.source, line, col, message, code, severity))

    def structure(self, value: Any, spec: type[Any], path: _Path) -> Any:
        """*value* as *spec*, or None after reporting why not.

        Unknown keys are reported, then ignored, so that the checks that need
        the rest of the table still run.
        """
        try:
            return CONVERTER.structure(value, spec)
        except (ClassValidationError, IterableValidationError, ValueError) as exc:
            unknown = []
            for where, message, code in structure_errors(exc, path):
                self.problem(where, message, code)
                if code == "unknown-key":
                    unknown.append(where[len(path) :])
        if not unknown:
            return None
        try:
            return CONVERTER.structure(without(value, unknown), spec)
        except (ClassValidationError, IterableValidationError, ValueError):
            return None  # reported above

    def read(self) -> Description | None:
        for key in self.data:
            if key not in ("description", "structs"):
                self.problem((key,), f"unknown key {key!r} (a file has [description] and [structs])",
                             "unknown-key")
        structs = self.data.get("structs", {})
        if not isinstance(structs, dict):
            self.problem(("structs",), f"structs: expected a table, found {toml_type(structs)}",
                         "bad-type")
        else:
            self.raw_structs = structs
        for key in self.raw_structs:
            if kind_class(key) is not None:
                self.problem(("structs", key), f"struct name {key!r} is a type name", "bad-value")
        if "description" not in self.data:
            self.problem((), "missing [description] table", "missing-key")
            top = None
        else:
            top = self.description(self.data["description"], ("description",), "description")[0]
        for key in self.raw_structs:
            if key not in self.structs and kind_class(key) is None:
                self.problem(("structs", key), f"struct {key!r} is never used", "unused-struct",
                             "warning")
                self.struct(key, ("structs", key))
        return top

    def struct(self, key: str, path: _Path) -> Description | None:
        """The description of struct *key*, built once; *path* is the reference."""
        if key in self.building:
            cycle = " -> ".join([*self.building[self.building.index(key):], key])
            self.problem(path, f"struct {key!r} contains itself: {cycle}", "struct-cycle")
            return None
        if key not in self.structs:
            if key not in self.raw_structs or kind_class(key) is not None:
                known = ", ".join(sorted(self.raw_structs)) or "none"
                self.problem(path, f"unknown struct {key!r} (structs: {known})", "unknown-struct")
                return None
            self.building.append(key)
            self.structs[key] = self.description(
                self.raw_structs[key], ("structs", key), "struct", default_name=key
            )[0]
            self.building.pop()
        return self.structs[key]

    def description(
        self,
        table: Any,
        path: _Path,
        role: Literal["description", "struct", "subsection"],
        default_name: str | None = None,
        outer: Mapping[str, Field] | None = None,
    ) -> tuple[Description | None, Any]:
        """The description of *table* (None when it has errors) and its head spec."""
        if not isinstance(table, dict):
            self.problem(path, f"{key_name(path)}: expected a table, found {toml_type(table)}",
                         "bad-type")
            return None, None
        before = self.errors()
        head = self.structure(
            {k: v for k, v in table.items() if k not in ("fields", "subsections")},
            SubsectionSpec if role == "subsection" else DescriptionSpec,
            path,
        )
        name = head.name if head is not None and head.name is not None else default_name
        if head is not None:
            if name is None:
                self.problem(path, "missing key 'name'", "missing-key")
            if head.minimum_version_id > head.version_id:
                self.problem((*path, "minimum_version_id"),
                             f"minimum_version_id {head.minimum_version_id} is above version_id "
                             f"{head.version_id}", "bad-version")
            self.check_hooks(head.hooks, (*path, "hooks"))
        fields = self.fields(table.get("fields", []), (*path, "fields"), head, outer or {})
        stored = {f.name: f for f in fields if f.stored}
        subsections = []
        seen: set[str] = set()
        for i, sub_table in enumerate(self.table_list(table.get("subsections", []),
                                                      (*path, "subsections"))):
            sub = self.subsection(sub_table, (*path, "subsections", i), name, stored, outer or {})
            if sub is not None:
                if sub.name in seen:
                    self.problem((*path, "subsections", i, "name"),
                                 f"subsection {sub.name!r} appears twice", "duplicate-subsection")
                shadow = next((o for o in seen if sub.name.startswith(o) or o.startswith(sub.name)),
                              None)
                if shadow is not None and shadow != sub.name:
                    short, long = sorted((shadow, sub.name), key=len)
                    self.problem((*path, "subsections", i, "name"),
                                 f"subsection {short!r} is a prefix of {long!r}: QEMU's loader "
                                 f"takes {long!r} for a subsection of {short!r} and fails",
                                 "subsection-prefix")
                seen.add(sub.name)
                subsections.append(sub)
        if head is None or name is None or self.errors() > before:
            return None, head
        hooks = Hooks(head.hooks.pre_save, head.hooks.post_save, head.hooks.pre_load,
                      head.hooks.post_load)
        try:
            desc = Description(name, head.version_id, head.minimum_version_id, fields,
                               subsections, hooks)
        except DescriptionError as e:
            self.problem(path, e.message, "bad-description")
            return None, head
        return desc, head

    def errors(self) -> int:
        return sum(p.severity == "error" for p in self.problems)

    def table_list(self, value: Any, path: _Path) -> list[Any]:
        if not isinstance(value, list):
            self.problem(path, f"{key_name(path)}: expected an array, found {toml_type(value)}",
                         "bad-type")
            return []
        return value

    def subsection(
        self, table: Any, path: _Path, parent: str | None, parent_fields: Mapping[str, Field],
        parent_outer: Mapping[str, Field],
    ) -> Subsection | None:
        """A subsection; its ``needed`` sees the parent's fields, as on save."""
        desc, head = self.description(table, path, "subsection", outer=parent_fields)
        if head is None:
            return None
        if head.name is not None and parent is not None and not (
            head.name.startswith(parent) and len(head.name) > len(parent)
        ):
            self.problem((*path, "name"),
                         f"subsection {head.name!r} does not start with its parent's name "
                         f"{parent!r}: QEMU would not look for it", "subsection-name")
        needed = None
        if head.needed is not None:
            scope = _Scope(parent_fields, frozenset(parent_fields), frozenset(), parent_outer)
            needed = self.condition(head.needed, (*path, "needed"), scope)
            if needed is None:
                return None
        return None if desc is None else Subsection(desc, needed)

    def check_hooks(self, hooks: HooksSpec, path: _Path) -> None:
        known = registered_hooks()
        for key, name in attrs.asdict(hooks).items():
            if name is not None and name not in known:
                self.problem((*path, key), f"no hook named {name!r} is registered", "unknown-hook",
                             "warning")

    def fields(
        self, value: Any, path: _Path, head: DescriptionSpec | None, outer: Mapping[str, Field]
    ) -> list[Field]:
        tables = self.table_list(value, path)
        names = [t.get("name") if isinstance(t, dict) else None for t in tables]
        earlier: dict[str, Field] = {}
        first_at: dict[str, int] = {}
        out = []
        for i, table in enumerate(tables):
            scope = _Scope(
                dict(earlier),
                frozenset(n for n in names[:i] if isinstance(n, str)),
                frozenset(n for n in names[i + 1 :] if isinstance(n, str)),
                outer,
            )
            field = self.field(table, (*path, i), scope, head)
            if field is None:
                continue
            if field.stored:
                if field.name in first_at:
                    line = self.positions.of((*path, first_at[field.name]))[0]
                    self.problem((*path, i, "name"),
                                 f"field {field.name!r} appears twice (first on line {line})",
                                 "duplicate-field")
                first_at.setdefault(field.name, i)
                earlier[field.name] = field
            out.append(field)
        return out

    def field(self, table: Any, path: _Path, scope: _Scope, head: DescriptionSpec | None) -> Field | None:
        spec: FieldSpec | None = self.structure(table, FieldSpec, path)
        if spec is None:
            return None
        kind = self.kind(spec.kind, path, scope)
        name = spec.name
        if name is None:
            if not kind_class(spec.kind.type).anonymous:
                self.problem(path, "missing key 'name'", "missing-key")
                return None
            name = "unused"
        if spec.since < 0:
            self.problem((*path, "since"), "since must be at least 0", "bad-value")
        if head is not None and spec.since > head.version_id:
            self.problem((*path, "since"),
                         f"field {name!r} appears in version {spec.since}, above the "
                         f"description's version_id {head.version_id}", "since-above-version")
        exists = None
        if spec.exists is not None:
            exists = self.condition(spec.exists, (*path, "exists"), scope)
            if exists is None:
                return None
        elif kind_class(spec.kind.type).validates:
            self.problem(path, f"validate field {name!r} needs an exists test", "missing-key")
            return None
        if kind is None:
            return None
        return Field(name, kind, spec.since, exists)

    def condition(self, source: str, path: _Path, scope: _Scope) -> Condition | None:
        if source.startswith(_OPAQUE_PREFIX):
            self.problem(path, "an opaque test (QEMU code that was not exported): loads need an "
                         "opaque= callback", "opaque-condition", "warning")
            return opaque_condition(source[len(_OPAQUE_PREFIX):])
        try:
            cond = parse_condition(source)
        except DescriptionError as e:
            self.problem(path, f"bad condition {source!r}: {e.message}", "bad-condition")
            return None
        known = registered_predicates()
        for call in sorted(cond.calls - known):
            self.problem(path, f"no predicate named {call!r} is registered", "unknown-predicate",
                         "warning")
        types = {}
        for name in sorted(cond.names - {"version_id"}):
            field = self.check_reference(name, path, scope, "condition")
            if field is not None:
                types[name] = field.kind.value_type
        for message in cond.type_problems(types):
            self.problem(path, f"condition {source!r}: {message}", "condition-type")
        return cond

    def check_reference(self, name: str, path: _Path, scope: _Scope, what: str) -> Field | None:
        """The field *name* refers to when it is earlier or the parent's; report otherwise."""
        if name in scope.earlier:
            return scope.earlier[name]
        if name in scope.outer:
            return scope.outer[name]
        if name in scope.earlier_names:
            return None
        if name in scope.later:
            self.problem(path, f"{what} refers to {name!r}, which comes later: it has no value yet "
                         "when loading", "reference-later")
        else:
            self.problem(path, f"{what} refers to {name!r}, which is not an earlier field: it must "
                         "come from held state", "reference-unknown", "warning")
        return None

    def check_count(self, name: str, path: _Path, scope: _Scope, key: str,
                    count_type: str | None) -> None:
        field = self.check_reference(name, path, scope, key)
        if field is None:
            return
        kind = field.kind
        if not kind.is_integer:
            self.problem(path, f"{name!r} is a {kind.info} field, not an integer", "bad-reference")
        elif count_type is not None and kind.info.split()[0].removeprefix("le_") != count_type:
            self.problem(path, f"{name!r} is a {kind.info} field but {key}_type is {count_type}",
                         "count-type", "warning")

    def kind(self, spec: Any, path: _Path, scope: _Scope | None) -> Kind | None:
        """The core kind of *spec*; *scope* is None for elements (no earlier fields)."""
        cls = kind_class(spec.type)
        assert cls is not None  # the converter only makes specs of known types
        ok = True
        for key in ("size", "max_size", "nbits", "count", "max_count"):
            value = getattr(spec, key, None)
            if isinstance(value, int) and value < 0:
                self.problem((*path, key), f"{key} must be at least 0", "bad-value")
                ok = False
            elif isinstance(value, int) and value > _LIMITS[key]:
                refused = f"{key} {value} is above the {_LIMITS[key]} a load accepts"
                if key.startswith("max_"):
                    message = f"{refused}: longer data is refused all the same"
                    self.problem((*path, key), message, "max-over-limit", "warning")
                else:
                    self.problem((*path, key), f"{refused}: this field never loads", "over-limit")
                    ok = False
        if getattr(spec, "multiply", 1) < 1:
            self.problem((*path, "multiply"), "multiply must be at least 1", "bad-value")
            ok = False
        for key, message in cls.spec_problems(spec):
            self.problem((*path, key), message, "bad-value")
            ok = False
        if scope is not None:
            for key, name, count_type in cls.spec_references(spec):
                self.check_count(name, (*path, key), scope, key, count_type)
        # resolve every reference (reporting its problems) before giving up
        resolved = _Resolved()
        if hasattr(spec, "element"):
            resolved.element = self.element(spec.element, (*path, "element"))
            ok = ok and resolved.element is not None
        if hasattr(spec, "elements"):
            elements = [self.element(e, (*path, "elements", i))
                        for i, e in enumerate(spec.elements)]
            resolved.elements = [e for e in elements if e is not None]
            ok = ok and None not in elements
        if hasattr(spec, "struct"):
            resolved.struct = self.struct(spec.struct, (*path, "struct"))
            ok = ok and resolved.struct is not None
        if not ok:
            return None
        try:
            return cls.from_spec(spec, resolved)
        except (DescriptionError, ValueError, TypeError) as e:
            message = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
            self.problem(path, message, "bad-value")
            return None

    def element(self, ref: Element, path: _Path) -> Kind | None:
        """A scalar type or struct named by *ref*, or the kind of its inline table."""
        if isinstance(ref, str):
            if ref in SCALAR_TYPES:
                return scalar_kind(ref)
            desc = self.struct(ref, path)
            return None if desc is None else Struct(desc)
        return self.kind(ref, path, None)


@attrs.define
class _Resolved:
    """The references of one kind table, resolved (see Kind.from_spec)."""

    element: Kind | None = None
    elements: list[Kind] = attrs.Factory(list)
    struct: Description | None = None


_TOML_ERROR_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def check_description_text(text: str, source: str = "<string>") -> list[Diagnostic]:
    """Every problem of the description file *text*, in file order."""
    return _read(text, source)[1]


def load_description_text(text: str, source: str = "<string>") -> Description:
    """The description in *text*; :class:`DescriptionError` at its first error."""
    desc, problems = _read(text, source)
    for problem in problems:
        if problem.severity == "error":
            raise DescriptionError(f"{problem.message} [{problem.code}]", location=problem.location)
    assert desc is not None
    return desc


def check_description_file(path: str | os.PathLike[str]) -> list[Diagnostic]:
    """Every problem of the description file at *path*, in file order; a file that cannot
    be read as text is one problem, where reading stopped."""
    text = _read_file(path)
    if isinstance(text, Diagnostic):
        return [text]
    return check_description_text(text, str(path))


def load_description_file(path: str | os.PathLike[str]) -> Description:
    """The description in the file at *path*; :class:`DescriptionError` at its first error."""
    text = _read_file(path)
    if isinstance(text, Diagnostic):
        raise DescriptionError(text.message, location=str(path))
    return load_description_text(text, str(path))


def _read_file(path: str | os.PathLike[str]) -> str | Diagnostic:
    """The text of the file at *path* (``-`` is standard input), or why there is none."""
    source = os.fspath(path)
    try:
        with open(os.dup(0) if source == "-" else path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        return Diagnostic(source, 1, 1, f"cannot read: {e.strerror}", "unreadable")
    if len(data) > MAX_FILE_BYTES:
        return Diagnostic(source, 1, 1, f"larger than {MAX_FILE_BYTES} bytes", "unreadable")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        message = f"not UTF-8: byte {data[e.start]:#04x} at offset {e.start}"
        return Diagnostic(source, line, col, message, "unreadable")


def _read(text: str, source: str) -> tuple[Description | None, list[Diagnostic]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = _TOML_ERROR_AT.search(str(e))
        line, col = (int(m.group(1)), int(m.group(2))) if m else (text.count("\n") + 1, 1)
        message = _TOML_ERROR_AT.sub("", str(e)).strip()
        return None, [Diagnostic(source, line, col, f"not TOML: {message}", "toml-syntax")]
    except RecursionError:  # tomllib reads nested arrays and tables recursively
        return None, [Diagnostic(source, 1, 1, "not TOML: nested too deeply", "toml-syntax")]
    reader = _Reader(source, index_positions(text), data)
    desc = reader.read()
    problems = sorted(reader.problems, key=lambda p: (p.line, p.col))
    return (desc if reader.errors() == 0 else None), problems


