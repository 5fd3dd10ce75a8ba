"""Conditions are parsed, never eval-ed, and bounded."""

from __future__ import annotations

import attrs
import pytest

from vmstate.errors import DescriptionError
from vmstate.predicates import parse_condition, register_predicate


@attrs.frozen
class Env:
    values: dict
    version_id: int = 1

    def lookup(self, name: str) -> object:
        if name == "version_id":
            return self.version_id
        return self.values[name]

    def has(self, name: str) -> bool:
        return name in self.values


@pytest.mark.parametrize(
    ("source", "values", "expected"),
    [
        ("flags & 0x80", {"flags": 0x81}, True),
        ("flags & 0x80", {"flags": 0x01}, False),
        ("version_id >= 2 and not msi", {"msi": 0}, False),
        ("(a | b) == 3", {"a": 1, "b": 2}, True),
        ("a << 2 > 7 or b", {"a": 1, "b": 0}, False),
        ("-a + 5 * 2 // 3 % 4 == 2", {"a": 1}, True),
        ("~a & 0xf == 0xe", {"a": 1}, True),
        ("present(x) and not present(y)", {"x": 0}, True),
        ("0b101 ^ 1 == 4", {}, True),
    ],
)
def test_evaluates(source: str, values: dict, expected: bool) -> None:
    assert parse_condition(source)(Env(values)) is expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("__import__('os')", "unexpected"),
        ("a +", "expected a value"),
        ("(a", "expected \\)"),
        ("a b", "unexpected 'b'"),
        ("", "empty condition"),
        ("(" * 40 + "1" + ")" * 40, "nests too deeply"),
        ("a" * 600, "longer than"),
        ("a.b", "unexpected"),
    ],
)
def test_rejects(source: str, message: str) -> None:
    with pytest.raises(DescriptionError, match=message):
        parse_condition(source)


def test_runtime_errors_are_description_errors() -> None:
    with pytest.raises(DescriptionError, match="refers to 'missing'"):
        parse_condition("missing == 1")(Env({}))
    with pytest.raises(DescriptionError, match="shift count"):
        parse_condition("1 << a")(Env({"a": 10**6}))
    with pytest.raises(DescriptionError, match="division by zero"):
        parse_condition("1 // a")(Env({"a": 0}))
    with pytest.raises(DescriptionError, match="no predicate named 'nope'"):
        parse_condition("nope()")(Env({}))


def test_registered_predicates_are_called_by_name() -> None:
    @register_predicate("is_big_n")
    def is_big(scope: Env) -> bool:
        return scope.lookup("n") > 10

    cond = parse_condition("is_big_n() and n < 100")
    assert cond.calls == frozenset({"is_big_n"})
    assert cond(Env({"n": 11}))
    assert not cond(Env({"n": 3}))
