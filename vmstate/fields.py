"""Fields: one entry of a description's field list, and constructors mirroring QEMU's
``VMSTATE_*`` macros, one readable line per field::

    uint16("command"),
    buffer("config", 256, exists="not is_express()"),
    varray("vectors", msix_entry, count="nr_vectors", max_count=2048),

A :class:`Field` is a name, a kind (:mod:`vmstate.kinds`), the version it
appeared in (``since``) and an optional exists-test that overrides the version.
Values in state are plain Python data: ``int``, ``bool``, ``float``, ``bytes``,
``list`` and ``dict``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from vmstate import lazy_getattr
from vmstate.errors import DescriptionError
from vmstate.kinds.arrays import COUNT_TYPES, NULLPTR_MARKER, Array, Seq, VArray
from vmstate.kinds.base import Kind, Layout
from vmstate.kinds.buffer import Buffer, VBuffer
from vmstate.kinds.scalar import SCALAR_TYPES, Scalar, scalar_kind
from vmstate.kinds.struct import Struct
from vmstate.predicates import Condition, as_condition

if TYPE_CHECKING:
    from vmstate.kinds.base import DescriptionLike
    from vmstate.kinds.bitmap import Bitmap
    from vmstate.kinds.padding import Unused, Validate
    from vmstate.kinds.qtailq import QTailQ
    from vmstate.kinds.vbuffer64 import VBufferUint64

#: kinds no stream's vmdesc uses, so that reading a stream never needs them: their
#: modules are imported when a constructor below or ``vmstate.fields.<Kind>`` first
#: asks (PEP 562), not at every start (about 9 ms)
_LATER_KINDS = {
    "Bitmap": "vmstate.kinds.bitmap",
    "Unused": "vmstate.kinds.padding",
    "Validate": "vmstate.kinds.padding",
    "QTailQ": "vmstate.kinds.qtailq",
    "VBufferUint64": "vmstate.kinds.vbuffer64",
}


__getattr__ = lazy_getattr(__name__, _LATER_KINDS, globals())

__all__ = [
    "COUNT_TYPES",
    "NULLPTR_MARKER",
    "SCALAR_TYPES",
    "Array",
    "Bitmap",
    "Buffer",
    "Field",
    "Kind",
    "Layout",
    "QTailQ",
    "Scalar",
    "Seq",
    "Struct",
    "Unused",
    "VArray",
    "VBuffer",
    "VBufferUint64",
    "Validate",
    "kind_of",
    "scalar_kind",
]


def kind_of(element: str | Kind | DescriptionLike) -> Kind:
    """An element given as a type name, a kind or a description (a struct)."""
    if isinstance(element, str):
        return scalar_kind(element)
    if isinstance(element, Kind):
        return element
    return Struct(element)


@attrs.frozen(cache_hash=True)
class Field:
    """One entry of a description's field list."""

    name: str
    kind: Kind
    since: int = 0
    exists: Condition | None = attrs.field(default=None, converter=as_condition)

    def __attrs_post_init__(self) -> None:
        if self.kind.validates and self.exists is None:
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


def vbuffer_uint64(
    name: str, size_field: str, max_size: int, *, multiply: int = 1, since: int = 0,
    exists: Exists = None,
) -> Field:
    from vmstate.kinds.vbuffer64 import VBufferUint64

    return Field(name, VBufferUint64(size_field, max_size, multiply), since, exists)


def bitmap(name: str, nbits: int, *, since: int = 0, exists: Exists = None) -> Field:
    from vmstate.kinds.bitmap import Bitmap

    return Field(name, Bitmap(nbits), since, exists)


def unused(size: int, *, since: int = 0) -> Field:
    from vmstate.kinds.padding import Unused

    return Field("unused", Unused(size), since)


def validate(name: str, test: str | Condition) -> Field:
    from vmstate.kinds.padding import Validate

    return Field(name, Validate(), 0, test)


def struct(
    name: str,
    description: DescriptionLike,
    *,
    version: int | None = None,
    since: int = 0,
    exists: Exists = None,
) -> Field:
    return Field(name, Struct(description, version), since, exists)


def array(
    name: str,
    element: str | Kind | DescriptionLike,
    count: int,
    *,
    nullable: bool = False,
    since: int = 0,
    exists: Exists = None,
) -> Field:
    return Field(name, Array(kind_of(element), count, nullable), since, exists)


def varray(
    name: str,
    element: str | Kind | DescriptionLike,
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


def qtailq(name: str, element: DescriptionLike, *, since: int = 0, exists: Exists = None) -> Field:
    from vmstate.kinds.qtailq import QTailQ

    return Field(name, QTailQ(Struct(element)), since, exists)
