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


@pytest.mark.parametrize(
    ("source", "values", "message"),
    [
        ("cfg & 1", {"cfg": b"\x01\x02"}, "'&' needs integers, got bytes"),
        ("1 >> n", {"n": -1}, "shift count -1 outside 0..64"),
        ("1 << n", {"n": 65}, "shift count 65 outside"),
        ("-cfg", {"cfg": b""}, "'-' needs numbers, got bytes"),
        ("~ratio", {"ratio": 1.5}, "'~' needs integers, got float"),
        ("lst < 3", {"lst": [1]}, "'<' needs numbers, got list"),
        ("n * n * n * n * n * n * n * n * n * n * n * n * n * n * n * n > 0",
         {"n": 2**300}, "exceeds 4096 bits"),
    ],
)
def test_values_from_the_input_that_no_operator_takes_are_description_errors(
    source: str, values: dict, message: str
) -> None:
    """Operands come from untrusted input: a bad one is the input's fault, never a
    TypeError or ValueError escaping from the evaluation."""
    with pytest.raises(DescriptionError, match=message):
        parse_condition(source)(Env(values))


def test_type_problems_name_the_field_and_operator() -> None:
    cond = parse_condition("cfg & 1 or (ratio < 2 and version_id > 1) or lst == 3")
    assert cond.type_problems({"cfg": "bytes", "ratio": "float", "lst": "list"}) == [
        "'&' needs integers, but field 'cfg' is bytes"]
    assert parse_condition("-s.x" if False else "-s").type_problems({"s": "dict"}) == [
        "'-' needs numbers, but field 's' is dict"]
    assert parse_condition("a + b > 1").type_problems({}) == []
