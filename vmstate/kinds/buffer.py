"""Raw bytes: fixed buffers (VMSTATE_BUFFER) and buffers sized by an earlier field
(VMSTATE_VBUFFER, VMSTATE_VBUFFER_UINT32).

``info`` names the QEMU type the bytes stand for ("buffer", or a custom
``VMStateInfo`` such as "pci config" or "msix state" that vmdesc records).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import attrs

from vmstate.errors import DecodeError, EncodeError, LimitError
from vmstate.interpreter.context import Frame, need
from vmstate.kinds.base import (
    Kind,
    Layout,
    LazySpec,
    ResolvedRefs,
    Spans,
    SpecWriter,
    bytes_text,
    exact_bytes,
    hex_bytes,
)


class BufferSpec:
    """The description-file table of the ``Buffer`` kind (an attrs class once ``Buffer.Spec`` is read)."""

    type: str
    size: int
    info: str = "buffer"


class VBufferSpec:
    """The description-file table of the ``VBuffer`` kind (an attrs class once ``VBuffer.Spec`` is read)."""

    type: str
    size: str
    max_size: int
    multiply: int = 1
    info: str = "buffer"


class _Bytes(Kind):
    """What every kind of raw bytes shares: JSON as hex, shown as hex."""

    value_type: ClassVar[str] = "bytes"

    def to_json(self, value: Any) -> Any:
        return bytes(value).hex()

    def from_json(self, data: Any) -> Any:
        return hex_bytes(data)

    def qemu_value(self, value: Any) -> Any:
        return bytes(value).hex(" ")

    def show_short(self, value: Any) -> str:
        if len(value) > 16:
            return f"{bytes(value[:16]).hex(' ')} ... ({len(value)} bytes)"
        return self.show(value)


@attrs.frozen(cache_hash=True)
class Buffer(_Bytes):
    """``size`` raw bytes."""

    size: int = attrs.field(validator=attrs.validators.ge(0))  # type: ignore[misc]
    info: str = "buffer"  # type: ignore[misc]
    type_name: ClassVar[str] = "buffer"
    Spec: ClassVar[type] = LazySpec(BufferSpec)
    _layout: Layout = attrs.field(init=False, repr=False, eq=False)

    def certain_size(self) -> int | None:
        return self.size or None

    def __attrs_post_init__(self) -> None:
        size = self.size

        def pack(value: Any) -> tuple[bytes]:
            return (exact_bytes(value, size),)

        object.__setattr__(self, "_layout", Layout(f"{size}s", "", 1, None, pack))

    def layout(self) -> Layout | None:
        return self._layout

    def load(self, buf: Any, pos: int, frame: Frame, name: str, spans: Spans) -> tuple[Any, int]:
        end = pos + self.size
        need(buf, pos, self.size, self.info)
        return bytes(buf[pos:end]), end

    def save(self, out: bytearray, value: Any, frame: Frame, name: str, spans: Spans) -> None:
        out += exact_bytes(value, self.size)

    def describe(self) -> tuple[str, str]:
        kind = "buffer" if self.info == "buffer" else f"buffer ({self.info})"
        return kind, bytes_text(self.size)

    def element_text(self) -> str:
        return f"buffer[{self.size}]"

    def element_rows(self) -> list[Any]:
        return []

    @classmethod
    def from_spec(cls, spec: Any, resolved: ResolvedRefs) -> Kind:
        return cls(spec.size, spec.info)

    def to_spec(self, writer: SpecWriter) -> Any:
        return self.Spec(type="buffer", size=self.size, info=self.info)


def count_of(frame: Frame, field: str, pos: int, what: str) -> int:
    """The integer an earlier (or held) field *field* holds, for a size or count."""
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


def size_on_save(length: Any, frame: Frame) -> int:
    """A variable size while saving: a bad size is the state's fault, not the input's."""
    try:
        return length(frame, 0)
    except DecodeError as e:
        raise EncodeError(e.message, expected=e.expected, found=e.found) from None


@attrs.frozen(cache_hash=True)
class VBuffer(_Bytes):
    """Bytes whose length is an earlier field times ``multiply``, at most ``max_size``."""

    size_field: str
    max_size: int = attrs.field(validator=attrs.validators.ge(0))
    multiply: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    info: str = "buffer"  # type: ignore[misc]
    type_name: ClassVar[str] = "vbuffer"
    Spec: ClassVar[type] = LazySpec(VBufferSpec)
    #: what ``vmstate lint`` wants the size field to be (None: any integer)
    size_type: ClassVar[str | None] = None
    variable: ClassVar[bool] = True

    def compare_shape(self, other: Kind) -> Iterator[tuple[str, str]]:
        if not isinstance(other, VBuffer):
            return
        if self.size_field != other.size_field or self.multiply != other.multiply:
            yield ("buffer-size", f"size {self.size_field} x{self.multiply} became "
                   f"{other.size_field} x{other.multiply}")
        if other.max_size < self.max_size:
            yield ("bound-shrunk", f"the destination takes at most {other.max_size} bytes, the "
                   f"source may send {self.max_size}")

    def length(self, frame: Frame, pos: int) -> int:
        n = count_of(frame, self.size_field, pos, "buffer size") * self.multiply
        limit = min(self.max_size, frame.ctx.limits.max_buffer)
        if not 0 <= n <= limit:
            raise LimitError(
                "variable buffer size out of bounds",
                offset=pos,
                expected=f"0..{limit} bytes ({self.size_field} x {self.multiply})",
                found=str(n),
            )
        return n

    def load(self, buf: Any, pos: int, frame: Frame, name: str, spans: Spans) -> tuple[Any, int]:
        n = self.length(frame, pos)
        need(buf, pos, n, "buffer")
        return bytes(buf[pos : pos + n]), pos + n

    def save(self, out: bytearray, value: Any, frame: Frame, name: str, spans: Spans) -> None:
        out += exact_bytes(value, size_on_save(self.length, frame))

    def describe(self) -> tuple[str, str]:
        return self.type_name, f"{self.size_field} x {self.multiply} <= {bytes_text(self.max_size)}"

    @classmethod
    def spec_references(cls, spec: Any) -> Iterator[tuple[str, str, str | None]]:
        yield "size", spec.size, cls.size_type

    @classmethod
    def from_spec(cls, spec: Any, resolved: ResolvedRefs) -> Kind:
        return cls(spec.size, spec.max_size, spec.multiply, spec.info)

    def to_spec(self, writer: SpecWriter) -> Any:
        return self.Spec(type=self.type_name, size=self.size_field, max_size=self.max_size,
                         multiply=self.multiply, info=self.info)
