"""Field kinds: one definition that both loads and saves, with QEMU's wire encoding.

A :class:`Field` is a name, a kind, the version it appeared in (``since``) and
an optional exists-test that overrides the version.  Kinds are immutable
values; each knows its bytes (``load``/``save``) so a description is the
whole truth about a layout.  Constructors mirror QEMU's ``VMSTATE_*`` macros,
one readable line per field::

    uint16("command"),
    buffer("config", 256, exists="not is_express()"),
    varray("vectors", msix_entry, count="nr_vectors", max_count=2048),

Values in state are plain Python data: ``int``, ``bool``, ``float``,
``bytes``, ``list`` and ``dict``.
"""

from __future__ import annotations

import abc
import functools
import itertools
import math
import operator
import struct as _struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from vmstate._wire import Frame, need
from vmstate.errors import DecodeError, DescriptionError, EncodeError, IncompatibleError, LimitError
from vmstate.predicates import Condition, as_condition

if TYPE_CHECKING:
    from vmstate.description import Description

__all__ = [
    "SCALAR_TYPES",
    "Array",
    "Bitmap",
    "Buffer",
    "Field",
    "Kind",
    "QTailQ",
    "Scalar",
    "Seq",
    "Struct",
    "Unused",
    "VArray",
    "VBuffer",
    "Validate",
]

#: QEMU info name -> (struct format, check).  Check: "" none, "equal", "le".
#: Formats are big-endian (VMState's order) unless they start with "<".
SCALAR_TYPES: dict[str, tuple[str, str]] = {
    "bool": ("?", ""),
    "int8": ("b", ""),
    "int16": ("h", ""),
    "int32": ("i", ""),
    "int64": ("q", ""),
    "uint8": ("B", ""),
    "uint16": ("H", ""),
    "uint32": ("I", ""),
    "uint64": ("Q", ""),
    "int32 equal": ("i", "equal"),
    "uint8 equal": ("B", "equal"),
    "uint16 equal": ("H", "equal"),
    "uint32 equal": ("I", "equal"),
    "int64 equal": ("Q", "equal"),  # sic: QEMU's uint64_equal is named "int64 equal"
    "int32 le": ("i", "le"),
    "timer": ("q", ""),
    "CPU_Double_U": ("d", ""),
    "float64": ("d", ""),
    # Not QEMU's: little-endian numbers, for device data in a driver's own layout
    # (a C struct in host order, like mtty's migration data).
    "le_int16": ("<h", ""),
    "le_int32": ("<i", ""),
    "le_int64": ("<q", ""),
    "le_uint16": ("<H", ""),
    "le_uint32": ("<I", ""),
    "le_uint64": ("<Q", ""),
}
#: count field types accepted for variable arrays
COUNT_TYPES = frozenset({"uint8", "uint16", "uint32", "int32"})
NULLPTR_MARKER = 0x30


@functools.cache
def scalar_kind(info: str) -> Scalar:
    """The (immutable, shared) kind of scalar type *info*."""
    return Scalar(info)


def kind_of(element: str | Kind | Description) -> Kind:
    """An element given as a type name, a kind or a description (a struct)."""
    if isinstance(element, str):
        return scalar_kind(element)
    if isinstance(element, Kind):
        return element
    return Struct(element)


class Kind(abc.ABC):
    """Base of field kinds.  ``size`` is the fixed wire size, or None if it varies."""

    info: ClassVar[str] = ""
    size: int | None = None
    #: struct format when the kind is a plain fixed value (fast path), else None
    fmt: str | None = None
    #: True when the value is kept in state (padding and validate checks are not)
    stored: ClassVar[bool] = True

    @abc.abstractmethod
    def load(self, buf: bytes, pos: int, frame: Frame, name: str) -> tuple[Any, int]:
        """Decode one value at *pos*; return it and the position after it."""

    @abc.abstractmethod
    def save(self, out: bytearray, value: Any, frame: Frame, name: str) -> None:
        """Append the bytes of *value*."""


@functools.cache
def _codec(code: str) -> _struct.Struct:
    return _struct.Struct(code if code.startswith("<") else ">" + code)


@attrs.frozen
class Scalar(Kind):
    """A big-endian number or bool; ``info`` is QEMU's type name (``"int32 equal"``...)."""

    info: str = attrs.field()  # type: ignore[misc]
    size: int = attrs.field(init=False)
    fmt: str | None = attrs.field(init=False)
    check: str = attrs.field(init=False)
    _codec: _struct.Struct = attrs.field(init=False, repr=False, eq=False)

    @info.validator
    def _known(self, _a: attrs.Attribute[str], value: str) -> None:
        if value not in SCALAR_TYPES:
            raise DescriptionError(f"unknown scalar type {value!r}")

    def __attrs_post_init__(self) -> None:
        code, check = SCALAR_TYPES[self.info]
        codec = _codec(code)
        object.__setattr__(self, "_codec", codec)
        object.__setattr__(self, "size", codec.size)
        object.__setattr__(self, "check", check)
        # the fast path merges big-endian runs: checked and little-endian values stay out
        object.__setattr__(self, "fmt", None if check or code.startswith("<") else code)

    def load(self, buf: bytes, pos: int, frame: Frame, name: str) -> tuple[Any, int]:
        need(buf, pos, self.size, self.info)
        (value,) = self._codec.unpack_from(buf, pos)
        if self.check and frame.ctx.checks and frame.held is not None and name in frame.held:
            held = frame.held[name]
            ok = value == held if self.check == "equal" else 0 <= value <= held
            if not ok:
                relation = "does not equal" if self.check == "equal" else "is not within 0 and"
                raise IncompatibleError(
                    f"{name} {relation} the value held by the destination ({self.info})",
                    offset=pos,
                    expected=f"{held:#x}" if self.check == "equal" else f"0 <= value <= {held}",
                    found=f"{value:#x}",
                )
        return value, pos + self.size

    def save(self, out: bytearray, value: Any, frame: Frame, name: str) -> None:
        out += self.pack(value)

    def pack(self, value: Any) -> bytes:
        if isinstance(value, bool) and self.info not in ("bool",):
            value = int(value)
        try:
            return self._codec.pack(value)
        except (_struct.error, TypeError, OverflowError) as exc:
            raise EncodeError(f"{value!r} does not fit {self.info}: {exc}") from None


@attrs.frozen
class Buffer(Kind):
    """Raw bytes of a fixed length.  ``info`` names the QEMU type the bytes stand for."""

    size: int = attrs.field(validator=attrs.validators.ge(0))  # type: ignore[misc]
    info: str = "buffer"  # type: ignore[misc]
    fmt: str | None = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "fmt", f"{self.size}s")

    def load(self, buf: bytes, pos: int, frame: Frame, name: str) -> tuple[Any, int]:
        end = pos + self.size
        need(buf, pos, self.size, self.info)
        return buf[pos:end], end

    def save(self, out: bytearray, value: Any, frame: Frame, name: str) -> None:
        out += _exact_bytes(value, self.size)


def _exact_bytes(value: Any, size: int) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise EncodeError(f"expected bytes, got {type(value).__name__}")
    if len(value) != size:
        raise EncodeError(f"expected {size} bytes, got {len(value)}")
    return bytes(value)


def _count(frame: Frame, field: str, pos: int, what: str) -> int:
    try:
        value = frame.lookup(field)
    except KeyError:
        raise DecodeError(
            f"{what} refers to {field!r}, which has no value",
            offset=pos,
            expected=f"a loaded or held field {field!r}",
            found="nothing",
        ) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(
            f"{what} field {field!r} is not a number",
            offset=pos,
            expected="an integer",
            found=type(value).__name__,
        )
    return value


def _on_save(size_of: Callable[[Frame, int], int], frame: Frame) -> int:
    """A variable size while saving: a bad size is the state's fault, not the input's."""
    try:
        return size_of(frame, 0)
    except DecodeError as e:
        raise EncodeError(f"{e.message} (expected {e.expected}, found {e.found})") from None


@attrs.frozen
class VBuffer(Kind):
    """Bytes whose length is an earlier field times ``multiply``, at most ``max_size``."""

    size_field: str
    max_size: int = attrs.field(validator=attrs.validators.ge(0))
    multiply: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    info: str = "buffer"  # type: ignore[misc]

    def length(self, frame: Frame, pos: int) -> int:
        n = _count(frame, self.size_field, pos, "buffer size") * self.multiply
        limit = min(self.max_size, frame.ctx.limits.max_buffer)
        if not 0 <= n <= limit:
            raise LimitError(
                "variable buffer size out of bounds",
                offset=pos,
                expected=f"0..{limit} bytes ({self.size_field} x {self.multiply})",
                found=str(n),
            )
        return n

    def load(self, buf: bytes, pos: int, frame: Frame, name: str) -> tuple[Any, int]:
        n = self.length(frame, pos)
        need(buf, pos, n, "buffer")
        return buf[pos : pos + n], pos + n

    def save(self, out: bytearray, value: Any, frame: Frame, name: str) -> None:
        out += _exact_bytes(value, _on_save(self.length, frame))


@attrs.frozen
class Bitmap(Kind):
    """``nbits`` bits as big-endian 64-bit words; the value is an int, bit i = bit i."""

    nbits: int = attrs.field(validator=attrs.validators.ge(0))
    info: ClassVar[str] = "bitmap"
    size: int = attrs.field(init=False)  # type: ignore[misc]

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "size", 8 * math.ceil(self.nbits / 64))

    def load(self, buf: bytes, pos: int, frame: Frame, name: str) -> tuple[Any, int]:
        need(buf, pos, self.size, "bitmap")
        words = _struct.unpack_from(f">{self.size // 8}Q", buf, pos)
        value = 0
        for k, word in enumerate(words):
            value |= word << (64 * k)
        return value, pos + self.size

    def save(self, out: bytearray, value: Any, frame: Frame, name: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise EncodeError(f"bitmap value must be a non-negative int, got {value!r}")
        nwords = self.size // 8
        if value >> (64 * nwords):
            raise EncodeError(f"bitmap value has bits beyond {64 * nwords}")
        mask = (1 << 64) - 1
        out += _struct.pack(f">{nwords}Q", *((value >> (64 * k)) & mask for k in range(nwords)))


@attrs.frozen
class Unused(Kind):
    """Padding: zeros on save, skipped on load, not kept in state."""

    size: int = attrs.field(validator=attrs.validators.ge(0))  # type: ignore[misc]
    info: ClassVar[str] = "unused_buffer"
    stored: ClassVar[bool] = False

    def load(self, buf: bytes, pos: int, frame: Frame, name: str) -> tuple[Any, int]:
        need(buf, pos, self.size, "padding")
        return None, pos + self.size

    def save(self, out: bytearray, value: Any, frame: Frame, name: str) -> None:
        out += bytes(self.size)


@attrs.frozen
class Validate(Kind):
    """No bytes: the field's exists-test must hold (QEMU's VMSTATE_VALIDATE)."""

    info: ClassVar[str] = "validate"
    size: int = attrs.field(default=0, init=False)  # type: ignore[misc]
    stored: ClassVar[bool] = False

    def load(self, buf: bytes, pos: int, frame: Frame, name: str) -> tuple[Any, int]:
        return None, pos

    def save(self, out: bytearray, value: Any, frame: Frame, name: str) -> None:
        return None


@attrs.frozen
class Struct(Kind):
    """A nested description, loaded at its own version, or at ``version`` when given
    (QEMU's vstruct).  ``info`` is QEMU's type name: "struct", "vstruct", or "tmp"
    for VMSTATE_WITH_TMP, which vmdesc records inline."""

    description: Description
    version: int | None = None
    info: str = "struct"  # type: ignore[misc]

    @property
    def size(self) -> int | None:  # type: ignore[override]
        return self.description.fixed_size

    def load(self, buf: bytes, pos: int, frame: Frame, name: str) -> tuple[Any, int]:
        held = frame.held.get(name) if frame.held is not None else None
        version = self.description.version_id if self.version is None else self.version
        return self.description.load_at(buf, pos, version, frame.ctx, held)

    def save(self, out: bytearray, value: Any, frame: Frame, name: str) -> None:
        version = self.description.version_id if self.version is None else self.version
        held = frame.held.get(name) if frame.held is not None else None
        self.description.save_into(out, value, version, frame.ctx, held=held)


class _Elements(Kind):
    """Shared load/save of a run of ``n`` elements of one kind."""

    element: Kind
    nullable: bool = False

    def _load_n(self, buf: bytes, pos: int, frame: Frame, name: str, n: int) -> tuple[Any, int]:
        frame.ctx.spend(n, pos)
        el = self.element
        if el.fmt is not None and not self.nullable:
            width = el.size or 0
            need(buf, pos, width * n, f"{n} elements")
            if isinstance(el, Buffer):
                return [
                    buf[p : p + width] for p in range(pos, pos + width * n, width)
                ], pos + width * n
            values = list(_struct.unpack_from(f">{n}{el.fmt}", buf, pos))
            return values, pos + width * n
        flat = _flat_struct(el) if not self.nullable else None
        if flat is not None:
            names, codec = flat
            need(buf, pos, codec.size * n, f"{n} elements")
            end = pos + codec.size * n
            rows = codec.iter_unpack(buf[pos:end])
            return list(map(dict, map(zip, itertools.repeat(names), rows))), end
        held_list = frame.held.get(name) if frame.held is not None else None
        out: list[Any] = []
        for i in range(n):
            held_el = held_list[i] if isinstance(held_list, list) and i < len(held_list) else None
            if self.nullable and held_el is None and held_list is not None:
                need(buf, pos, 1, "null pointer marker")
                if buf[pos] != NULLPTR_MARKER:
                    raise DecodeError(
                        "null element marker missing",
                        offset=pos,
                        expected=f"{NULLPTR_MARKER:#x}",
                        found=f"{buf[pos]:#x}",
                        path=(i,),
                    )
                out.append(None)
                pos += 1
                continue
            try:
                sub = Frame(
                    {},
                    frame.version_id,
                    {name: held_el} if held_el is not None else None,
                    frame.ctx,
                )
                value, pos = el.load(buf, pos, sub, name)
            except DecodeError as e:
                raise e.within(i) from None
            out.append(value)
        return out, pos

    def _save_n(self, out: bytearray, value: Any, frame: Frame, n: int, name: str) -> None:
        if not isinstance(value, list | tuple):
            raise EncodeError(f"expected a list, got {type(value).__name__}")
        if len(value) != n:
            raise EncodeError(f"expected {n} elements, got {len(value)}")
        el = self.element
        if isinstance(el, Scalar) and el.fmt is not None and not self.nullable:
            try:
                out += _struct.pack(f">{n}{el.fmt}", *value)
                return
            except (_struct.error, TypeError, OverflowError):
                pass  # fall through to per-element packing for a precise error
        flat = _flat_struct(el) if not self.nullable else None
        if flat is not None:
            names, codec = flat
            try:
                out += _repeated(codec.format, n).pack(
                    *itertools.chain.from_iterable(map(operator.itemgetter(*names), value))
                )
                return
            except (_struct.error, TypeError, KeyError, OverflowError):
                pass  # fall through for a precise error
        for i, item in enumerate(value):
            try:
                if item is None and self.nullable:
                    out.append(NULLPTR_MARKER)
                else:
                    el.save(out, item, frame, name)
            except EncodeError as e:
                raise e.within(i) from None


@functools.lru_cache(maxsize=64)
def _repeated(fmt: str, n: int) -> _struct.Struct:
    """One codec for *n* consecutive records of *fmt* (big-endian)."""
    return _struct.Struct(">" + fmt.lstrip(">") * n)


def _flat_struct(kind: Kind) -> tuple[tuple[str, ...], _struct.Struct] | None:
    """Names and codec when *kind* is a struct of plain always-present fixed fields."""
    if isinstance(kind, Struct):
        return kind.description.flat_layout
    return None


@attrs.frozen
class Array(_Elements):
    """``count`` elements of one kind; ``nullable`` for arrays of pointers (0x30 = NULL)."""

    element: Kind
    count: int = attrs.field(validator=attrs.validators.ge(0))
    nullable: bool = False

    @property
    def info(self) -> str:  # type: ignore[override]
        return self.element.info

    @property
    def size(self) -> int | None:  # type: ignore[override]
        el = self.element.size
        return None if el is None or self.nullable else el * self.count

    def load(self, buf: bytes, pos: int, frame: Frame, name: str) -> tuple[Any, int]:
        return self._load_n(buf, pos, frame, name, self.count)

    def save(self, out: bytearray, value: Any, frame: Frame, name: str) -> None:
        self._save_n(out, value, frame, self.count, name)


@attrs.frozen
class VArray(_Elements):
    """Elements counted by an earlier field (uint8/16/32 or int32), at most ``max_count``."""

    element: Kind
    count_field: str
    max_count: int = attrs.field(validator=attrs.validators.ge(0))
    count_type: str = attrs.field(default="uint32", validator=attrs.validators.in_(COUNT_TYPES))
    multiply: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    nullable: bool = False

    @property
    def info(self) -> str:  # type: ignore[override]
        return self.element.info

    def count(self, frame: Frame, pos: int) -> int:
        n = _count(frame, self.count_field, pos, "array count") * self.multiply
        if not 0 <= n <= self.max_count:
            raise LimitError(
                "array count out of bounds",
                offset=pos,
                expected=f"0..{self.max_count} elements ({self.count_field})",
                found=str(n),
            )
        return n

    def load(self, buf: bytes, pos: int, frame: Frame, name: str) -> tuple[Any, int]:
        return self._load_n(buf, pos, frame, name, self.count(frame, pos))

    def save(self, out: bytearray, value: Any, frame: Frame, name: str) -> None:
        self._save_n(out, value, frame, _on_save(self.count, frame), name)


@attrs.frozen
class Seq(Kind):
    """Elements that each have their own layout, as a stream's vmdesc records
    arrays whose elements differ (one entry per ``index``)."""

    elements: tuple[Kind, ...]

    @property
    def info(self) -> str:  # type: ignore[override]
        return self.elements[0].info if self.elements else "buffer"

    def load(self, buf: bytes, pos: int, frame: Frame, name: str) -> tuple[Any, int]:
        frame.ctx.spend(len(self.elements), pos)
        out = []
        for i, el in enumerate(self.elements):
            try:
                value, pos = el.load(buf, pos, frame, name)
            except DecodeError as e:
                raise e.within(i) from None
            out.append(value)
        return out, pos

    def save(self, out: bytearray, value: Any, frame: Frame, name: str) -> None:
        if not isinstance(value, list | tuple) or len(value) != len(self.elements):
            raise EncodeError(f"expected a list of {len(self.elements)} elements")
        for i, (el, item) in enumerate(zip(self.elements, value, strict=True)):
            try:
                el.save(out, item, frame, name)
            except EncodeError as e:
                raise e.within(i) from None


@attrs.frozen
class QTailQ(Kind):
    """A list: each element preceded by byte 1, the end marked by byte 0."""

    element: Kind
    info: ClassVar[str] = "qtailq"

    def load(self, buf: bytes, pos: int, frame: Frame, name: str) -> tuple[Any, int]:
        out: list[Any] = []
        while True:
            need(buf, pos, 1, "list marker")
            marker = buf[pos]
            if marker == 0:
                return out, pos + 1
            if marker != 1:
                raise DecodeError(
                    "bad list marker", offset=pos, expected="0 or 1", found=f"{marker:#x}"
                )
            frame.ctx.spend(1, pos)
            try:
                value, pos = self.element.load(buf, pos + 1, frame, name)
            except DecodeError as e:
                raise e.within(len(out)) from None
            out.append(value)

    def save(self, out: bytearray, value: Any, frame: Frame, name: str) -> None:
        if not isinstance(value, list | tuple):
            raise EncodeError(f"expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            out.append(1)
            try:
                self.element.save(out, item, frame, name)
            except EncodeError as e:
                raise e.within(i) from None
        out.append(0)


@attrs.frozen
class Field:
    """One entry of a description's field list."""

    name: str
    kind: Kind
    since: int = 0
    exists: Condition | None = attrs.field(default=None, converter=as_condition)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.kind, Validate) and self.exists is None:
            raise DescriptionError(f"validate field {self.name!r} needs a test")

    @property
    def stored(self) -> bool:
        return self.kind.stored


# -- constructors, one per QEMU VMSTATE_* family ---------------------------

Exists = str | Condition | None


def scalar(info: str) -> Callable[..., Field]:
    """A constructor for fields of the scalar type *info*."""

    def make(name: str, *, since: int = 0, exists: Exists = None) -> Field:
        return Field(name, scalar_kind(info), since, exists)

    make.__name__ = info.replace(" ", "_")
    make.__doc__ = f"A {info} field."
    return make


bool_ = scalar("bool")
int8, int16, int32, int64 = (scalar(t) for t in ("int8", "int16", "int32", "int64"))
uint8, uint16, uint32, uint64 = (scalar(t) for t in ("uint8", "uint16", "uint32", "uint64"))
int32_equal = scalar("int32 equal")
uint8_equal = scalar("uint8 equal")
uint16_equal = scalar("uint16 equal")
uint32_equal = scalar("uint32 equal")
uint64_equal = scalar("int64 equal")
int32_le = scalar("int32 le")
timer = scalar("timer")
float64 = scalar("float64")


def buffer(name: str, size: int, *, since: int = 0, exists: Exists = None) -> Field:
    return Field(name, Buffer(size), since, exists)


def vbuffer(
    name: str,
    size_field: str,
    max_size: int,
    *,
    multiply: int = 1,
    since: int = 0,
    exists: Exists = None,
) -> Field:
    return Field(name, VBuffer(size_field, max_size, multiply), since, exists)


def bitmap(name: str, nbits: int, *, since: int = 0, exists: Exists = None) -> Field:
    return Field(name, Bitmap(nbits), since, exists)


def unused(size: int, *, since: int = 0) -> Field:
    return Field("unused", Unused(size), since)


def validate(name: str, test: str | Condition) -> Field:
    return Field(name, Validate(), 0, test)


def struct(
    name: str,
    description: Description,
    *,
    version: int | None = None,
    since: int = 0,
    exists: Exists = None,
) -> Field:
    return Field(name, Struct(description, version), since, exists)


def array(
    name: str,
    element: str | Kind | Description,
    count: int,
    *,
    nullable: bool = False,
    since: int = 0,
    exists: Exists = None,
) -> Field:
    return Field(name, Array(kind_of(element), count, nullable), since, exists)


def varray(
    name: str,
    element: str | Kind | Description,
    count: str,
    max_count: int,
    *,
    count_type: str = "uint32",
    multiply: int = 1,
    since: int = 0,
    exists: Exists = None,
) -> Field:
    kind = VArray(kind_of(element), count, max_count, count_type, multiply)
    return Field(name, kind, since, exists)


def qtailq(name: str, element: Description, *, since: int = 0, exists: Exists = None) -> Field:
    return Field(name, QTailQ(Struct(element)), since, exists)
