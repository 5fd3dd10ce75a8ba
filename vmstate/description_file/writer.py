"""Writing description files: core descriptions back to TOML text, one line per field.

Core -> specs (each kind's ``to_spec``) -> cattrs-unstructured dicts -> TOML text;
nested structs become named ``[structs]`` entries.  Reading it back gives an
equal description (tests/test_description_file.py).
"""

from __future__ import annotations

import re
from typing import Any

from vmstate.description import Description, Subsection
from vmstate.description_file.schema import (
    CONVERTER,
    DescriptionSpec,
    FieldSpec,
    HooksSpec,
    SubsectionSpec,
)
from vmstate.fields import Field
from vmstate.kinds.base import Kind
from vmstate.kinds.registry import kind_class


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
            spec = CONVERTER.unstructure(DescriptionSpec(**head))
        else:
            needed = None if subsection.needed is None else subsection.needed.source
            spec = CONVERTER.unstructure(SubsectionSpec(**head, needed=needed))
        order = ("name", "version_id", "minimum_version_id", "hooks", "needed")
        out = {key: spec[key] for key in order if key in spec}
        if desc.fields:
            out["fields"] = [CONVERTER.unstructure(self.field(f)) for f in desc.fields]
        if desc.subsections:
            out["subsections"] = [self.description(s.description, s) for s in desc.subsections]
        return out

    def field(self, field: Field) -> FieldSpec:
        anonymous = field.kind.anonymous and field.name == "unused"
        return FieldSpec(
            name=None if anonymous else field.name,
            kind=field.kind.to_spec(self),
            since=field.since,
            exists=None if field.exists is None else field.exists.source,
        )

    def element(self, kind: Kind) -> Any:
        return kind.element_ref(self)

    def struct_key(self, desc: Description) -> str:
        key = self.struct_keys.get(desc)
        if key is None:
            key, n = desc.name, 1
            while key in self.structs or kind_class(key) is not None:
                n += 1
                key = f"{desc.name}#{n}"
            self.struct_keys[desc] = key
            self.structs[key] = {}  # reserve the key before nested structs take theirs
            self.structs[key] = self.description(desc, key=key)
        return key


def description_document(desc: Description) -> dict[str, Any]:
    """*desc* as the data of a description file: ``description`` and, when it has nested
    structs, ``structs`` (what ``vmstate describe --json`` prints)."""
    writer = _Writer()
    top = writer.description(desc)
    return {"description": top, **({"structs": writer.structs} if writer.structs else {})}


def dump_description(desc: Description) -> str:
    """*desc* as description-file text (TOML), one line per field."""
    document = description_document(desc)
    lines: list[str] = []
    _write_table(lines, ["description"], document["description"], array=False)
    for key, table in document.get("structs", {}).items():
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
