"""Bitmaps (VMSTATE_BITMAP): ``nbits`` bits as big-endian 64-bit words.

The value is one int, bit i of the bitmap being bit i of the int.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs

from vmstate.errors import EncodeError
from vmstate.interpreter.context import Frame, need
from vmstate.kinds.base import Kind, Layout, LazySpec, ResolvedRefs, Spans, SpecWriter, bytes_text

_MASK = (1 << 64) - 1


class BitmapSpec:
    """The description-file table of the ``Bitmap`` kind (an attrs class once ``Bitmap.Spec`` is read)."""

    type: str
    nbits: int


@attrs.frozen
class Bitmap(Kind):
    """``nbits`` bits in ``ceil(nbits / 64)`` big-endian words."""

    nbits: int = attrs.field(validator=attrs.validators.ge(0))
    info: ClassVar[str] = "bitmap"
    value_type: ClassVar[str] = "int"
    type_name: ClassVar[str] = "bitmap"
    Spec: ClassVar[type] = LazySpec(BitmapSpec)
    size: int = attrs.field(init=False)  # type: ignore[misc]
    _layout: Layout = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        words = math.ceil(self.nbits / 64)
        object.__setattr__(self, "size", 8 * words)

        def unpack(values: Sequence[int]) -> int:
            return int.from_bytes(struct.pack(f"<{words}Q", *values), "little")

        def pack(value: Any) -> Sequence[int]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise EncodeError(f"bitmap value must be a non-negative int, got {value!r}")
            if value >> (64 * words):
                raise EncodeError(f"bitmap value has bits beyond {64 * words}")
            return [(value >> (64 * k)) & _MASK for k in range(words)]

        object.__setattr__(self, "_layout", Layout(f"{words}Q", ">", words, unpack, pack))

    def layout(self) -> Layout | None:
        return self._layout

    def load(self, buf: Any, pos: int, frame: Frame, name: str, spans: Spans) -> tuple[Any, int]:
        need(buf, pos, self.size, "bitmap")
        layout = self._layout
        values = struct.unpack_from(f">{layout.fmt}", buf, pos)
        return layout.unpack(values), pos + self.size  # type: ignore[misc]

    def save(self, out: bytearray, value: Any, frame: Frame, name: str, spans: Spans) -> None:
        out += struct.pack(f">{self._layout.fmt}", *self._layout.pack(value))

    def to_json(self, value: Any) -> Any:
        return hex(value)

    def from_json(self, data: Any) -> Any:
        if not isinstance(data, str):
            raise EncodeError(f"expected a hex string, got {type(data).__name__}")
        try:
            return int(data, 16)
        except ValueError as e:
            raise EncodeError(f"bad bitmap {data!r}: {e}") from None

    def show(self, value: Any) -> str:
        return hex(value)

    def qemu_value(self, value: Any) -> Any:
        out = bytearray()
        self.save(out, value, None, "", None)  # type: ignore[arg-type]
        return out.hex(" ")

    def describe(self) -> tuple[str, str]:
        return f"bitmap of {self.nbits} bits", bytes_text(self.size)

    @classmethod
    def from_spec(cls, spec: Any, resolved: ResolvedRefs) -> Kind:
        return cls(spec.nbits)

    def to_spec(self, writer: SpecWriter) -> Any:
        return self.Spec(type="bitmap", nbits=self.nbits)
