"""Lists of elements: fixed arrays (VMSTATE_ARRAY), arrays counted by an earlier
field (VMSTATE_VARRAY_*), and sequences whose elements each have their own
layout (how a stream's vmdesc records an array whose elements differ).

Arrays of pointers (``nullable``) write QEMU's 0x30 marker for a NULL element;
on load an element is NULL where the destination holds NULL.
"""

from __future__ import annotations

import abc
import functools
import operator
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import repeat
from typing import Any, ClassVar

import attrs

from vmstate.errors import DecodeError, EncodeError, LimitError
from vmstate.interpreter.context import Frame, need
from vmstate.interpreter.spans import Span
from vmstate.kinds.base import (
    DescriptionLike,
    Element,
    Kind,
    Layout,
    LazySpec,
    ResolvedRefs,
    Spans,
    SpecWriter,
    bytes_text,
    codec,
)
from vmstate.kinds.buffer import count_of, size_on_save
from vmstate.kinds.scalar import qemu_values

NULLPTR_MARKER = 0x30
#: count field types accepted for variable arrays
COUNT_TYPES = frozenset({"uint8", "uint16", "uint32", "int32"})


class ArraySpec:
    """The description-file table of the ``Array`` kind (an attrs class once ``Array.Spec`` is read)."""

    type: str
    element: Element
    count: int
    nullable: bool = False


class VArraySpec:
    """The description-file table of the ``VArray`` kind (an attrs class once ``VArray.Spec`` is read)."""

    type: str
    element: Element
    count: str
    count_type: str = "uint32"
    max_count: int
    multiply: int = 1
    nullable: bool = False


class SeqSpec:
    """The description-file table of the ``Seq`` kind (an attrs class once ``Seq.Spec`` is read)."""

    type: str
    elements: tuple[Element, ...]


class _List(Kind):
    """What every list kind shares: JSON, QEMU's view and parts element by element."""

    container: ClassVar[bool] = True
    is_list: ClassVar[bool] = True
    value_type: ClassVar[str] = "list"

    @abc.abstractmethod
    def element_kinds(self, n: int) -> Sequence[Kind]:
        """The kinds of the first *n* elements (one kind repeated, or a sequence's own)."""

    @property
    def info(self) -> str:  # type: ignore[override]
        kinds = self.element_kinds(1)
        return kinds[0].info if kinds else "buffer"

    def parts(self, value: Any) -> list[tuple[str | int, Any, Any]]:
        return list(zip(range(len(value)), self.element_kinds(len(value)), value, strict=True))

    def to_json(self, value: Any) -> Any:
        kinds = self.element_kinds(len(value))
        return [None if v is None else k.to_json(v) for k, v in zip(kinds, value, strict=True)]

    def from_json(self, data: Any) -> Any:
        if not isinstance(data, list):
            raise EncodeError(f"expected a list, got {type(data).__name__}")
        kinds = self.element_kinds(len(data))
        if len(kinds) != len(data):
            raise EncodeError(f"expected {len(kinds)} elements, got {len(data)}")
        out = []
        for i, (k, v) in enumerate(zip(kinds, data, strict=True)):
            try:
                out.append(None if v is None else k.from_json(v))
            except EncodeError as e:
                raise e.within(i) from None
        return out

    def qemu_value(self, value: Any) -> Any:
        kinds = self.element_kinds(len(value))
        first = kinds[0] if kinds else None
        if first is not None and first.scalar and all(map(operator.is_, kinds, repeat(first))):
            return qemu_values(first, value)  # type: ignore[arg-type]
        return [k.qemu_value(v) for k, v in zip(kinds, value, strict=True)]

    def nested(self) -> Iterator[DescriptionLike]:
        for kind in self.element_kinds(1):
            yield from kind.nested()

    def vmdesc_entries(self, name: str, span: Span, exists: bool) -> list[dict[str, Any]]:
        """One entry per element (with ``index`` when there are several, as QEMU
        writes an array it cannot compress), or one with ``array_len`` for alike
        elements (:meth:`compresses`)."""
        elements = span.children
        if len(elements) == 1:
            return [{"name": name, **_element_value(elements[0])}]
        if elements and self.compresses(exists):
            return [{"name": name, "array_len": len(elements), **_element_value(elements[0])}]
        return [{"name": name, "index": i, **_element_value(el)} for i, el in enumerate(elements)]

    def compresses(self, exists: bool) -> bool:
        return False


def _element_value(span: Span) -> dict[str, Any]:
    if span.kind is None:  # a NULL pointer (QEMU's vmstate_info_nullptr)
        return {"type": "nullptr", "size": span.size}
    return span.kind.vmdesc_value(span)


class _Elements(_List):
    """A run of ``n`` elements of one kind: arrays and variable arrays."""

    element: Kind
    nullable: bool

    def element_kinds(self, n: int) -> Sequence[Kind]:
        return (self.element,) * n

    def one_element(self) -> Kind | None:
        return self.element

    def qemu_value(self, value: Any) -> Any:
        if self.element.scalar:  # one kind throughout: no need to check each element's
            return qemu_values(self.element, value)  # type: ignore[arg-type]
        return [self.element.qemu_value(v) for v in value]

    def _load_n(
        self, buf: Any, pos: int, frame: Frame, name: str, n: int, spans: Spans
    ) -> tuple[Any, int]:
        frame.ctx.spend(n, pos)
        held = frame.held_of(name)
        if spans is None and not self.nullable:
            lay = self.element.layout()
            if lay is not None and not (lay.checked and frame.ctx.checks and held is not None):
                many = _repeated(lay, n)
                width = many.size
                if pos + width <= len(buf):  # else one by one: the error names the element
                    raw = codec(many.order or ">", many.fmt).unpack_from(buf, pos)
                    return (many.unpack(raw) if many.unpack else list(raw)), pos + width
        out: list[Any] = []
        el = self.element
        for i in range(n):
            held_el = held[i] if isinstance(held, list) and i < len(held) else None
            start = pos
            try:
                if self.nullable and held_el is None and held is not None:
                    need(buf, pos, 1, "null pointer marker")
                    if buf[pos] != NULLPTR_MARKER:
                        raise DecodeError("null element marker missing", offset=pos,
                                          expected=f"{NULLPTR_MARKER:#x}", found=f"{buf[pos]:#x}")
                    out.append(None)
                    pos += 1
                    if spans is not None:
                        spans.append(Span(i, None, None, start, pos, note="NULL"))
                    continue
                sub = Frame({}, frame.version_id, {name: held_el} if held_el is not None else None,
                            frame.ctx)
                parts: Spans = [] if spans is not None else None
                value, pos = el.load(buf, pos, sub, name, parts)
            except DecodeError as e:
                raise e.within(i) from None
            out.append(value)
            if spans is not None:
                spans.append(Span(i, el, value, start, pos, parts))
        return out, pos

    def _save_n(self, out: bytearray, value: Any, frame: Frame, n: int, name: str,
                spans: Spans) -> None:
        if not isinstance(value, list | tuple):
            raise EncodeError(f"expected a list, got {type(value).__name__}")
        if len(value) != n:
            raise EncodeError(f"expected {n} elements, got {len(value)}")
        el = self.element
        if spans is None and not self.nullable:
            lay = el.layout()
            if lay is not None:
                many = _repeated(lay, n)
                try:
                    out += codec(many.order or ">", many.fmt).pack(*many.pack(value))
                    return
                except (struct.error, TypeError, OverflowError):
                    pass  # one by one: the error names the element that does not fit
        for i, item in enumerate(value):
            start = len(out)
            try:
                if item is None and self.nullable:
                    out.append(NULLPTR_MARKER)
                    if spans is not None:
                        spans.append(Span(i, None, None, start, len(out), note="NULL"))
                    continue
                parts: Spans = [] if spans is not None else None
                el.save(out, item, frame, name, parts)
            except EncodeError as e:
                raise e.within(i) from None
            if spans is not None:
                spans.append(Span(i, el, item, start, len(out), parts))

    def described_parts(self) -> list[Any]:
        return self.element.element_rows()

    def describe_notes(self) -> list[str]:
        return ["nullable (NULL is 1 byte)"] if self.nullable else []

    def compresses(self, exists: bool) -> bool:
        return not exists and not self.nullable and self.element.vmdesc_compressible()


@functools.lru_cache(maxsize=1024)
def _repeated(lay: Layout, n: int) -> Layout:
    return lay.repeated(n)


@attrs.frozen(cache_hash=True)
class Array(_Elements):
    """``count`` elements of one kind; ``nullable`` for arrays of pointers (0x30 = NULL)."""

    element: Kind
    count: int = attrs.field(validator=attrs.validators.ge(0))
    nullable: bool = False
    type_name: ClassVar[str] = "array"
    Spec: ClassVar[type] = LazySpec(ArraySpec)

    @property
    def size(self) -> int | None:  # type: ignore[override]
        el = self.element.size
        return None if el is None or self.nullable else el * self.count

    def layout(self) -> Layout | None:
        lay = self.element.layout()
        return None if lay is None or self.nullable else _repeated(lay, self.count)

    def load(self, buf: Any, pos: int, frame: Frame, name: str, spans: Spans) -> tuple[Any, int]:
        return self._load_n(buf, pos, frame, name, self.count, spans)

    def total_size(self) -> int | None:
        size = self.element.size
        return None if size is None else size * self.count

    def fixed_count(self) -> int | None:
        return self.count

    def certain_size(self) -> int | None:
        element = self.element
        if element.struct_description() is not None or not element.size:
            return None
        return element.size * self.count

    def untyped(self) -> Kind:
        return Array(self.element.untyped(), self.count)

    def compare_shape(self, other: Kind) -> Iterator[tuple[str, str]]:
        if isinstance(other, Array) and other.count != self.count:
            yield "array-count", f"array of {self.count} elements became {other.count}"

    def dump_field(self, name: str, head: dict[str, Any], extra: Mapping[str, Any],
                   nested: Callable[[DescriptionLike], dict[str, Any]]) -> dict[str, Any]:
        return self.element.dump_field(name, {**head, "num": self.count}, extra, nested)

    def save(self, out: bytearray, value: Any, frame: Frame, name: str, spans: Spans) -> None:
        self._save_n(out, value, frame, self.count, name, spans)

    def describe(self) -> tuple[str, str]:
        each = self.element.element_text()
        total = self.size
        size = f"{self.count} x {each}" + ("" if total is None else f" = {bytes_text(total)}")
        return f"array of {each}", size

    @classmethod
    def from_spec(cls, spec: Any, resolved: ResolvedRefs) -> Kind:
        assert resolved.element is not None
        return cls(resolved.element, spec.count, spec.nullable)

    def to_spec(self, writer: SpecWriter) -> Any:
        return self.Spec(type="array", element=writer.element(self.element), count=self.count,
                         nullable=self.nullable)


@attrs.frozen(cache_hash=True)
class VArray(_Elements):
    """Elements counted by an earlier field (uint8/16/32 or int32), at most ``max_count``."""

    element: Kind
    count_field: str
    max_count: int = attrs.field(validator=attrs.validators.ge(0))
    count_type: str = attrs.field(default="uint32", validator=attrs.validators.in_(COUNT_TYPES))
    multiply: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    nullable: bool = False
    type_name: ClassVar[str] = "varray"
    Spec: ClassVar[type] = LazySpec(VArraySpec)
    variable: ClassVar[bool] = True

    def compare_shape(self, other: Kind) -> Iterator[tuple[str, str]]:
        if not isinstance(other, VArray):
            return
        if self.count_field != other.count_field or self.multiply != other.multiply:
            yield ("array-count", f"count {self.count_field} x{self.multiply} became "
                   f"{other.count_field} x{other.multiply}")
        if other.max_count < self.max_count:
            yield ("bound-shrunk", f"the destination takes at most {other.max_count} elements, "
                   f"the source may send {self.max_count}")

    def count(self, frame: Frame, pos: int) -> int:
        n = count_of(frame, self.count_field, pos, "array count") * self.multiply
        if not 0 <= n <= self.max_count:
            raise LimitError(
                "array count out of bounds",
                offset=pos,
                expected=f"0..{self.max_count} elements ({self.count_field})",
                found=str(n),
            )
        return n

    def load(self, buf: Any, pos: int, frame: Frame, name: str, spans: Spans) -> tuple[Any, int]:
        return self._load_n(buf, pos, frame, name, self.count(frame, pos), spans)

    def save(self, out: bytearray, value: Any, frame: Frame, name: str, spans: Spans) -> None:
        self._save_n(out, value, frame, size_on_save(self.count, frame), name, spans)

    def describe(self) -> tuple[str, str]:
        each = self.element.element_text()
        times = "" if self.multiply == 1 else f" x {self.multiply}"
        return f"varray of {each}", f"{self.count_field}{times} x {each} <= {self.max_count}"

    def describe_notes(self) -> list[str]:
        notes = super().describe_notes()
        if self.count_type != "uint32":
            notes.append(f"count_type {self.count_type}")
        return notes

    @classmethod
    def spec_problems(cls, spec: Any) -> Iterator[tuple[str, str]]:
        if spec.count_type not in COUNT_TYPES:
            yield "count_type", f"count_type must be one of {', '.join(sorted(COUNT_TYPES))}"

    @classmethod
    def spec_references(cls, spec: Any) -> Iterator[tuple[str, str, str | None]]:
        yield "count", spec.count, spec.count_type

    @classmethod
    def from_spec(cls, spec: Any, resolved: ResolvedRefs) -> Kind:
        assert resolved.element is not None
        return cls(resolved.element, spec.count, spec.max_count, spec.count_type, spec.multiply,
                   spec.nullable)

    def to_spec(self, writer: SpecWriter) -> Any:
        return self.Spec(type="varray", element=writer.element(self.element),
                          count=self.count_field, max_count=self.max_count,
                          count_type=self.count_type, multiply=self.multiply,
                          nullable=self.nullable)


@attrs.frozen(cache_hash=True)
class Seq(_List):
    """Elements that each have their own layout, one after the other."""

    elements: tuple[Kind, ...]
    type_name: ClassVar[str] = "seq"
    Spec: ClassVar[type] = LazySpec(SeqSpec)

    def element_kinds(self, n: int) -> Sequence[Kind]:
        return self.elements

    def one_element(self) -> Kind | None:
        return self.elements[0] if self.elements else None

    def nested(self) -> Iterator[DescriptionLike]:
        for kind in self.elements:
            yield from kind.nested()

    @property
    def size(self) -> int | None:  # type: ignore[override]
        sizes = [el.size for el in self.elements]
        return None if None in sizes else sum(s or 0 for s in sizes)

    def load(self, buf: Any, pos: int, frame: Frame, name: str, spans: Spans) -> tuple[Any, int]:
        frame.ctx.spend(len(self.elements), pos)
        out = []
        for i, el in enumerate(self.elements):
            start = pos
            parts: Spans = [] if spans is not None else None
            try:
                value, pos = el.load(buf, pos, frame, name, parts)
            except DecodeError as e:
                raise e.within(i) from None
            out.append(value)
            if spans is not None:
                spans.append(Span(i, el, value, start, pos, parts))
        return out, pos

    def save(self, out: bytearray, value: Any, frame: Frame, name: str, spans: Spans) -> None:
        if not isinstance(value, list | tuple) or len(value) != len(self.elements):
            raise EncodeError(f"expected a list of {len(self.elements)} elements")
        for i, (el, item) in enumerate(zip(self.elements, value, strict=True)):
            start = len(out)
            parts: Spans = [] if spans is not None else None
            try:
                el.save(out, item, frame, name, parts)
            except EncodeError as e:
                raise e.within(i) from None
            if spans is not None:
                spans.append(Span(i, el, item, start, len(out), parts))

    def described_parts(self) -> list[Any]:
        return [(f"[{i}]", el) for i, el in enumerate(self.elements)]

    def describe(self) -> tuple[str, str]:
        sizes = [el.size for el in self.elements]
        text = " + ".join(el.element_text() for el in self.elements)
        total = "" if None in sizes else f" = {bytes_text(sum(s or 0 for s in sizes))}"
        return f"seq of {len(self.elements)}", text + total

    @classmethod
    def from_spec(cls, spec: Any, resolved: ResolvedRefs) -> Kind:
        return cls(tuple(resolved.elements))

    def to_spec(self, writer: SpecWriter) -> Any:
        return self.Spec(type="seq", elements=tuple(writer.element(e) for e in self.elements))
