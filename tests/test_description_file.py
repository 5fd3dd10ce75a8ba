"""Description files: round trips, every kind, every problem at its line:col, the registry."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA
from hypothesis import given, settings
from hypothesis import strategies as st

import vmstate.kinds
from vmstate import fields, registry
from vmstate.description import Description, register_hook
from vmstate.description_file import (
    PROBLEM_CODES,
    Diagnostic,
    check_description_file,
    check_description_text,
    dump_description,
    load_description_file,
    load_description_text,
)
from vmstate.description_file.positions import index_positions
from vmstate.errors import DescriptionError, UsageError
from vmstate.fields import SCALAR_TYPES, Array, Kind, QTailQ, Seq, Struct, VArray
from vmstate.kinds.registry import KINDS
from vmstate.predicates import opaque_condition, register_predicate

DESCRIPTIONS = DATA / "descriptions"
EVERY_KIND = DESCRIPTIONS / "every-kind.toml"
PROBLEM_FILES = ["errors.toml", "syntax-error.toml"]


@register_hook("test_every_kind_pre_save")
def _pre_save(state: dict[str, Any]) -> dict[str, Any]:
    return state


@register_hook("test_every_kind_post_load")
def _post_load(state: dict[str, Any], version_id: int) -> dict[str, Any]:
    return state


@register_predicate("test_always")
def _always(scope: Any) -> bool:
    return True


def _kinds(kind: Kind) -> list[Kind]:
    """*kind* and every kind nested in it (elements, not struct fields)."""
    if isinstance(kind, Array | VArray | QTailQ):
        return [kind, *_kinds(kind.element)]
    if isinstance(kind, Seq):
        return [kind, *(k for el in kind.elements for k in _kinds(el))]
    return [kind]


def _all_kinds(desc: Description) -> list[Kind]:
    return [k for d in desc.walk() for f in d.fields for k in _kinds(f.kind)]


# -- round trips and coverage ---------------------------------------------------------


def test_every_kind_file_round_trips() -> None:
    desc = load_description_file(EVERY_KIND)
    text = dump_description(desc)
    again = load_description_text(text, "dumped")
    assert again == desc
    assert dump_description(again) == text


def test_every_kind_file_has_no_problems() -> None:
    assert check_description_file(EVERY_KIND) == []


def test_every_kind_file_covers_every_kind_and_scalar_type() -> None:
    """A kind added to vmstate.kinds without registering it, or without a file
    form in the every-kind file, fails here."""
    kinds = _all_kinds(load_description_file(EVERY_KIND))
    defined = set()
    for module in pkgutil.iter_modules(vmstate.kinds.__path__):
        found = importlib.import_module(f"vmstate.kinds.{module.name}")
        defined |= {
            cls
            for cls in vars(found).values()
            if inspect.isclass(cls)
            and issubclass(cls, Kind)
            and not inspect.isabstract(cls)
            and cls.__module__ == found.__name__
            and not cls.__name__.startswith("_")
        }
    assert defined == {fields.Scalar, *KINDS.values()}
    assert {type(k) for k in kinds} == defined
    assert {k.info for k in kinds if isinstance(k, fields.Scalar)} == set(SCALAR_TYPES)
    assert any(isinstance(k, Array) and k.nullable for k in kinds)
    assert any(isinstance(k, Struct) and k.version == 1 for k in kinds)
    assert any(isinstance(k, VArray) and k.multiply == 2 for k in kinds)
    assert any(isinstance(k, fields.VBuffer) and k.multiply == 2 for k in kinds)


def _every_kind_state(version: int) -> dict[str, Any]:
    entry = {"addr": 0x1122334455667788, "data": 0xAABBCCDD}
    state: dict[str, Any] = {
        "flag": True,
        "i8": -5,
        "i16": -300,
        "i32": -70000,
        "i64": -(1 << 40),
        "u8": 3,
        "u16": 2,
        "u32": 1,
        "u64": 1 << 63,
        "magic": 0x5145564D,
        "e8": 1,
        "e16": 2,
        "ei32": -3,
        "e64": 1 << 63,
        "level": 7,
        "deadline": -1,
        "ratio": 1.5,
        "ratio_u": -2.25,
        "le16": 0xBEEF,
        "le32": 0xDEADBEEF,
        "le64": 2**64 - 2,
        "lei16": -2,
        "lei32": -3,
        "lei64": -4,
        "config_x": bytes(range(16)),
        "blob": b"abcdef",
        "n64": 4,
        "blob64": b"wxyz",
        "pending": (1 << 69) | 1,
        "entry": entry,
        "old_entry": {"addr": 5},
        "regs": [1, 2, 3, 4],
        "slots": [entry, None],
        "words": [b"%02d" % i for i in range(6)],
        "queue": [entry, entry],
        "mixed": [7, b"xyz", entry, None],
        "every-kind/extra": {"count": 2, "ids": [10, 20], "every-kind/extra/deeper": {"id": 9}},
    }
    if version >= 2:
        state["vectors"] = [entry, entry]
    if version >= 3:
        state["late"] = 1
    return state


@pytest.mark.parametrize("version", [1, 2, 3])
def test_every_kind_file_saves_and_loads(version: int) -> None:
    desc = load_description_file(EVERY_KIND)
    state = _every_kind_state(version)
    blob = desc.save(state, version)
    held = {"slots": [{"addr": 0, "data": 0}, None]}
    assert desc.load(blob, version, held=held) == state


def test_opaque_conditions_are_written_and_read_back() -> None:
    desc = Description("dev", 1, 0, [fields.uint8("a", exists=opaque_condition("dev/a"))])
    text = dump_description(desc)
    assert 'exists = "?dev/a"' in text
    assert load_description_text(text) == desc
    assert [p.code for p in check_description_text(text)] == ["opaque-condition"]


def test_structs_of_one_name_but_different_layouts_get_distinct_keys() -> None:
    a = Description("s", 1, 0, [fields.uint8("x")])
    b = Description("s", 1, 0, [fields.uint16("x")])
    desc = Description("dev", 1, 0, [fields.struct("a", a), fields.struct("b", b)])
    text = dump_description(desc)
    assert '[structs."s#2"]' in text
    assert load_description_text(text) == desc


# -- problems -----------------------------------------------------------------------


@pytest.mark.parametrize("name", PROBLEM_FILES)
def test_problems_with_their_positions(name: str, snapshot: Any) -> None:
    problems = check_description_text((DESCRIPTIONS / name).read_text(), name)
    assert [str(p) for p in problems] == snapshot


def test_every_problem_code_is_exercised(tmp_path: Path) -> None:
    codes = {
        p.code
        for name in PROBLEM_FILES
        for p in check_description_text((DESCRIPTIONS / name).read_text(), name)
    }
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[description]\nname = "\xe9"\n')
    (unreadable,) = check_description_file(latin1)
    assert (unreadable.line, unreadable.col, unreadable.code) == (2, 9, "unreadable")
    assert unreadable.message == "not UTF-8: byte 0xe9 at offset 22"
    assert codes | {unreadable.code} == set(PROBLEM_CODES)


def test_load_raises_the_first_error_at_its_location() -> None:
    with pytest.raises(DescriptionError) as info:
        load_description_file(DESCRIPTIONS / "errors.toml")
    assert info.value.location == f"{DESCRIPTIONS / 'errors.toml'}:2:1"
    assert "unknown key 'colour'" in info.value.message


def test_warnings_do_not_stop_loading() -> None:
    text = (
        '[description]\nname = "d"\nversion_id = 1\nfields = [\n'
        '  { name = "a", type = "uint8", exists = "never_registered() or held_only" },\n]\n'
    )
    problems = check_description_text(text, "w.toml")
    assert [(p.location, p.code, p.severity) for p in problems] == [
        ("w.toml:5:33", "unknown-predicate", "warning"),
        ("w.toml:5:33", "reference-unknown", "warning"),
    ]
    assert load_description_text(text).fields[0].name == "a"


def test_unreadable_files_are_description_errors(tmp_path: Path) -> None:
    (tmp_path / "latin1.toml").write_bytes(b'[description]\nname = "\xe9"\n')
    for name, message in [("missing.toml", "cannot read"), ("latin1.toml", "not UTF-8")]:
        with pytest.raises(DescriptionError, match=message) as info:
            load_description_file(tmp_path / name)
        assert info.value.location == str(tmp_path / name)


# -- the position index -------------------------------------------------------------


def test_positions_of_tricky_toml() -> None:
    text = "\n".join(
        [
            "# [not] a table",
            "[description]",
            'name = "x"  # comment with "quotes"',
            '"quoted key" = 2',
            "a.b . c = 'lit'",
            's = """multi',
            'line \\""" still "" """',
            "fields = [",
            '  { name = "a", size = [1, [2, 3]] }, # c',
            "  # comment",
            '  { name = "b", element = { type = "buffer" } },',
            "]",
            "[[description.subsections]]",
            'name = "x/y"',
            "[[description.subsections]]",
            'fields = [{ name = "q" }]',
            "[[description.subsections.subsections]]",
            'name = "x/z/w"',
            '[structs."we ird\\u0041"]',
            "v = 1979-05-27 07:32:00Z",
            "w = '''",
            "'''''",
        ]
    )
    at = index_positions(text).of
    assert at(("description",)) == (2, 1)
    assert at(("description", "quoted key")) == (4, 1)
    assert at(("description", "a", "b", "c")) == (5, 1)
    assert at(("description", "fields", 0, "size", 1, 1)) == (9, 32)
    assert at(("description", "fields", 1, "element", "type")) == (11, 29)
    assert at(("description", "subsections", 1, "fields", 0, "name")) == (16, 13)
    assert at(("description", "subsections", 1, "subsections", 0, "name")) == (18, 1)
    assert at(("structs", "we irdA", "v")) == (20, 1)
    assert at(("structs", "we irdA", "w")) == (21, 1)
    assert at(("description", "fields", 0, "missing")) == (9, 3)
    assert at(("nowhere",)) == (1, 1)


_KEYS = [
    "name",
    "type",
    "size",
    "count",
    "max_count",
    "element",
    "exists",
    "since",
    "struct",
    "version",
    "info",
    "nullable",
    "count_type",
    "multiply",
    "nbits",
    "elements",
    "odd key",
]
_WORDS = [
    "a",
    "b",
    "uint8",
    "uint32 equal",
    "buffer",
    "varray",
    "array",
    "struct",
    "unused",
    "validate",
    "seq",
    "qtailq",
    "vbuffer",
    "bitmap",
    "s",
    "a > 1",
    "not a",
    "?x/y",
    "(",
    "",
]
_values = st.recursive(
    st.one_of(st.integers(-3, 300), st.sampled_from(_WORDS), st.booleans()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_KEYS), inner, max_size=3)
    ),
    max_leaves=6,
)
_field_tables = st.dictionaries(st.sampled_from(_KEYS), _values, max_size=6)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"


@settings(max_examples=300, deadline=None)
@given(
    fields_=st.lists(_field_tables, max_size=6),
    struct_fields=st.lists(_field_tables, max_size=3),
    version=st.sampled_from(["1", "0", "-1", '"x"']),
)
def test_any_document_gives_problems_at_real_positions(
    fields_: list[dict[str, Any]], struct_fields: list[dict[str, Any]], version: str
) -> None:
    """Whatever a file says, checking it reports problems (never raises), each at the
    key or table it is about; loading raises only DescriptionError."""
    lines = ["[description]", 'name = "d"', f"version_id = {version}", "fields = ["]
    lines += [f"  {_toml(t)}," for t in fields_]
    lines += ["]", "[structs.s]", "version_id = 1", "fields = ["]
    lines += [f"  {_toml(t)}," for t in struct_fields]
    lines.append("]")
    text = "\n".join(lines)
    problems = check_description_text(text, "fuzz.toml")
    assert all(isinstance(p, Diagnostic) and p.code in PROBLEM_CODES for p in problems)
    for p in problems:
        here = text.splitlines()[p.line - 1][p.col - 1 :]
        assert here[:1] in ('"', "{", "[", "n", "v", "f") or here[:1].isalnum(), (p, here)
    for i, table in enumerate(fields_):
        for key in table:
            line, col = index_positions(text).of(("description", "fields", i, key))
            assert text.splitlines()[line - 1][col - 1 :].startswith(json.dumps(key))
    try:
        load_description_text(text, "fuzz.toml")
    except DescriptionError as e:
        assert e.location.startswith("fuzz.toml:")


# -- the registry ---------------------------------------------------------------------


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTERED", {})
    monkeypatch.setattr(registry, "_ORIGIN", {})
    monkeypatch.setattr(registry, "_shipped_loaded", False)


def test_shipped_directory_in_a_checkout() -> None:
    assert registry.shipped_directory() == Path(__file__).resolve().parent.parent / "descriptions"


@pytest.mark.usefixtures("fresh_registry")
def test_registry_loads_every_shipped_file() -> None:
    directory = registry.shipped_directory()
    assert directory is not None
    shipped = {load_description_file(f).name for f in directory.glob("*.toml")}
    assert shipped <= set(registry.names())


@pytest.mark.usefixtures("fresh_registry")
def test_registry_loads_a_directory_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(EVERY_KIND, tmp_path)
    monkeypatch.setattr(registry, "shipped_directory", lambda: tmp_path)
    assert registry.names() == ["every-kind"]
    assert registry.get("every-kind") == load_description_file(EVERY_KIND)


@pytest.mark.usefixtures("fresh_registry")
def test_registry_refuses_a_second_description_of_one_name() -> None:
    one = Description("dev", 1, 0, [fields.uint8("a")])
    registry.register(one)
    registry.register(Description("dev", 1, 0, [fields.uint8("a")]))  # equal: fine
    with pytest.raises(DescriptionError, match="already registered"):
        registry.register(Description("dev", 2, 0, [fields.uint8("a")]), "other.toml")
    assert registry.get("dev") is one
    with pytest.raises(UsageError, match="no description named 'nope'"):
        registry.get("nope")


def test_the_documented_example_loads() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "description-format.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    assert check_description_text(example, "docs") == []
    assert load_description_text(example).name == "vfio-pci-config"
