"""Exists-tests and ``needed`` conditions: a small parsed expression language.

Description files are data, so conditions are never ``eval``-ed.  An
expression is parsed into a small tree, then compiled into closures over a
:class:`Scope`:

    version_id >= 2 and (flags & 0x80) != 0
    present(msix) or msi_64bit()

Names are fields of the struct being loaded or saved (earlier fields, then the
state already held by the destination); ``version_id`` is the version being
loaded or saved; ``name()`` calls a predicate registered in Python with
:func:`register_predicate`; ``present(field)`` is true when the state has the
field.  Expressions are bounded in length and nesting.

Values come from untrusted input, so evaluation checks what every operator is
given: arithmetic, bit and ordering operators take integers only, shift counts
lie in 0..64, and anything else is a :class:`DescriptionError` (a load reports
it as a decode error).  ``vmstate lint`` checks the same rules against the
kinds of the fields a condition names (:meth:`Condition.type_problems`).
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from vmstate.errors import DescriptionError

MAX_SOURCE = 512
MAX_DEPTH = 32
_SHIFT_LIMIT = 64


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


@functools.cache
def _token() -> re.Pattern[str]:
    """The tokenizer, compiled when an expression is first parsed (a stream's vmdesc
    has none to parse)."""
    return re.compile(
        r"\s*(?:(?P<num>0[xX][0-9a-fA-F]+|0[bB][01]+|\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
        r"|(?P<op><<|>>|==|!=|<=|>=|//|[-+*%&|^~<>()]))"
    )
#: operator -> (precedence, function, what it takes: "int", "number" (int or float) or "any")
_BINARY: dict[str, tuple[int, Callable[[Any, Any], Any], str]] = {
    "or": (1, lambda a, b: a or b, "any"),
    "and": (2, lambda a, b: a and b, "any"),
    "==": (4, operator.eq, "any"),
    "!=": (4, operator.ne, "any"),
    "<": (4, operator.lt, "number"),
    "<=": (4, operator.le, "number"),
    ">": (4, operator.gt, "number"),
    ">=": (4, operator.ge, "number"),
    "|": (5, operator.or_, "int"),
    "^": (6, operator.xor, "int"),
    "&": (7, operator.and_, "int"),
    "<<": (8, operator.lshift, "int"),
    ">>": (8, operator.rshift, "int"),
    "+": (9, operator.add, "number"),
    "-": (9, operator.sub, "number"),
    "*": (10, operator.mul, "number"),
    "//": (10, operator.floordiv, "int"),
    "%": (10, operator.mod, "int"),
}
#: the value types a condition can meet ("int" includes bools and bitmaps)
VALUE_TYPES = frozenset({"int", "float", "bytes", "list", "dict"})
#: bound on the magnitude of intermediate results: keeps `a * a * a ...` cheap
_MAX_BITS = 4096

# A parsed condition is a tree of tuples:
#   ("num", int) ("name", str) ("present", str) ("call", str)
#   ("not" | "neg" | "inv", node) ("bin", op, left, right)
Node = tuple[Any, ...]


def _tokenize(source: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    token = _token()
    while pos < len(source):
        if source[pos:].strip() == "":
            break
        m = token.match(source, pos)
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

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise DescriptionError(f"expected {expected or 'a value'}, found {tok or 'end'}")
        self.i += 1
        return tok

    def expr(self, min_prec: int = 0) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise DescriptionError("condition nests too deeply")
        left = self.unary()
        while (tok := self.peek()) in _BINARY and _BINARY[tok][0] > min_prec:
            prec = _BINARY[self.take()][0]
            left = ("bin", tok, left, self.expr(prec))
        self.depth -= 1
        return left

    def unary(self) -> Node:
        tok = self.peek()
        if tok == "not":
            self.take()
            return ("not", self.expr(3))
        if tok in ("-", "~"):
            self.take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise DescriptionError("condition nests too deeply")
            node = ("neg" if tok == "-" else "inv", self.unary())
            self.depth -= 1
            return node
        return self.atom()

    def atom(self) -> Node:
        tok = self.take()
        if tok == "(":
            inner = self.expr()
            self.take(")")
            return inner
        if tok[0].isdigit():
            prefixed = tok[:2].lower() in ("0x", "0b")
            return ("num", int(tok, 0) if prefixed else int(tok, 10))
        if tok in ("true", "false"):
            return ("num", int(tok == "true"))
        if not (tok[0].isalpha() or tok[0] == "_") or tok in _BINARY or tok == "not":
            raise DescriptionError(f"expected a value, found {tok!r}")
        if self.peek() == "(":
            self.take("(")
            if tok == "present":
                field = self.take()
                self.take(")")
                return ("present", field)
            self.take(")")
            return ("call", tok)
        return ("name", tok)


# -- evaluation -----------------------------------------------------------------


def _int(value: Any, op: str) -> int:
    """*value* as an integer operand of *op*; anything else is the input's fault."""
    if isinstance(value, int):
        return value
    raise DescriptionError(f"{op!r} needs integers, got {_type_name(value)}")


def _number(value: Any, op: str) -> int | float:
    if isinstance(value, int | float):
        return value
    raise DescriptionError(f"{op!r} needs numbers, got {_type_name(value)}")


def _type_name(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "bytes"
    return type(value).__name__


def _bounded(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > _MAX_BITS:
        raise DescriptionError(f"condition value exceeds {_MAX_BITS} bits")
    return value


def _compile(node: Node) -> PredicateFn:
    kind = node[0]
    if kind == "num":
        const = node[1]
        return lambda s: const
    if kind == "name":
        return _name(node[1])
    if kind == "present":
        field = node[1]
        return lambda s: s.has(field)
    if kind == "call":
        return _call(node[1])
    if kind == "not":
        inner = _compile(node[1])
        return lambda s: not inner(s)
    if kind in ("neg", "inv"):
        inner = _compile(node[1])
        sign = "-" if kind == "neg" else "~"
        return (lambda s: -_number(inner(s), sign)) if kind == "neg" else (
            lambda s: ~_int(inner(s), sign))
    _, op, left, right = node
    return _binary(op, _BINARY[op][1], _BINARY[op][2], _compile(left), _compile(right))


def _binary(op: str, fn: Callable[[Any, Any], Any], takes: str, a: PredicateFn,
            b: PredicateFn) -> PredicateFn:
    if op == "and":
        return lambda s: a(s) and b(s)
    if op == "or":
        return lambda s: a(s) or b(s)
    if takes == "any":
        return lambda s: fn(a(s), b(s))
    if op in ("<<", ">>"):

        def shift(s: Scope) -> Any:
            value, count = _int(a(s), op), _int(b(s), op)
            if not 0 <= count <= _SHIFT_LIMIT:
                raise DescriptionError(f"shift count {count} outside 0..{_SHIFT_LIMIT}")
            return _bounded(fn(value, count))

        return shift
    if op in ("//", "%"):

        def divide(s: Scope) -> Any:
            value, divisor = _int(a(s), op), _int(b(s), op)
            if divisor == 0:
                raise DescriptionError("division by zero in condition")
            return fn(value, divisor)

        return divide
    if takes == "number":
        return lambda s: _bounded(fn(_number(a(s), op), _number(b(s), op)))
    return lambda s: _bounded(fn(_int(a(s), op), _int(b(s), op)))


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


# -- type checks ------------------------------------------------------------------


def _type_of(node: Node, types: Mapping[str, str], problems: list[str]) -> str:
    """The value type *node* yields ("int", ..., or "any"), noting misuses in *problems*."""
    kind = node[0]
    if kind == "num":
        return "int"
    if kind == "name":
        return "int" if node[1] == "version_id" else types.get(node[1], "any")
    if kind in ("present", "call", "not"):
        if kind == "not":
            _type_of(node[1], types, problems)
        return "int"
    if kind in ("neg", "inv"):
        return _want(node[1], "-" if kind == "neg" else "~", "number" if kind == "neg" else "int",
                     types, problems)
    _, op, left, right = node
    takes = _BINARY[op][2]
    if takes == "any":
        a, b = _type_of(left, types, problems), _type_of(right, types, problems)
        return a if op in ("and", "or") and a == b else "int" if op in ("==", "!=") else "any"
    a = _want(left, op, takes, types, problems)
    b = _want(right, op, takes, types, problems)
    if op in ("<", "<=", ">", ">="):
        return "int"
    return "float" if "float" in (a, b) else "int"


def _want(node: Node, op: str, takes: str, types: Mapping[str, str], problems: list[str]) -> str:
    found = _type_of(node, types, problems)
    allowed = ("int", "any") if takes == "int" else ("int", "float", "any")
    if found not in allowed:
        what = f"field {node[1]!r}" if node[0] == "name" else "a value"
        wanted = "integers" if takes == "int" else "numbers"
        problems.append(f"{op!r} needs {wanted}, but {what} is {found}")
    return found


# -- the condition ------------------------------------------------------------------


@attrs.frozen(eq=False)
class Condition:
    """A parsed condition; equal when the source text is equal."""

    source: str
    _fn: PredicateFn = attrs.field(repr=False, alias="fn")
    names: frozenset[str] = attrs.field(repr=False, default=frozenset())
    calls: frozenset[str] = attrs.field(repr=False, default=frozenset())
    tree: Node | None = attrs.field(repr=False, default=None)

    def __call__(self, scope: Scope) -> bool:
        try:
            return bool(self._fn(scope))
        except (TypeError, ValueError, OverflowError, MemoryError, RecursionError) as e:
            # a registered predicate's own failure, or values no operator check foresaw
            raise DescriptionError(f"condition {self.source!r} failed: {e}") from None

    def type_problems(self, types: Mapping[str, str]) -> list[str]:
        """What is wrong with the operands, given the value type of each field named
        (one of :data:`VALUE_TYPES`; names not given may hold anything)."""
        problems: list[str] = []
        if self.tree is not None:
            _type_of(self.tree, types, problems)
        return problems

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)


def _collect(node: Node, names: set[str], calls: set[str]) -> None:
    kind = node[0]
    if kind in ("name", "present"):
        names.add(node[1])
    elif kind == "call":
        calls.add(node[1])
    elif kind in ("not", "neg", "inv"):
        _collect(node[1], names, calls)
    elif kind == "bin":
        _collect(node[2], names, calls)
        _collect(node[3], names, calls)


def parse_condition(source: str) -> Condition:
    """Parse *source*; raise :class:`DescriptionError` naming the problem."""
    if len(source) > MAX_SOURCE:
        raise DescriptionError(f"condition longer than {MAX_SOURCE} characters")
    parser = _Parser(source)
    if not parser.tokens:
        raise DescriptionError("empty condition")
    tree = parser.expr()
    if parser.peek() is not None:
        raise DescriptionError(f"unexpected {parser.peek()!r} after the condition")
    names: set[str] = set()
    calls: set[str] = set()
    _collect(tree, names, calls)
    return Condition(source, _compile(tree), frozenset(names), frozenset(calls), tree)


def as_condition(value: str | Condition | None) -> Condition | None:
    """A condition given as source text, parsed (attrs converter for fields and subsections)."""
    if value is None or isinstance(value, Condition):
        return value
    return parse_condition(value)


def opaque_condition(origin: str) -> Condition:
    """A test QEMU has but does not export: the field is present iff the state has it.

    Used for descriptions imported from ``-dump-vmstate``.  On load the caller
    must say which way it goes (the ``opaque`` callback of a load).
    """
    return Condition(f"?{origin}", _opaque_unresolved(origin))


def _opaque_unresolved(origin: str) -> PredicateFn:
    def fn(s: Scope) -> Any:
        raise DescriptionError(f"the exists-test of {origin} is QEMU code that was not exported")

    return fn


def is_opaque(cond: Condition) -> bool:
    return cond.source.startswith("?")
