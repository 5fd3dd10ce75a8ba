"""The file's schema: description, subsection and field tables as attrs specs, and the
cattrs converter that checks TOML data against them.

A field table is its own keys (``name``, ``since``, ``exists``) plus the keys of
its kind, flat on one line; each kind brings its own spec class
(``Kind.Spec``, found through :mod:`vmstate.kinds.registry` by ``type``), so a
new kind needs nothing here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from vmstate.kinds.base import Element
from vmstate.kinds.registry import kind_class

Path = tuple[str | int, ...]


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
class _FieldHead:
    name: str | None = None
    since: int = 0
    exists: str | None = None


@attrs.frozen(kw_only=True)
class FieldSpec:
    """A field table: its own keys plus its kind's spec (any ``Kind.Spec``)."""

    name: str | None = None  # "unused" for padding
    kind: Any
    since: int = 0
    exists: str | None = None


class ValueTypeError(ValueError):
    """A TOML value of the wrong type."""


class UnknownKind(ValueError):
    """A ``type`` that names no kind and no scalar type."""


_TOML_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
                    list: "an array", dict: "a table"}


def toml_type(value: object) -> str:
    return _TOML_TYPE_NAMES.get(type(value), "a date or time")


def _strict(expected: type[Any]) -> Any:
    """A structure hook that takes only *expected* (cattrs would convert "12" to 12)."""

    def hook(value: Any, _type: Any) -> Any:
        if type(value) is not expected:
            raise ValueTypeError(f"expected {_TOML_TYPE_NAMES[expected]}, found {toml_type(value)}")
        return value

    return hook


def _noted(exc: Exception, key: str) -> Exception:
    exc.__notes__ = [AttributeValidationNote(f"key {key}", key, object)]
    return exc


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True, omit_if_default=True)
    for primitive in (int, str, bool):
        conv.register_structure_hook(primitive, _strict(primitive))

    def structure_kind(value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueTypeError(f"expected a table, found {toml_type(value)}")
        if "type" not in value:
            raise ClassValidationError("missing type", [_noted(KeyError("type"), "type")], dict)
        name = value["type"]
        if not isinstance(name, str):
            error = ValueTypeError(f"expected a string, found {toml_type(name)}")
            raise ClassValidationError("bad type", [_noted(error, "type")], dict)
        cls = kind_class(name)
        if cls is None:
            raise ClassValidationError("unknown type", [_noted(UnknownKind(name), "type")], dict)
        return conv.structure(value, cls.Spec)

    def structure_element(value: Any, _type: Any) -> Any:
        return value if isinstance(value, str) else structure_kind(value)

    def structure_field(value: Any, _type: Any) -> FieldSpec:
        if not isinstance(value, dict):
            raise ValueTypeError(f"expected a table, found {toml_type(value)}")
        head_keys = {k: v for k, v in value.items() if k in ("name", "since", "exists")}
        errors: list[Exception] = []
        head = kind = None
        try:
            head = conv.structure(head_keys, _FieldHead)
        except ClassValidationError as e:
            errors.extend(e.exceptions)
        try:
            kind = structure_kind({k: v for k, v in value.items() if k not in head_keys})
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
            raise ValueTypeError(f"expected an array, found {toml_type(value)}")
        return elements(value, type_)

    conv.register_structure_hook_func(lambda t: t == tuple[Element, ...], structure_elements)
    conv.register_structure_hook_func(lambda t: t is Element, structure_element)
    conv.register_structure_hook(FieldSpec, structure_field)
    conv.register_unstructure_hook_func(
        lambda t: t is Element, lambda v: v if isinstance(v, str) else conv.unstructure(v)
    )
    conv.register_unstructure_hook(FieldSpec, unstructure_field)
    return conv


CONVERTER = _make_converter()


def structure_errors(exc: BaseException, path: Path) -> Iterator[tuple[Path, str, str]]:
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
                    yield from structure_errors(sub, (*path, note.name))
            elif isinstance(note, IterableValidationNote):
                yield from structure_errors(sub, (*path, note.index))
            else:
                yield from structure_errors(sub, path)
    elif isinstance(exc, UnknownKind):
        yield path, f"unknown type {exc.args[0]!r}: not a scalar type or a kind", "unknown-type"
    elif isinstance(exc, ValueTypeError):
        yield path, f"{key_name(path)}: {exc}", "bad-type"
    else:
        yield path, f"{key_name(path)}: {exc}", "bad-value"


def without(value: Any, paths: list[Path]) -> Any:
    """A copy of *value* without the keys at *paths*."""
    drop = {p[0] for p in paths if len(p) == 1}
    deeper: dict[str | int, list[Path]] = {}
    for p in paths:
        if len(p) > 1:
            deeper.setdefault(p[0], []).append(p[1:])
    if isinstance(value, dict):
        return {k: without(v, deeper.get(k, [])) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [without(v, deeper.get(i, [])) for i, v in enumerate(value)]
    return value


def key_name(path: Path) -> str:
    for part in reversed(path):
        if isinstance(part, str):
            return part
    return "value"
