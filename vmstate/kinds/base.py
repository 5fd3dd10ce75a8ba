"""The field-kind protocol: everything one wire kind knows about itself.

A kind is an immutable value that plays the part of QEMU's ``VMStateInfo``
(one get/put pair per wire kind) and owns everything else that depends on the
kind: its size, a fixed :class:`Layout` the plan compiler may merge with its
neighbours, JSON conversion, how people and QEMU's analyzer show a value, how
``vmstate describe`` names it, and its description-file form.  Nothing outside
a kind's module asks which kind it is.
"""

from __future__ import annotations

import abc
import functools
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NewType, Protocol

import attrs

from vmstate.errors import DescriptionError, EncodeError

if TYPE_CHECKING:
    from vmstate.interpreter.context import Frame
    from vmstate.interpreter.spans import Span
    from vmstate.predicates import Condition

Spans = list["Span"] | None
#: in a kind's description-file spec: an element, given as a scalar type name, a
#: struct name or an inline kind table (the file reader resolves it)
Element = NewType("Element", object)


class Layout:
    """A fixed run of bytes one ``struct`` call reads or writes.

    ``fmt`` holds struct codes without a byte order; ``order`` is ``">"``,
    ``"<"`` or ``""`` for codes whose order does not matter (bytes, single
    bytes, padding), so layouts of one order merge into one codec.  ``unpack``
    turns the ``nvalues`` values of one occurrence into the state's value (None:
    the single value as it is); ``pack`` does the reverse and checks the value.
    ``checked`` layouts hold values a load compares with the destination's
    ("equal"/"le" scalars): a load with held state reads them one by one.
    """

    __slots__ = ("checked", "fmt", "getter", "names", "nvalues", "order", "pack", "size", "unpack")

    def __init__(
        self,
        fmt: str,
        order: str,
        nvalues: int,
        unpack: Callable[[Sequence[Any]], Any] | None,
        pack: Callable[[Any], Sequence[Any]],
        checked: bool = False,
    ) -> None:
        self.fmt = fmt
        self.order = order
        self.nvalues = nvalues
        self.size = codec(order or ">", fmt).size
        self.unpack = unpack
        self.pack = pack
        self.checked = checked
        #: set for a struct of plain fields, whose value is ``dict(zip(names, values))``
        self.names: tuple[str, ...] | None = None
        #: set when such a struct's values are written as they are: itemgetter(*names)
        self.getter: Callable[[Any], Any] | None = None

    def repeated(self, n: int) -> Layout:
        """*n* of these in a row, as a list (arrays of fixed elements)."""
        single = self.unpack
        k = self.nvalues
        names = self.names
        if single is None:
            fmt = f"{n}{self.fmt}" if _single_code(self.fmt) else self.fmt * n
            return Layout(fmt, self.order, n, list, _list_packer(n, self.pack), self.checked)
        if names is not None and k and n >= _COMPILED_ROWS:
            unpack, flatten = _row_codecs(names)
            pack = _dicts_packer(n, k, flatten if self.getter else None, self.pack)
        else:
            def unpack(values: Sequence[Any]) -> list[Any]:
                # k may be 0: a struct of no values (only padding, empty arrays)
                return [single(values[i * k : i * k + k]) for i in range(n)]

            pack = _list_packer(n, self.pack)
        return Layout(self.fmt * n, self.order, n * k, unpack, pack, self.checked)


#: arrays of plain structs this long get codecs of their own (:func:`_row_codecs`):
#: compiling them costs about 0.35 ms, what a thousand elements decoded the general way
#: cost more, so a short array (most in QEMU's devices: 3 to 16 elements) goes without
_COMPILED_ROWS = 256


def _single_code(fmt: str) -> bool:
    return len(fmt) == 1 and fmt not in "sx"


@functools.lru_cache(maxsize=1024)
def _row_codecs(
    names: tuple[str, ...],
) -> tuple[Callable[[Sequence[Any]], list[Any]], Callable[[Sequence[Any]], list[Any]]]:
    """For arrays of plain structs: from flat values to one dict per element, and back.

    Written out as a dict display and a comprehension for these *names* (as attrs
    writes its methods): CPython builds ``{"a": v0, "b": v1}`` three times faster than
    ``dict(zip(names, row))``, and the codec's floor is these dicts.  Names enter the
    source only as ``repr`` literals."""
    k = len(names)
    row = ", ".join(f"v{i}" for i in range(k)) + ("," if k == 1 else "")
    display = ", ".join(f"{name!r}: v{i}" for i, name in enumerate(names))
    items = ", ".join(f"e[{name!r}]" for name in names) + ("," if k == 1 else "")
    source = (
        "def unpack(values):\n"
        "    it = iter(values)\n"
        f"    return [{{{display}}} for {row} in zip({'it, ' * k}strict=True)]\n"
        "def flatten(elements):\n"
        "    out = []\n"
        "    extend = out.extend\n"
        "    for e in elements:\n"
        f"        extend(({items}))\n"
        "    return out\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<rows {names!r}>", "exec"), namespace)
    return namespace["unpack"], namespace["flatten"]


def _dicts_packer(n: int, k: int, flatten: Callable[[Any], Sequence[Any]] | None,
                  pack: Callable[[Any], Sequence[Any]]) -> Callable[[Any], Sequence[Any]]:
    """Plain-dict structs flattened in one comprehension when every element has exactly
    the *k* keys (each name is looked up; equal lengths leave no room for another);
    anything else goes the careful way, which names the element that is off."""
    careful = _list_packer(n, pack)

    def packer(value: Any) -> Sequence[Any]:
        if (flatten is not None and k > 1 and isinstance(value, list | tuple) and len(value) == n
                and set(map(type, value)) <= {dict} and set(map(len, value)) <= {k}):
            try:
                return flatten(value)
            except KeyError:
                pass
        return careful(value)

    return packer


def _list_packer(n: int, pack: Callable[[Any], Sequence[Any]]) -> Callable[[Any], Sequence[Any]]:
    def packer(value: Any) -> Sequence[Any]:
        if not isinstance(value, list | tuple):
            raise EncodeError(f"expected a list, got {type(value).__name__}")
        if len(value) != n:
            raise EncodeError(f"expected {n} elements, got {len(value)}")
        out: list[Any] = []
        for i, item in enumerate(value):
            try:
                out.extend(pack(item))
            except EncodeError as e:
                raise e.within(i) from None
        return out

    return packer


@functools.lru_cache(maxsize=8192)
def codec(order: str, fmt: str) -> struct.Struct:
    """One compiled codec per layout text: the same layouts recur across descriptions."""
    return struct.Struct(order + fmt)


def single(value: Any) -> Sequence[Any]:
    """The ``pack`` of a layout whose one value is the state's value as it is."""
    return (value,)


class LazySpec:
    """``Kind.Spec``: the kind module declares its description-file table as a plain
    annotated class, made an attrs class (in place) the first time ``Kind.Spec`` is
    read.  Only description files use the specs; reading a stream never does, and
    twelve attrs classes cost about 10 ms at every start of ``vmstate``.  Always reach
    a spec through ``Kind.Spec`` (``self.Spec(...)``), never by its class name."""

    def __init__(self, declared: type) -> None:
        self.declared = declared

    def __get__(self, instance: object, owner: type) -> type:
        if not attrs.has(self.declared):
            attrs.frozen(kw_only=True, slots=False)(self.declared)
        return self.declared


class Kind(abc.ABC):
    """Base of field kinds; subclasses are frozen attrs classes."""

    #: QEMU's type name (vmdesc's "type"; the ``VMStateInfo`` name)
    info: ClassVar[str] = ""
    #: the ``type`` of its description-file table
    type_name: ClassVar[str] = ""
    #: the fixed wire size in bytes, None when it varies
    size: int | None = None
    #: False for bytes that are not kept in state (padding, validate checks)
    stored: ClassVar[bool] = True
    #: True when a false exists-test rejects the input (QEMU's VMSTATE_VALIDATE)
    validates: ClassVar[bool] = False
    #: True for numbers and bools (short lists of them are shown on one line)
    scalar: ClassVar[bool] = False
    #: True for kinds whose value has parts (structs, lists): shown part by part
    container: ClassVar[bool] = False
    #: True when a field of this kind needs no name in a description file (padding)
    anonymous: ClassVar[bool] = False
    #: True for integer scalars (what counts and sizes may be read from)
    is_integer: ClassVar[bool] = False
    #: what a condition naming such a field sees: "int", "float", "bytes", "list",
    #: "dict" (vmstate.predicates checks operators against it)
    value_type: ClassVar[str] = "any"

    # -- the wire --------------------------------------------------------------

    def layout(self) -> Layout | None:
        """The fixed layout, when one struct call can read this kind; else None."""
        return None

    @abc.abstractmethod
    def load(self, buf: Any, pos: int, frame: Frame, name: str, spans: Spans) -> tuple[Any, int]:
        """Decode one value at *pos*; return it and the position after it.  When
        *spans* is a list, append the spans of the value's parts to it."""

    @abc.abstractmethod
    def save(self, out: bytearray, value: Any, frame: Frame, name: str, spans: Spans) -> None:
        """Append the bytes of *value* (and, with *spans*, its parts' spans)."""

    def nested(self) -> Iterator[DescriptionLike]:
        """Descriptions this kind contains (structs, elements)."""
        return iter(())

    def parts(self, value: Any) -> list[tuple[str | int, Any, Any]]:
        """(name or index, kind or Description, value) of each part of a container
        value (struct fields and subsections, list elements); empty for a leaf."""
        return []

    # -- state as JSON ---------------------------------------------------------

    def to_json(self, value: Any) -> Any:
        return value

    def from_json(self, data: Any) -> Any:
        return data

    # -- for people and for QEMU's analyzer ------------------------------------

    def show(self, value: Any) -> str:
        """One value as one line of text."""
        if isinstance(value, bytes | bytearray):
            return bytes(value).hex(" ") if value else "(empty)"
        return repr(value)

    def show_short(self, value: Any) -> str:
        """One value in a tree for people (``vmstate show``): shorter where it can be."""
        return self.show(value)

    def qemu_value(self, value: Any) -> Any:
        """*value* as QEMU's ``analyze-migration.py -d state`` prints it."""
        return value

    def describe(self) -> tuple[str, str]:
        """(kind, size) columns of ``vmstate describe``."""
        return self.info, _bytes(self.size)

    def described_parts(self) -> list[Any]:
        """What ``vmstate describe`` shows under this kind's line: nested descriptions,
        and (name, kind) rows."""
        return []

    def element_rows(self) -> list[Any]:
        """What ``vmstate describe`` shows under a list of this kind: a row for it,
        unless its size column already names it."""
        return [("[]", self)]

    def describe_notes(self) -> list[str]:
        """Notes ``vmstate describe`` adds to this kind's line."""
        return []

    def element_text(self) -> str:
        """This kind named inside another kind's size column."""
        kind, size = self.describe()
        return f"({kind}: {size})"

    # -- vmdesc (the JSON QEMU appends to a stream) ---------------------------

    def vmdesc_entries(self, name: str, span: Span, exists: bool) -> list[dict[str, Any]]:
        """The entries QEMU's ``vmstate_save_state`` writes to vmdesc for a field of
        this kind whose bytes are at *span*; *exists*: the field has an exists-test."""
        return [{"name": name, **self.vmdesc_value(span)}]

    def vmdesc_value(self, span: Span) -> dict[str, Any]:
        """The type, size (and a struct's nested entry) of one value at *span*."""
        return {"type": self.info, "size": span.size}

    def vmdesc_compressible(self) -> bool:
        """QEMU's ``vmsd_can_compress``: an array of these is written as one entry."""
        return True

    # -- compatibility (vmstate check) -------------------------------------------

    #: a list (array, sequence, queue): its wire length follows its elements
    is_list: ClassVar[bool] = False
    #: a source may send it with no bytes (a variable array or buffer, a list)
    variable: ClassVar[bool] = False

    @property
    def padding(self) -> bool:
        """QEMU's VMSTATE_UNUSED, as described or as a vmdesc records it."""
        return self.info == "unused_buffer"

    def one_element(self) -> Kind | None:
        """The kind of one element of an array (its first, for a sequence); the kind
        itself when it is no array."""
        return self

    def struct_description(self) -> DescriptionLike | None:
        """The nested description of a struct, None for any other kind."""
        return None

    def element_description(self) -> DescriptionLike | None:
        """The nested description of a struct or of an array's (first) element."""
        element = self.one_element()
        return element.struct_description() if element is not None else None

    def total_size(self) -> int | None:
        """Bytes of a field: all of an array's elements, where its length is known."""
        element = self.one_element()
        return element.size if element is not None else 0

    def compare_shape(self, other: Kind) -> Iterator[tuple[str, str]]:
        """(rule, reason) of each way *other* (the destination's kind of the same
        field) cannot take what this kind sends: counts and bounds."""
        return iter(())

    # -- QEMU's -dump-vmstate JSON ----------------------------------------------

    def dump_field(self, name: str, head: dict[str, Any], extra: Mapping[str, Any],
                   nested: Callable[[DescriptionLike], dict[str, Any]]) -> dict[str, Any]:
        """This kind as a field of a ``-dump-vmstate`` file: *head* holds the field's
        own keys, *extra* the keys a newer QEMU wrote that are kept as they were,
        *nested* exports a nested description.  Only kinds read from a dump carry
        the C sizes a dump shows."""
        raise DescriptionError(
            f"field {name!r} is a {self.info} field: only fields imported from a dump have "
            "the C sizes a dump shows"
        )

    # -- a stream without vmdesc, fitted to a dump (vmstate.dump_layout) -------

    def fixed_count(self) -> int | None:
        """The number of elements a list of this kind always has (an array's count);
        None for any other kind."""
        return None

    def certain_size(self) -> int | None:
        """The bytes a dump's field of this kind surely takes on the wire; None when a
        struct or a length the dump does not give decides."""
        return None

    def unknown_length(self) -> bool:
        """A dump's custom field (QEMU exported no size): any length may be on the wire."""
        return self.size == 0

    def untyped(self) -> Kind:
        """This kind as the bytes of a stream read it: a dump's own types dropped."""
        return self

    # -- description files -----------------------------------------------------

    #: the attrs class of its description-file table (the TOML keys), with ``type``
    #: (a :class:`LazySpec` in the kind's class body)
    Spec: ClassVar[type]

    @classmethod
    @abc.abstractmethod
    def from_spec(cls, spec: Any, resolved: ResolvedRefs) -> Kind:
        """The kind of a checked *spec*; *resolved* holds its ``element``,
        ``elements`` and ``struct`` references as kinds and descriptions."""

    @abc.abstractmethod
    def to_spec(self, writer: SpecWriter) -> Any:
        """The spec of this kind (the inverse of :meth:`from_spec`)."""

    @classmethod
    def spec_problems(cls, spec: Any) -> Iterator[tuple[str, str]]:
        """(key, message) of each value of *spec* this kind cannot take."""
        return iter(())

    @classmethod
    def spec_references(cls, spec: Any) -> Iterator[tuple[str, str, str | None]]:
        """(key, field name, wanted type or None for any integer) of every earlier
        field *spec* reads a size or count from (``vmstate lint`` checks them)."""
        return iter(())

    def element_ref(self, writer: SpecWriter) -> Any:
        """This kind as an element in a description file: its inline table by default."""
        return self.to_spec(writer)


class FieldLike(Protocol):
    """What kinds and the interpreter use of a field (``vmstate.fields.Field``)."""

    name: str
    kind: Kind
    since: int
    exists: Condition | None

    @property
    def stored(self) -> bool: ...


class SubsectionLike(Protocol):
    """What the interpreter uses of a subsection (``vmstate.description.Subsection``)."""

    description: DescriptionLike
    needed: Condition | None

    @property
    def name(self) -> str: ...


class DescriptionLike(Protocol):
    """What kinds and the interpreter use of a description; the value itself is
    ``vmstate.description.Description``, above them (they do not import it)."""

    name: str
    version_id: int
    minimum_version_id: int
    fields: tuple[FieldLike, ...]
    subsections: tuple[SubsectionLike, ...]
    hooks: Any
    plans: dict[tuple[int, bool, bool], Any]
    stored_names: frozenset[str]
    subsections_by_wire_name: dict[bytes, SubsectionLike]

    @property
    def fixed_size(self) -> int | None: ...

    def parts(self, state: Any) -> list[tuple[str | int, Any, Any]]: ...

    def to_json(self, state: Any) -> Any: ...

    def from_json(self, data: Any) -> Any: ...

    def qemu_value(self, state: Any) -> Any: ...

    def vmdesc_entry(self, span: Span, version: int | None = None) -> dict[str, Any]: ...


class ResolvedRefs(Protocol):
    element: Kind | None
    elements: Sequence[Kind]
    struct: DescriptionLike | None


class SpecWriter(Protocol):
    """What a kind's :meth:`Kind.to_spec` asks of the description-file writer."""

    def element(self, kind: Kind) -> Any:
        """*kind* as an element reference (a type or struct name, or an inline table)."""

    def struct_key(self, desc: DescriptionLike) -> str:
        """The [structs] key *desc* is written under."""


def bytes_text(n: int | None) -> str:
    return _bytes(n)


def _bytes(n: int | None) -> str:
    if n is None:
        return "varies"
    return "1 byte" if n == 1 else f"{n} bytes"


def exact_bytes(value: Any, size: int) -> bytes:
    """*value* as bytes of exactly *size*; an EncodeError otherwise."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise EncodeError(f"expected bytes, got {type(value).__name__}")
    if len(value) != size:
        raise EncodeError(f"expected {size} bytes, got {len(value)}")
    return bytes(value)


def hex_bytes(data: Any) -> bytes:
    """Bytes from their JSON form (a hex string)."""
    if not isinstance(data, str):
        raise EncodeError(f"expected a hex string, got {type(data).__name__}")
    try:
        return bytes.fromhex(data)
    except ValueError as e:
        raise EncodeError(f"bad hex string: {e}") from None
