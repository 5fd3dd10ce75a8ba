"""Exists-tests and ``needed`` conditions: a small parsed expression language.

Description files are data, so conditions are never ``eval``-ed.  An
expression is parsed into closures over a :class:`Scope`:

    version_id >= 2 and (flags & 0x80) != 0
    present(msix) or msi_64bit()

Names are fields of the struct being loaded or saved (earlier fields, then the
state already held by the destination); ``version_id`` is the version being
loaded or saved; ``name()`` calls a predicate registered in Python with
:func:`register_predicate`; ``present(field)`` is true when the state has the
field.  Expressions are bounded in length and nesting.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from vmstate.errors import DescriptionError

MAX_SOURCE = 512
MAX_DEPTH = 32


class Scope(Protocol):
    """What a condition can see: earlier fields, held state and the version."""

    version_id: int

    def lookup(self, name: str) -> Any:
        """The value of *name*; KeyError when it has none."""

    def has(self, name: str) -> bool:
        """True when *name* has a value."""


PredicateFn = Callable[[Scope], Any]
_REGISTRY: dict[str, Callable[[Scope], bool]] = {}


def register_predicate(name: str) -> Callable[[Callable[[Scope], bool]], Callable[[Scope], bool]]:
    """Decorator: make a Python function callable as ``name()`` in conditions."""

    def deco(fn: Callable[[Scope], bool]) -> Callable[[Scope], bool]:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise DescriptionError(f"predicate {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def registered_predicates() -> frozenset[str]:
    return frozenset(_REGISTRY)


_TOKEN = re.compile(
    r"\s*(?:(?P<num>0[xX][0-9a-fA-F]+|0[bB][01]+|\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><<|>>|==|!=|<=|>=|//|[-+*%&|^~<>()]))"
)
_BINARY: dict[str, tuple[int, Callable[[Any, Any], Any]]] = {
    "or": (1, lambda a, b: a or b),
    "and": (2, lambda a, b: a and b),
    "==": (4, operator.eq),
    "!=": (4, operator.ne),
    "<": (4, operator.lt),
    "<=": (4, operator.le),
    ">": (4, operator.gt),
    ">=": (4, operator.ge),
    "|": (5, operator.or_),
    "^": (6, operator.xor),
    "&": (7, operator.and_),
    "<<": (8, operator.lshift),
    ">>": (8, operator.rshift),
    "+": (9, operator.add),
    "-": (9, operator.sub),
    "*": (10, operator.mul),
    "//": (10, operator.floordiv),
    "%": (10, operator.mod),
}
_SHIFT_LIMIT = 64


def _tokenize(source: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    while pos < len(source):
        if source[pos:].strip() == "":
            break
        m = _TOKEN.match(source, pos)
        if m is None:
            raise DescriptionError(f"unexpected {source[pos:].strip()[:10]!r} at column {pos + 1}")
        tokens.append(m.group(m.lastgroup or "op"))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens = _tokenize(source)
        self.i = 0
        self.depth = 0
        self.names: set[str] = set()
        self.calls: set[str] = set()

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise DescriptionError(f"expected {expected or 'a value'}, found {tok or 'end'}")
        self.i += 1
        return tok

    def expr(self, min_prec: int = 0) -> PredicateFn:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise DescriptionError("condition nests too deeply")
        left = self.unary()
        while (tok := self.peek()) in _BINARY and _BINARY[tok][0] > min_prec:
            prec, fn = _BINARY[self.take()]
            right = self.expr(prec)
            left = _binary(tok, fn, left, right)
        self.depth -= 1
        return left

    def unary(self) -> PredicateFn:
        tok = self.peek()
        if tok == "not":
            self.take()
            inner = self.expr(3)
            return lambda s: not inner(s)
        if tok == "-":
            self.take()
            inner = self.unary()
            return lambda s: -inner(s)
        if tok == "~":
            self.take()
            inner = self.unary()
            return lambda s: ~inner(s)
        return self.atom()

    def atom(self) -> PredicateFn:
        tok = self.take()
        if tok == "(":
            inner = self.expr()
            self.take(")")
            return inner
        if tok[0].isdigit():
            value = int(tok, 0)
            return lambda s: value
        if tok in ("true", "false"):
            const = tok == "true"
            return lambda s: const
        if not (tok[0].isalpha() or tok[0] == "_") or tok in _BINARY or tok == "not":
            raise DescriptionError(f"expected a value, found {tok!r}")
        if self.peek() == "(":
            self.take("(")
            if tok == "present":
                field = self.take()
                self.take(")")
                self.names.add(field)
                return lambda s: s.has(field)
            self.take(")")
            self.calls.add(tok)
            return _call(tok)
        self.names.add(tok)
        return _name(tok)


def _binary(op: str, fn: Callable[[Any, Any], Any], a: PredicateFn, b: PredicateFn) -> PredicateFn:
    if op == "and":
        return lambda s: a(s) and b(s)
    if op == "or":
        return lambda s: a(s) or b(s)
    if op == "<<":

        def shift(s: Scope) -> Any:
            count = b(s)
            if not 0 <= count <= _SHIFT_LIMIT:
                raise DescriptionError(f"shift count {count} outside 0..{_SHIFT_LIMIT}")
            return a(s) << count

        return shift
    if op in ("//", "%"):

        def divide(s: Scope) -> Any:
            divisor = b(s)
            if divisor == 0:
                raise DescriptionError("division by zero in condition")
            return fn(a(s), divisor)

        return divide
    return lambda s: fn(a(s), b(s))


def _name(name: str) -> PredicateFn:
    def get(s: Scope) -> Any:
        try:
            return s.lookup(name)
        except KeyError:
            raise DescriptionError(
                f"condition refers to {name!r}, which has no value here"
            ) from None

    return get


def _call(name: str) -> PredicateFn:
    def call(s: Scope) -> Any:
        try:
            fn = _REGISTRY[name]
        except KeyError:
            raise DescriptionError(f"no predicate named {name!r} is registered") from None
        return fn(s)

    return call


@attrs.frozen(eq=False)
class Condition:
    """A parsed condition; equal when the source text is equal."""

    source: str
    _fn: PredicateFn = attrs.field(repr=False, alias="fn")
    names: frozenset[str] = attrs.field(repr=False, default=frozenset())
    calls: frozenset[str] = attrs.field(repr=False, default=frozenset())

    def __call__(self, scope: Scope) -> bool:
        return bool(self._fn(scope))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)


def parse_condition(source: str) -> Condition:
    """Parse *source*; raise :class:`DescriptionError` naming the problem."""
    if len(source) > MAX_SOURCE:
        raise DescriptionError(f"condition longer than {MAX_SOURCE} characters")
    parser = _Parser(source)
    if not parser.tokens:
        raise DescriptionError("empty condition")
    fn = parser.expr()
    if parser.peek() is not None:
        raise DescriptionError(f"unexpected {parser.peek()!r} after the condition")
    return Condition(source, fn, frozenset(parser.names), frozenset(parser.calls))


def as_condition(value: str | Condition | None) -> Condition | None:
    """A condition given as source text, parsed (attrs converter for fields and subsections)."""
    if value is None or isinstance(value, Condition):
        return value
    return parse_condition(value)


def opaque_condition(origin: str) -> Condition:
    """A test QEMU has but does not export: the field is present iff the state has it.

    Used for descriptions imported from ``-dump-vmstate``.  On load the caller
    must say which way it goes (see ``LoadOptions.opaque``).
    """
    return Condition(f"?{origin}", _opaque_unresolved(origin))


def _opaque_unresolved(origin: str) -> PredicateFn:
    def fn(s: Scope) -> Any:
        raise DescriptionError(f"the exists-test of {origin} is QEMU code that was not exported")

    return fn


def is_opaque(cond: Condition) -> bool:
    return cond.source.startswith("?")
