"""Numbers and bools: QEMU's scalar ``VMStateInfo`` types, big-endian on the wire.

``info`` is QEMU's type name (``"uint16"``, ``"int32 equal"``, ``"timer"``...).
"equal" and "le" types check the loaded value against the destination's own
(held) value, as QEMU's ``get_uint32_equal`` and ``get_int32_le`` do.  A bool
byte other than 0 or 1 (QEMU reads any byte as a bool) stays the int it was, so
the value re-encodes to the same byte.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs

from vmstate.errors import DescriptionError, EncodeError, IncompatibleError
from vmstate.interpreter.context import Frame, need
from vmstate.kinds.base import (
    Kind,
    Layout,
    LazySpec,
    ResolvedRefs,
    Spans,
    SpecWriter,
    bytes_text,
    codec,
    single,
)

#: QEMU info name -> (struct code, check).  Check: "" none, "equal", "le".
#: Codes are big-endian (VMState's order) unless they start with "<".
SCALAR_TYPES: dict[str, tuple[str, str]] = {
    "bool": ("B", ""),
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
#: integer types a count or size field may have
INTEGER_CODES = frozenset("bBhHiIqQ")
_FLOATS = frozenset({"float64", "CPU_Double_U"})
#: types QEMU's analyze-migration.py prints unsigned; the others of _SIGNED it prints signed
_UNSIGNED = frozenset({"uint8", "uint16", "uint32", "uint64", "uint32 equal"})
_SIGNED = frozenset(
    {"int8", "int16", "int32", "int64", "int32 equal", "int32 le", "int64 equal", "uint8 equal",
     "uint16 equal"}
)
_D = struct.Struct(">d")
_Q = struct.Struct(">Q")


class ScalarSpec:
    """The description-file table of the ``Scalar`` kind (an attrs class once ``Scalar.Spec`` is read)."""

    type: str


@functools.cache
def scalar_kind(info: str) -> Scalar:
    """The (immutable, shared) kind of scalar type *info*."""
    return Scalar(info)


def _bool_value(values: Sequence[Any]) -> Any:
    byte = values[0]
    return byte == 1 if byte <= 1 else byte


def _bool_pack(value: Any) -> Sequence[Any]:
    if isinstance(value, bool):
        return (int(value),)
    if isinstance(value, int) and 0 <= value <= 0xFF:
        return (value,)
    raise EncodeError(f"expected true, false or a byte, got {value!r}")


@attrs.frozen(cache_hash=True)
class Scalar(Kind):
    """A number or bool of QEMU's type ``info``."""

    info: str = attrs.field()  # type: ignore[misc]
    scalar: ClassVar[bool] = True
    Spec: ClassVar[type] = LazySpec(ScalarSpec)
    size: int = attrs.field(init=False)
    #: "" none, "equal" or "le": compared with the destination's held value on load
    check: str = attrs.field(init=False)
    _codec: struct.Struct = attrs.field(init=False, repr=False, eq=False)
    _layout: Layout = attrs.field(init=False, repr=False, eq=False)
    #: how QEMU's analyzer prints one value; None: as its hex bytes (_qemu_renderer)
    _qemu: Any = attrs.field(init=False, repr=False, eq=False)

    @info.validator
    def _known(self, _a: attrs.Attribute[str], value: str) -> None:
        if value not in SCALAR_TYPES:
            raise DescriptionError(f"unknown scalar type {value!r}")

    def __attrs_post_init__(self) -> None:
        code, check = SCALAR_TYPES[self.info]
        order = "<" if code.startswith("<") else ">"
        code = code.lstrip("<")
        if code in "bB":
            order = ""  # one byte: no order, so it merges with either
        if self.info == "bool":
            layout = Layout(code, order, 1, _bool_value, _bool_pack)
        else:
            layout = Layout(code, order, 1, None, single, checked=bool(check))
        object.__setattr__(self, "_layout", layout)
        object.__setattr__(self, "_codec", codec(order or ">", code))
        object.__setattr__(self, "size", layout.size)
        object.__setattr__(self, "check", check)
        object.__setattr__(self, "_qemu", _qemu_renderer(self.info, self.size))

    @property
    def type_name(self) -> str:  # type: ignore[override]
        return self.info

    @property
    def value_type(self) -> str:  # type: ignore[override]
        return "float" if self.info in _FLOATS else "int"

    @property
    def is_integer(self) -> bool:  # type: ignore[override]
        return self.info != "bool" and self._layout.fmt in INTEGER_CODES

    def layout(self) -> Layout | None:
        return self._layout

    def load(self, buf: Any, pos: int, frame: Frame, name: str, spans: Spans) -> tuple[Any, int]:
        need(buf, pos, self.size, self.info)
        (value,) = self._codec.unpack_from(buf, pos)
        if self.info == "bool":
            value = _bool_value((value,))
        elif self.check and frame.ctx.checks and frame.held is not None and name in frame.held:
            self._check(value, frame.held[name], pos, name)
        return value, pos + self.size

    def _check(self, value: int, held: Any, pos: int, name: str) -> None:
        ok = value == held if self.check == "equal" else 0 <= value <= held
        if not ok:
            relation = "does not equal" if self.check == "equal" else "is not within 0 and"
            raise IncompatibleError(
                f"{name} {relation} the value held by the destination ({self.info})",
                offset=pos,
                expected=f"{held:#x}" if self.check == "equal" else f"0 <= value <= {held}",
                found=f"{value:#x}",
            )

    def save(self, out: bytearray, value: Any, frame: Frame, name: str, spans: Spans) -> None:
        out += self.pack(value)

    def pack(self, value: Any) -> bytes:
        values = self._layout.pack(value)
        if isinstance(value, bool) and self.info != "bool":
            values = (int(value),)
        try:
            return self._codec.pack(*values)
        except (struct.error, TypeError, OverflowError) as exc:
            code = self._codec.format.lstrip("<>")
            if code not in INTEGER_CODES or self.info == "bool":
                raise EncodeError(f"{value!r} does not fit {self.info}: {exc}") from None
            bits = 8 * self.size
            signed = code.islower()
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
            raise EncodeError(
                f"{self.info} cannot hold it",
                expected=f"an integer in {lo}..{hi}",
                found=repr(value)[:40],
            ) from None

    def to_json(self, value: Any) -> Any:
        if self.info in _FLOATS and not math.isfinite(value):
            return f"{_Q.unpack(_D.pack(value))[0]:#018x}"
        return value

    def from_json(self, data: Any) -> Any:
        if self.info in _FLOATS:
            if isinstance(data, str):
                try:
                    return _D.unpack(_Q.pack(int(data, 16)))[0]
                except (ValueError, struct.error) as e:
                    raise EncodeError(f"bad float bits {data!r}: {e}") from None
            if isinstance(data, bool) or not isinstance(data, int | float):
                raise EncodeError(f"expected a number, got {data!r}")
            return float(data)
        if self.info == "bool":
            if isinstance(data, bool) or (isinstance(data, int) and 1 < data <= 0xFF):
                return data
            raise EncodeError(f"expected true or false, got {data!r}")
        if isinstance(data, bool) or not isinstance(data, int):
            raise EncodeError(f"expected an integer, got {data!r}")
        return data

    def show(self, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value} ({value & ((1 << (8 * self.size)) - 1):#x})"
        return repr(value)

    def show_short(self, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:#x}" if value >= 10 else str(value)
        return repr(value)

    def qemu_value(self, value: Any) -> Any:
        render = self._qemu
        return render(value) if render is not None else self.pack(value).hex(" ")

    def describe(self) -> tuple[str, str]:
        return self.info, bytes_text(self.size)

    def element_text(self) -> str:
        return self.info

    def element_rows(self) -> list[Any]:
        return []

    @classmethod
    def from_spec(cls, spec: Any, resolved: ResolvedRefs) -> Kind:
        return scalar_kind(spec.type)

    def to_spec(self, writer: SpecWriter) -> Any:
        return self.Spec(type=self.info)

    def element_ref(self, writer: SpecWriter) -> Any:
        return self.info


@functools.cache
def _qemu_renderer(info: str, size: int) -> Any:
    """How analyze-migration.py prints a scalar of type *info*: None means as hex bytes."""
    if info == "bool":
        return lambda value: bool(value)
    if info not in _UNSIGNED and info not in _SIGNED:
        return None
    width, bits = size * 2, size * 8
    mask = (1 << bits) - 1
    hex_of = f"0x{{:0{width}x}}".format
    if info in _UNSIGNED:
        return lambda value: hex_of(value & mask)

    def signed(value: int) -> str:
        unsigned = value & mask
        if unsigned >> (bits - 1):
            return f"{hex_of(unsigned)} ({unsigned - (1 << bits)})"
        return hex_of(unsigned)

    return signed


def qemu_values(kind: Scalar, values: list[Any]) -> list[Any]:
    """Many scalars as the analyzer prints them; the common case (in range,
    non-negative) without a Python call each."""
    size, info = kind.size, kind.info
    # signed values print as unsigned hex only when none is negative or past the sign bit
    bulk = info in _UNSIGNED or (
        info in _SIGNED and min(values, default=-1) >= 0 and max(values) < 1 << (8 * size - 1)
    )
    if values and bulk:
        # one hex string of all of them, split in C: far faster than formatting each;
        # packing refuses what is out of an unsigned range (then each is rendered alone)
        try:
            data = struct.pack(f">{len(values)}{_UNSIGNED_CODE[size]}", *values)
        except struct.error:
            return [kind.qemu_value(v) for v in values]
        if size == 1:
            return list(map(_BYTE_HEX.__getitem__, data))
        return ("0x" + data.hex(" ", size).replace(" ", " 0x")).split(" ")
    return [kind.qemu_value(v) for v in values]


_UNSIGNED_CODE = {1: "B", 2: "H", 4: "I", 8: "Q"}
#: every byte as the analyzer prints it: arrays of bytes are looked up, not formatted
_BYTE_HEX = tuple(f"0x{i:02x}" for i in range(256))
