"""Nested descriptions (VMSTATE_STRUCT, VMSTATE_VSTRUCT, VMSTATE_WITH_TMP).

A struct is loaded at its own description's version, or at ``version`` for
QEMU's vstruct.  ``info`` is QEMU's type name: "struct", "vstruct", or "tmp"
for VMSTATE_WITH_TMP, which vmdesc records inline.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import attrs

from vmstate.errors import EncodeError
from vmstate.interpreter import engine
from vmstate.interpreter.context import Ctx, Frame
from vmstate.interpreter.plan import plan
from vmstate.interpreter.spans import Span
from vmstate.kinds.base import (
    DescriptionLike,
    Kind,
    Layout,
    LazySpec,
    ResolvedRefs,
    Spans,
    SpecWriter,
    bytes_text,
)


class StructSpec:
    """The description-file table of the ``Struct`` kind (an attrs class once ``Struct.Spec`` is read)."""

    type: str
    struct: str
    version: int | None = None
    info: str = "struct"


@attrs.frozen(cache_hash=True)
class Struct(Kind):
    """A nested description."""

    description: DescriptionLike
    version: int | None = None
    info: str = "struct"  # type: ignore[misc]
    type_name: ClassVar[str] = "struct"
    container: ClassVar[bool] = True
    value_type: ClassVar[str] = "dict"
    Spec: ClassVar[type] = LazySpec(StructSpec)

    @property
    def load_version(self) -> int:
        return self.description.version_id if self.version is None else self.version

    @property
    def size(self) -> int | None:  # type: ignore[override]
        lay = self.layout()
        return lay.size if lay is not None else None

    def layout(self) -> Layout | None:
        return plan(self.description, self.load_version).flat

    def load(self, buf: Any, pos: int, frame: Frame, name: str, spans: Spans) -> tuple[Any, int]:
        return engine.load(self.description, buf, pos, self.load_version, frame.ctx,
                           frame.held_of(name), spans=spans)

    def save(self, out: bytearray, value: Any, frame: Frame, name: str, spans: Spans) -> None:
        engine.save(self.description, out, value, self.load_version, frame.ctx,
                    held=frame.held_of(name), spans=spans)

    def nested(self) -> Iterator[DescriptionLike]:
        yield self.description

    def parts(self, value: Any) -> list[tuple[str | int, Any, Any]]:
        return self.description.parts(value)

    def to_json(self, value: Any) -> Any:
        return self.description.to_json(value)

    def from_json(self, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise EncodeError(f"expected an object, got {type(data).__name__}")
        return self.description.from_json(data)

    def qemu_value(self, value: Any) -> Any:
        if self.info != "struct":
            out = bytearray()
            self.save(out, value, Frame({}, self.load_version, None, Ctx()), "", None)
            return out.hex(" ")
        return self.description.qemu_value(value)

    def vmdesc_value(self, span: Span) -> dict[str, Any]:
        inner = self.description.vmdesc_entry(span, self.load_version)
        if self.info == "struct":
            return {"type": "struct", "struct": inner, "size": span.size}
        return {"type": self.info, **inner, "size": span.size}

    def struct_description(self) -> DescriptionLike | None:
        return self.description

    def vmdesc_compressible(self) -> bool:
        desc = self.description
        return not desc.subsections and all(
            f.exists is None and f.kind.vmdesc_compressible() for f in desc.fields)

    def describe(self) -> tuple[str, str]:
        desc = self.description
        text = f"{self.info} {desc.name} v{desc.version_id}"
        if self.version is None:
            return text, bytes_text(self.size)
        size = attrs.evolve(desc, version_id=self.version).fixed_size
        return f"{text}, loaded at v{self.version}", bytes_text(size)

    def element_text(self) -> str:
        return self.description.name

    def element_rows(self) -> list[Any]:
        return [self.description]

    def described_parts(self) -> list[Any]:
        return [self.description]

    @classmethod
    def from_spec(cls, spec: Any, resolved: ResolvedRefs) -> Kind:
        assert resolved.struct is not None
        return cls(resolved.struct, spec.version, spec.info)

    def to_spec(self, writer: SpecWriter) -> Any:
        return self.Spec(type="struct", struct=writer.struct_key(self.description),
                          version=self.version, info=self.info)

    def element_ref(self, writer: SpecWriter) -> Any:
        if self.version is None and self.info == "struct":
            return writer.struct_key(self.description)
        return self.to_spec(writer)

