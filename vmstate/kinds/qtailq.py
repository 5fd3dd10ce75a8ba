"""Lists (VMSTATE_QTAILQ_V): each element preceded by byte 1, the end marked by byte 0."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import attrs

from vmstate.errors import DecodeError, EncodeError
from vmstate.interpreter.context import Frame, need
from vmstate.interpreter.spans import Span
from vmstate.kinds.arrays import _List
from vmstate.kinds.base import (
    DescriptionLike,
    Element,
    Kind,
    LazySpec,
    ResolvedRefs,
    Spans,
    SpecWriter,
)


class QTailQSpec:
    """The description-file table of the ``QTailQ`` kind (an attrs class once ``QTailQ.Spec`` is read)."""

    type: str
    element: Element


@attrs.frozen
class QTailQ(_List):
    """A list of any length; the input's markers bound it, the run's budget counts it."""

    element: Kind
    info: ClassVar[str] = "qtailq"  # type: ignore[misc]
    type_name: ClassVar[str] = "qtailq"
    Spec: ClassVar[type] = LazySpec(QTailQSpec)
    variable: ClassVar[bool] = True

    def one_element(self) -> Kind | None:
        return self  # a queue's elements are not compared one by one

    def element_kinds(self, n: int) -> Sequence[Kind]:
        return (self.element,) * n

    def nested(self) -> Iterator[DescriptionLike]:
        yield from self.element.nested()

    def load(self, buf: Any, pos: int, frame: Frame, name: str, spans: Spans) -> tuple[Any, int]:
        out: list[Any] = []
        while True:
            need(buf, pos, 1, "list marker")
            marker = buf[pos]
            if marker == 0:
                if spans is not None:
                    spans.append(Span("", None, None, pos, pos + 1, note="-- end of list"))
                return out, pos + 1
            if marker != 1:
                raise DecodeError(
                    "bad list marker", offset=pos, expected="0 or 1", found=f"{marker:#x}"
                )
            frame.ctx.spend(1, pos)
            parts: Spans = None
            if spans is not None:
                spans.append(Span(len(out), None, None, pos, pos + 1, note="-- list element"))
                parts = []
            start = pos + 1
            try:
                value, pos = self.element.load(buf, start, frame, name, parts)
            except DecodeError as e:
                raise e.within(len(out)) from None
            if spans is not None:
                spans.append(Span(len(out), self.element, value, start, pos, parts))
            out.append(value)

    def save(self, out: bytearray, value: Any, frame: Frame, name: str, spans: Spans) -> None:
        if not isinstance(value, list | tuple):
            raise EncodeError(f"expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            parts: Spans = None
            if spans is not None:
                spans.append(Span(i, None, None, len(out), len(out) + 1, note="-- list element"))
                parts = []
            out.append(1)
            start = len(out)
            try:
                self.element.save(out, item, frame, name, parts)
            except EncodeError as e:
                raise e.within(i) from None
            if spans is not None:
                spans.append(Span(i, self.element, item, start, len(out), parts))
        if spans is not None:
            spans.append(Span("", None, None, len(out), len(out) + 1, note="-- end of list"))
        out.append(0)

    def described_parts(self) -> list[Any]:
        return self.element.element_rows()

    def vmdesc_entries(self, name: str, span: Span, exists: bool) -> list[dict[str, Any]]:
        return [{"name": name, "type": self.info, "size": span.size}]

    def describe(self) -> tuple[str, str]:
        each = self.element.element_text()
        return f"qtailq of {each}", f"n x (1 + {each}) + 1"

    @classmethod
    def from_spec(cls, spec: Any, resolved: ResolvedRefs) -> Kind:
        assert resolved.element is not None
        return cls(resolved.element)

    def to_spec(self, writer: SpecWriter) -> Any:
        return self.Spec(type="qtailq", element=writer.element(self.element))
