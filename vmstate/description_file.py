"""Description files: QEMU-style field tables as TOML data (docs/description-format.md).

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

Reading goes TOML -> cattrs-structured specs (the file's schema, one attrs
class per table shape) -> core :class:`~vmstate.description.Description`.
Every problem is reported with its ``file:line:col``; :func:`check_description_text`
returns all of them, not just the first, so ``vmstate lint`` can list them.
Writing goes the other way: core -> specs -> cattrs-unstructured dicts -> TOML
text with one line per field.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Union

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from vmstate._toml_positions import Positions, index_positions
from vmstate.description import Description, Hooks, Subsection, registered_hooks
from vmstate.errors import DescriptionError
from vmstate.fields import (
    COUNT_TYPES,
    SCALAR_TYPES,
    Array,
    Bitmap,
    Buffer,
    Field,
    Kind,
    QTailQ,
    Scalar,
    Seq,
    Struct,
    Unused,
    Validate,
    VArray,
    VBuffer,
    scalar_kind,
)
from vmstate.predicates import (
    Condition,
    opaque_condition,
    parse_condition,
    registered_predicates,
)

__all__ = [
    "PROBLEM_CODES",
    "Problem",
    "check_description_file",
    "check_description_text",
    "dump_description",
    "load_description_file",
    "load_description_text",
]

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
}
_Path = tuple[str | int, ...]


@attrs.frozen
class Problem:
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


# -- the file's schema ------------------------------------------------------
# One attrs class per table shape; attribute names are the TOML keys.


@attrs.frozen(kw_only=True)
class HooksSpec:
    pre_save: str | None = None
    post_save: str | None = None
    pre_load: str | None = None
    post_load: str | None = None


@attrs.frozen(kw_only=True)
class DescriptionSpec:
    """The keys of a description table besides its ``fields`` and ``subsections``."""

    name: str | None = None  # in [structs.<key>] it defaults to the key
    version_id: int
    minimum_version_id: int = 0
    hooks: HooksSpec = HooksSpec()


@attrs.frozen(kw_only=True)
class SubsectionSpec(DescriptionSpec):
    needed: str | None = None


@attrs.frozen(kw_only=True)
class ScalarSpec:
    type: str


@attrs.frozen(kw_only=True)
class BufferSpec:
    type: str
    size: int
    info: str = "buffer"


@attrs.frozen(kw_only=True)
class VBufferSpec:
    type: str
    size: str
    max_size: int
    multiply: int = 1
    info: str = "buffer"


@attrs.frozen(kw_only=True)
class BitmapSpec:
    type: str
    nbits: int


@attrs.frozen(kw_only=True)
class UnusedSpec:
    type: str
    size: int


@attrs.frozen(kw_only=True)
class ValidateSpec:
    type: str


@attrs.frozen(kw_only=True)
class StructSpec:
    type: str
    struct: str
    version: int | None = None
    info: str = "struct"


@attrs.frozen(kw_only=True)
class ArraySpec:
    type: str
    element: Element
    count: int
    nullable: bool = False


@attrs.frozen(kw_only=True)
class VArraySpec:
    type: str
    element: Element
    count: str
    count_type: str = "uint32"
    max_count: int
    multiply: int = 1
    nullable: bool = False


@attrs.frozen(kw_only=True)
class QTailQSpec:
    type: str
    element: Element


@attrs.frozen(kw_only=True)
class SeqSpec:
    type: str
    elements: tuple[Element, ...]


KindSpec = Union[  # noqa: UP007 -- a runtime union value, used as a cattrs hook key
    ScalarSpec, BufferSpec, VBufferSpec, BitmapSpec, UnusedSpec, ValidateSpec, StructSpec,
    ArraySpec, VArraySpec, QTailQSpec, SeqSpec,
]
#: an element: a scalar type or struct name, or an inline kind table
Element = Union[str, KindSpec]  # noqa: UP007

#: ``type`` values other than scalar type names
KIND_TYPES: dict[str, type[Any]] = {
    "buffer": BufferSpec,
    "vbuffer": VBufferSpec,
    "bitmap": BitmapSpec,
    "unused": UnusedSpec,
    "validate": ValidateSpec,
    "struct": StructSpec,
    "array": ArraySpec,
    "varray": VArraySpec,
    "qtailq": QTailQSpec,
    "seq": SeqSpec,
}


@attrs.frozen(kw_only=True)
class _FieldHead:
    name: str | None = None
    since: int = 0
    exists: str | None = None


@attrs.frozen(kw_only=True)
class FieldSpec:
    """A field table: its own keys plus its kind's keys, flat on one line."""

    name: str | None = None  # "unused" for padding
    kind: KindSpec
    since: int = 0
    exists: str | None = None


class _ValueTypeError(ValueError):
    """A TOML value of the wrong type."""


_TOML_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
                    list: "an array", dict: "a table"}


def _toml_type(value: object) -> str:
    return _TOML_TYPE_NAMES.get(type(value), "a date or time")


def _strict(expected: type[Any]) -> Any:
    """A structure hook that takes only *expected* (cattrs would convert "12" to 12)."""

    def hook(value: Any, _type: Any) -> Any:
        if type(value) is not expected:
            raise _ValueTypeError(f"expected {_TOML_TYPE_NAMES[expected]}, found {_toml_type(value)}")
        return value

    return hook


class _UnknownKind(ValueError):
    """A ``type`` that names no kind and no scalar type."""


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True, omit_if_default=True)
    for primitive in (int, str, bool):
        conv.register_structure_hook(primitive, _strict(primitive))

    def structure_kind(value: Any, _type: Any) -> Any:
        if not isinstance(value, dict):
            raise _ValueTypeError(f"expected a table, found {_toml_type(value)}")
        if "type" not in value:
            raise ClassValidationError("missing type", [_missing("type")], dict)
        name = value["type"]
        if not isinstance(name, str):
            raise ClassValidationError(
                "bad type", [_noted(_ValueTypeError(f"expected a string, found {_toml_type(name)}"),
                                    "type")], dict,
            )
        spec = ScalarSpec if name in SCALAR_TYPES else KIND_TYPES.get(name)
        if spec is None:
            raise ClassValidationError("unknown type", [_noted(_UnknownKind(name), "type")], dict)
        return conv.structure(value, spec)

    def structure_element(value: Any, _type: Any) -> Any:
        return value if isinstance(value, str) else structure_kind(value, _type)

    def structure_field(value: Any, _type: Any) -> FieldSpec:
        if not isinstance(value, dict):
            raise _ValueTypeError(f"expected a table, found {_toml_type(value)}")
        head_keys = {k: v for k, v in value.items() if k in ("name", "since", "exists")}
        errors: list[Exception] = []
        head = kind = None
        try:
            head = conv.structure(head_keys, _FieldHead)
        except ClassValidationError as e:
            errors.extend(e.exceptions)
        try:
            kind = structure_kind({k: v for k, v in value.items() if k not in head_keys}, _type)
        except ClassValidationError as e:
            errors.extend(e.exceptions)
        if errors:
            raise ClassValidationError("bad field", errors, FieldSpec)
        assert head is not None
        return FieldSpec(name=head.name, kind=kind, since=head.since, exists=head.exists)

    def unstructure_field(spec: FieldSpec) -> dict[str, Any]:
        head = conv.unstructure(_FieldHead(name=spec.name, since=spec.since, exists=spec.exists))
        out = {"name": head.pop("name")} if "name" in head else {}
        return out | conv.unstructure(spec.kind) | head

    elements = conv.get_structure_hook(tuple[Element, ...])

    def structure_elements(value: Any, type_: Any) -> Any:
        if not isinstance(value, list):  # cattrs would take a string's characters
            raise _ValueTypeError(f"expected an array, found {_toml_type(value)}")
        return elements(value, type_)

    conv.register_structure_hook_func(lambda t: t == tuple[Element, ...], structure_elements)
    conv.register_structure_hook_func(lambda t: t == KindSpec, structure_kind)
    conv.register_structure_hook_func(lambda t: t == Element, structure_element)
    conv.register_structure_hook(FieldSpec, structure_field)
    conv.register_unstructure_hook_func(
        lambda t: t in (KindSpec, Element), lambda v: v if isinstance(v, str) else conv.unstructure(v)
    )
    conv.register_unstructure_hook(FieldSpec, unstructure_field)
    return conv


def _noted(exc: Exception, key: str) -> Exception:
    exc.__notes__ = [AttributeValidationNote(f"key {key}", key, object)]
    return exc


def _missing(key: str) -> Exception:
    return _noted(KeyError(key), key)


_CONVERTER = _make_converter()


def _structure_errors(exc: BaseException, path: _Path) -> Iterator[tuple[_Path, str, str]]:
    """(path, message, code) of every problem in a cattrs error tree."""
    if isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield (*path, key), f"unknown key {key!r}", "unknown-key"
    elif isinstance(exc, ClassValidationError | IterableValidationError):
        for sub in exc.exceptions:
            note = next(iter(getattr(sub, "__notes__", ())), None)
            if isinstance(note, AttributeValidationNote):
                if isinstance(sub, KeyError):
                    yield path, f"missing key {note.name!r}", "missing-key"
                else:
                    yield from _structure_errors(sub, (*path, note.name))
            elif isinstance(note, IterableValidationNote):
                yield from _structure_errors(sub, (*path, note.index))
            else:
                yield from _structure_errors(sub, path)
    elif isinstance(exc, _UnknownKind):
        yield path, f"unknown type {exc.args[0]!r}: not a scalar type or a kind", "unknown-type"
    elif isinstance(exc, _ValueTypeError):
        yield path, f"{_key_name(path)}: {exc}", "bad-type"
    else:
        yield path, f"{_key_name(path)}: {exc}", "bad-value"


def _without(value: Any, paths: list[_Path]) -> Any:
    """A copy of *value* without the keys at *paths*."""
    drop = {p[0] for p in paths if len(p) == 1}
    deeper: dict[str | int, list[_Path]] = {}
    for p in paths:
        if len(p) > 1:
            deeper.setdefault(p[0], []).append(p[1:])
    if isinstance(value, dict):
        return {k: _without(v, deeper.get(k, [])) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [_without(v, deeper.get(i, [])) for i, v in enumerate(value)]
    return value


def _key_name(path: _Path) -> str:
    for part in reversed(path):
        if isinstance(part, str):
            return part
    return "value"


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
        self.problems: list[Problem] = []
        self.raw_structs: dict[str, Any] = {}
        self.structs: dict[str, Description | None] = {}
        self.building: list[str] = []

    def problem(self, path: _Path, message: str, code: str, severity: Severity = "error") -> None:
        line, col = self.positions.of(path)
        self.problems.append(Problem(self.source, line, col, message, code, severity))

    def structure(self, value: Any, spec: type[Any], path: _Path) -> Any:
        """*value* as *spec*, or None after reporting why not.

        Unknown keys are reported, then ignored, so that the checks that need
        the rest of the table still run.
        """
        try:
            return _CONVERTER.structure(value, spec)
        except (ClassValidationError, IterableValidationError, ValueError) as exc:
            unknown = []
            for where, message, code in _structure_errors(exc, path):
                self.problem(where, message, code)
                if code == "unknown-key":
                    unknown.append(where[len(path) :])
        if not unknown:
            return None
        try:
            return _CONVERTER.structure(_without(value, unknown), spec)
        except (ClassValidationError, IterableValidationError, ValueError):
            return None  # reported above

    def read(self) -> Description | None:
        for key in self.data:
            if key not in ("description", "structs"):
                self.problem((key,), f"unknown key {key!r} (a file has [description] and [structs])",
                             "unknown-key")
        structs = self.data.get("structs", {})
        if not isinstance(structs, dict):
            self.problem(("structs",), f"structs: expected a table, found {_toml_type(structs)}",
                         "bad-type")
        else:
            self.raw_structs = structs
        for key in self.raw_structs:
            if key in SCALAR_TYPES or key in KIND_TYPES:
                self.problem(("structs", key), f"struct name {key!r} is a type name", "bad-value")
        if "description" not in self.data:
            self.problem((), "missing [description] table", "missing-key")
            top = None
        else:
            top = self.description(self.data["description"], ("description",), "description")[0]
        for key in self.raw_structs:
            if key not in self.structs and key not in SCALAR_TYPES and key not in KIND_TYPES:
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
            if key not in self.raw_structs or key in SCALAR_TYPES or key in KIND_TYPES:
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
            self.problem(path, f"{_key_name(path)}: expected a table, found {_toml_type(table)}",
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
            self.problem(path, f"{_key_name(path)}: expected an array, found {_toml_type(value)}",
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
            if not isinstance(spec.kind, UnusedSpec):
                self.problem(path, "missing key 'name'", "missing-key")
                return None
            name = "unused"
        if "/" in name:
            self.problem((*path, "name"), f"field name {name!r} contains '/'", "bad-value")
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
        elif isinstance(spec.kind, ValidateSpec):
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
        for name in sorted(cond.names - {"version_id"}):
            self.check_reference(name, path, scope, "condition")
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

    def check_count(self, name: str, path: _Path, scope: _Scope, count_type: str | None) -> None:
        field = self.check_reference(name, path, scope, "count" if count_type else "size")
        if field is None:
            return
        kind = field.kind
        if not (isinstance(kind, Scalar) and SCALAR_TYPES[kind.info][0].lstrip("<") in "bBhHiIqQ"):
            self.problem(path, f"{name!r} is a {kind.info} field, not an integer", "bad-reference")
        elif count_type is not None and kind.info.split()[0].removeprefix("le_") != count_type:
            self.problem(path, f"{name!r} is a {kind.info} field but count_type is {count_type}",
                         "count-type", "warning")

    def kind(self, spec: Any, path: _Path, scope: _Scope | None) -> Kind | None:
        """The core kind of *spec*; *scope* is None for elements (no earlier fields)."""
        ok = True
        for key in ("size", "max_size", "nbits", "count", "max_count"):
            value = getattr(spec, key, None)
            if isinstance(value, int) and value < 0:
                self.problem((*path, key), f"{key} must be at least 0", "bad-value")
                ok = False
        if getattr(spec, "multiply", 1) < 1:
            self.problem((*path, "multiply"), "multiply must be at least 1", "bad-value")
            ok = False
        if isinstance(spec, VArraySpec) and spec.count_type not in COUNT_TYPES:
            self.problem((*path, "count_type"),
                         f"count_type must be one of {', '.join(sorted(COUNT_TYPES))}", "bad-value")
            ok = False
        if scope is not None and isinstance(spec, VArraySpec):
            self.check_count(spec.count, (*path, "count"), scope, spec.count_type)
        if scope is not None and isinstance(spec, VBufferSpec):
            self.check_count(spec.size, (*path, "size"), scope, None)
        # resolve every reference (reporting its problems) before giving up
        element = self.element(spec.element, (*path, "element")) if hasattr(spec, "element") else None
        elements = [self.element(e, (*path, "elements", i))
                    for i, e in enumerate(getattr(spec, "elements", ()))]
        struct = self.struct(spec.struct, (*path, "struct")) if isinstance(spec, StructSpec) else None
        if not ok or (hasattr(spec, "element") and element is None) or None in elements or (
            isinstance(spec, StructSpec) and struct is None
        ):
            return None
        try:
            return self.build_kind(spec, element, [e for e in elements if e is not None], struct)
        except (DescriptionError, ValueError, TypeError) as e:
            message = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
            self.problem(path, message, "bad-value")
            return None

    @staticmethod
    def build_kind(spec: Any, element: Kind | None, elements: list[Kind],
                   struct: Description | None) -> Kind:
        """The core kind of a checked *spec* whose references are resolved."""
        match spec:
            case ScalarSpec():
                return scalar_kind(spec.type)
            case BufferSpec():
                return Buffer(spec.size, spec.info)
            case VBufferSpec():
                return VBuffer(spec.size, spec.max_size, spec.multiply, spec.info)
            case BitmapSpec():
                return Bitmap(spec.nbits)
            case UnusedSpec():
                return Unused(spec.size)
            case ValidateSpec():
                return Validate()
            case StructSpec() if struct is not None:
                return Struct(struct, spec.version, spec.info)
            case ArraySpec() if element is not None:
                return Array(element, spec.count, spec.nullable)
            case VArraySpec() if element is not None:
                return VArray(element, spec.count, spec.max_count, spec.count_type, spec.multiply,
                              spec.nullable)
            case QTailQSpec() if element is not None:
                return QTailQ(element)
            case SeqSpec():
                return Seq(tuple(elements))
        raise AssertionError(f"unhandled spec {spec!r}")

    def element(self, ref: Element, path: _Path) -> Kind | None:
        if isinstance(ref, str):
            if ref in SCALAR_TYPES:
                return scalar_kind(ref)
            desc = self.struct(ref, path)
            return None if desc is None else Struct(desc)
        return self.kind(ref, path, None)


_TOML_ERROR_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def check_description_text(text: str, source: str = "<string>") -> list[Problem]:
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


def check_description_file(path: str | os.PathLike[str]) -> list[Problem]:
    """Every problem of the description file at *path*, in file order."""
    return check_description_text(_read_file(path), str(path))


def load_description_file(path: str | os.PathLike[str]) -> Description:
    """The description in the file at *path*; :class:`DescriptionError` at its first error."""
    return load_description_text(_read_file(path), str(path))


def _read_file(path: str | os.PathLike[str]) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise DescriptionError(f"cannot read: {e.strerror}", location=str(path)) from None
    if len(data) > MAX_FILE_BYTES:
        raise DescriptionError(f"larger than {MAX_FILE_BYTES} bytes", location=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DescriptionError(f"not UTF-8 (byte {e.start})", location=str(path)) from None


def _read(text: str, source: str) -> tuple[Description | None, list[Problem]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = _TOML_ERROR_AT.search(str(e))
        line, col = (int(m.group(1)), int(m.group(2))) if m else (text.count("\n") + 1, 1)
        message = _TOML_ERROR_AT.sub("", str(e)).strip()
        return None, [Problem(source, line, col, f"not TOML: {message}", "toml-syntax")]
    reader = _Reader(source, index_positions(text), data)
    desc = reader.read()
    problems = sorted(reader.problems, key=lambda p: (p.line, p.col))
    return (desc if reader.errors() == 0 else None), problems


# -- writing ------------------------------------------------------------------


class _Writer:
    """Core descriptions back to specs; nested structs become named [structs] entries."""

    def __init__(self) -> None:
        self.struct_keys: dict[Description, str] = {}
        self.structs: dict[str, dict[str, Any]] = {}

    def description(self, desc: Description, subsection: Subsection | None = None,
                    key: str | None = None) -> dict[str, Any]:
        """The table of *desc*: a subsection's when *subsection*, a struct's under *key*."""
        head: dict[str, Any] = {
            "name": None if desc.name == key else desc.name,
            "version_id": desc.version_id,
            "minimum_version_id": desc.minimum_version_id,
            "hooks": HooksSpec(pre_save=desc.hooks.pre_save, post_save=desc.hooks.post_save,
                               pre_load=desc.hooks.pre_load, post_load=desc.hooks.post_load),
        }
        if subsection is None:
            spec = _CONVERTER.unstructure(DescriptionSpec(**head))
        else:
            needed = None if subsection.needed is None else subsection.needed.source
            spec = _CONVERTER.unstructure(SubsectionSpec(**head, needed=needed))
        order = ("name", "version_id", "minimum_version_id", "hooks", "needed")
        out = {key: spec[key] for key in order if key in spec}
        if desc.fields:
            out["fields"] = [_CONVERTER.unstructure(self.field(f)) for f in desc.fields]
        if desc.subsections:
            out["subsections"] = [self.description(s.description, s) for s in desc.subsections]
        return out

    def field(self, field: Field) -> FieldSpec:
        padding = isinstance(field.kind, Unused) and field.name == "unused"
        return FieldSpec(
            name=None if padding else field.name,
            kind=self.kind(field.kind),
            since=field.since,
            exists=None if field.exists is None else field.exists.source,
        )

    def kind(self, kind: Kind) -> KindSpec:
        match kind:
            case Scalar():
                return ScalarSpec(type=kind.info)
            case Buffer():
                return BufferSpec(type="buffer", size=kind.size, info=kind.info)
            case VBuffer():
                return VBufferSpec(type="vbuffer", size=kind.size_field, max_size=kind.max_size,
                                   multiply=kind.multiply, info=kind.info)
            case Bitmap():
                return BitmapSpec(type="bitmap", nbits=kind.nbits)
            case Unused():
                return UnusedSpec(type="unused", size=kind.size)
            case Validate():
                return ValidateSpec(type="validate")
            case Struct():
                return StructSpec(type="struct", struct=self.struct_key(kind.description),
                                  version=kind.version, info=kind.info)
            case Array():
                return ArraySpec(type="array", element=self.element(kind.element),
                                 count=kind.count, nullable=kind.nullable)
            case VArray():
                return VArraySpec(type="varray", element=self.element(kind.element),
                                  count=kind.count_field, max_count=kind.max_count,
                                  count_type=kind.count_type, multiply=kind.multiply,
                                  nullable=kind.nullable)
            case QTailQ():
                return QTailQSpec(type="qtailq", element=self.element(kind.element))
            case Seq():
                return SeqSpec(type="seq", elements=tuple(self.element(e) for e in kind.elements))
        raise DescriptionError(f"{type(kind).__name__} has no form in description files")

    def element(self, kind: Kind) -> Element:
        if isinstance(kind, Scalar):
            return kind.info
        if isinstance(kind, Struct) and kind.version is None and kind.info == "struct":
            return self.struct_key(kind.description)
        return self.kind(kind)

    def struct_key(self, desc: Description) -> str:
        key = self.struct_keys.get(desc)
        if key is None:
            key, n = desc.name, 1
            while key in self.structs or key in SCALAR_TYPES or key in KIND_TYPES:
                n += 1
                key = f"{desc.name}#{n}"
            self.struct_keys[desc] = key
            self.structs[key] = {}  # reserve the key before nested structs take theirs
            self.structs[key] = self.description(desc, key=key)
        return key


def dump_description(desc: Description) -> str:
    """*desc* as description-file text (TOML), one line per field."""
    writer = _Writer()
    top = writer.description(desc)
    lines: list[str] = []
    _write_table(lines, ["description"], top, array=False)
    for key, table in writer.structs.items():
        lines.append("")
        _write_table(lines, ["structs", key], table, array=False)
    return "\n".join(lines) + "\n"


def _write_table(lines: list[str], path: list[str], table: dict[str, Any], array: bool) -> None:
    header = ".".join(_toml_key(k) for k in path)
    lines.append(f"[[{header}]]" if array else f"[{header}]")
    for key, value in table.items():
        if key == "fields":
            lines.append("fields = [")
            lines.extend(f"  {_toml_value(f)}," for f in value)
            lines.append("]")
        elif key != "subsections":
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for sub in table.get("subsections", []):
        lines.append("")
        _write_table(lines, [*path, "subsections"], sub, array=True)


_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = []
    for c in text:
        if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}")
