"""Bytes and checks that are not state: padding (VMSTATE_UNUSED) and
VMSTATE_VALIDATE, whose exists-test must hold for the input to be accepted."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs

from vmstate.interpreter.context import Frame, need
from vmstate.kinds.base import Kind, Layout, LazySpec, ResolvedRefs, Spans, SpecWriter, bytes_text


class UnusedSpec:
    """The description-file table of the ``Unused`` kind (an attrs class once ``Unused.Spec`` is read)."""

    type: str
    size: int


class ValidateSpec:
    """The description-file table of the ``Validate`` kind (an attrs class once ``Validate.Spec`` is read)."""

    type: str


def _nothing(value: Any) -> tuple[()]:
    return ()


@attrs.frozen
class Unused(Kind):
    """Padding: zeros on save, skipped on load, not kept in state."""

    size: int = attrs.field(validator=attrs.validators.ge(0))  # type: ignore[misc]
    info: ClassVar[str] = "unused_buffer"
    type_name: ClassVar[str] = "unused"
    stored: ClassVar[bool] = False
    anonymous: ClassVar[bool] = True
    Spec: ClassVar[type] = LazySpec(UnusedSpec)
    _layout: Layout = attrs.field(init=False, repr=False, eq=False)

    def certain_size(self) -> int | None:
        return self.size

    def unknown_length(self) -> bool:
        return False

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_layout", Layout(f"{self.size}x", "", 0, _nothing, _nothing))

    def layout(self) -> Layout | None:
        return self._layout

    def load(self, buf: Any, pos: int, frame: Frame, name: str, spans: Spans) -> tuple[Any, int]:
        need(buf, pos, self.size, "padding")
        return None, pos + self.size

    def save(self, out: bytearray, value: Any, frame: Frame, name: str, spans: Spans) -> None:
        out += bytes(self.size)

    def show(self, value: Any) -> str:
        return "(padding)"

    def describe(self) -> tuple[str, str]:
        return "padding", bytes_text(self.size)

    def dump_field(self, name: str, head: dict[str, Any], extra: Mapping[str, Any],
                   nested: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        return {"field": name, **head, **extra, "size": self.size}

    @classmethod
    def from_spec(cls, spec: Any, resolved: ResolvedRefs) -> Kind:
        return cls(spec.size)

    def to_spec(self, writer: SpecWriter) -> Any:
        return self.Spec(type="unused", size=self.size)


@attrs.frozen
class Validate(Kind):
    """No bytes: the field's exists-test must hold (QEMU's VMSTATE_VALIDATE)."""

    info: ClassVar[str] = "validate"
    type_name: ClassVar[str] = "validate"
    size: int = attrs.field(default=0, init=False)  # type: ignore[misc]
    stored: ClassVar[bool] = False
    validates: ClassVar[bool] = True
    Spec: ClassVar[type] = LazySpec(ValidateSpec)

    def load(self, buf: Any, pos: int, frame: Frame, name: str, spans: Spans) -> tuple[Any, int]:
        return None, pos

    def save(self, out: bytearray, value: Any, frame: Frame, name: str, spans: Spans) -> None:
        return None

    def describe(self) -> tuple[str, str]:
        return "validate", bytes_text(0)

    @classmethod
    def from_spec(cls, spec: Any, resolved: ResolvedRefs) -> Kind:
        return cls()

    def to_spec(self, writer: SpecWriter) -> Any:
        return self.Spec(type="validate")
