"""A NULL element of an array of pointers (QEMU's vmstate_info_nullptr).

QEMU writes the byte ``'0'`` (0x30) where an array of pointers holds NULL, and
since QEMU 10.0 its vmdesc describes that element ``{"type": "nullptr", "size":
1}``, in a piece of its own.  The value is None; QEMU's analyzer shows it as
``"nullptr"``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from vmstate.errors import DecodeError, EncodeError
from vmstate.interpreter.context import Frame, need
from vmstate.kinds.arrays import NULLPTR_MARKER
from vmstate.kinds.base import Kind, LazySpec, ResolvedRefs, Spans, SpecWriter


class NullPointerSpec:
    """The description-file table of the ``NullPointer`` kind (an attrs class once ``NullPointer.Spec`` is read)."""

    type: str


@attrs.frozen
class NullPointer(Kind):
    """One NULL pointer: the marker byte on the wire, None in state."""

    info: ClassVar[str] = "nullptr"
    type_name: ClassVar[str] = "nullptr"
    Spec: ClassVar[type] = LazySpec(NullPointerSpec)
    size: int = attrs.field(default=1, init=False)  # type: ignore[misc]

    def load(self, buf: Any, pos: int, frame: Frame, name: str, spans: Spans) -> tuple[Any, int]:
        need(buf, pos, 1, "null pointer marker")
        if buf[pos] != NULLPTR_MARKER:
            raise DecodeError(
                "null pointer marker missing",
                offset=pos,
                expected=f"{NULLPTR_MARKER:#x}",
                found=f"{buf[pos]:#x}",
            )
        return None, pos + 1

    def save(self, out: bytearray, value: Any, frame: Frame, name: str, spans: Spans) -> None:
        if value is not None:
            raise EncodeError(f"a NULL pointer element holds None, not {type(value).__name__}")
        out.append(NULLPTR_MARKER)

    def show(self, value: Any) -> str:
        return "NULL"

    def qemu_value(self, value: Any) -> Any:
        return "nullptr"

    def element_text(self) -> str:
        return self.info

    @classmethod
    def from_spec(cls, spec: Any, resolved: ResolvedRefs) -> Kind:
        return cls()

    def to_spec(self, writer: SpecWriter) -> Any:
        return self.Spec(type=self.type_name)
