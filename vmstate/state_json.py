"""State to and from JSON, guided by the description so the round trip is exact.

JSON has no bytes and no NaN: buffers become hex strings, bitmaps ``"0x..."``
strings, non-finite floats the ``"0x..."`` string of their IEEE bits.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

from vmstate.description import Description
from vmstate.errors import EncodeError
from vmstate.fields import Array, Bitmap, Buffer, Kind, QTailQ, Scalar, Seq, Struct, VArray, VBuffer

_FLOATS = frozenset({"float64", "CPU_Double_U"})
_D = struct.Struct(">d")
_Q = struct.Struct(">Q")


def state_to_json(desc: Description, state: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-ready copy of *state*."""
    out: dict[str, Any] = {}
    for field in desc.fields:
        if field.kind.stored and field.name in state:
            out[field.name] = _to_json(field.kind, state[field.name])
    for sub in desc.subsections:
        if sub.name in state:
            out[sub.name] = state_to_json(sub.description, state[sub.name])
    return out


def state_from_json(desc: Description, data: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`state_to_json`; raises :class:`EncodeError` naming the bad field."""
    if not isinstance(data, Mapping):
        raise EncodeError(f"expected an object for {desc.name}, got {type(data).__name__}")
    out: dict[str, Any] = {}
    for field in desc.fields:
        if field.kind.stored and field.name in data:
            try:
                out[field.name] = _from_json(field.kind, data[field.name])
            except EncodeError as e:
                raise e.within(field.name) from None
    for sub in desc.subsections:
        if sub.name in data:
            try:
                out[sub.name] = state_from_json(sub.description, data[sub.name])
            except EncodeError as e:
                raise e.within(sub.name) from None
    unknown = set(data) - set(out)
    if unknown:
        raise EncodeError(f"{desc.name} has no fields {sorted(unknown)}")
    return out


def _elements(kind: Kind, n: int) -> tuple[Kind, ...]:
    if isinstance(kind, Seq):
        return kind.elements
    assert isinstance(kind, Array | VArray | QTailQ)
    return (kind.element,) * n


def _to_json(kind: Kind, value: Any) -> Any:
    if isinstance(kind, Scalar):
        if kind.info in _FLOATS and not math.isfinite(value):
            return f"{_Q.unpack(_D.pack(value))[0]:#018x}"
        return value
    if isinstance(kind, Buffer | VBuffer):
        return bytes(value).hex()
    if isinstance(kind, Bitmap):
        return hex(value)
    if isinstance(kind, Struct):
        return state_to_json(kind.description, value)
    if isinstance(kind, Array | VArray | Seq | QTailQ):
        return [
            None if v is None else _to_json(k, v)
            for k, v in zip(_elements(kind, len(value)), value, strict=True)
        ]
    return value


def _from_json(kind: Kind, value: Any) -> Any:
    try:
        if isinstance(kind, Scalar):
            if kind.info in _FLOATS:
                if isinstance(value, str):
                    return _D.unpack(_Q.pack(int(value, 16)))[0]
                return float(value)
            if kind.info == "bool":
                if not isinstance(value, bool):
                    raise EncodeError(f"expected true or false, got {value!r}")
                return value
            if isinstance(value, bool) or not isinstance(value, int):
                raise EncodeError(f"expected an integer, got {value!r}")
            return value
        if isinstance(kind, Buffer | VBuffer):
            return bytes.fromhex(value)
        if isinstance(kind, Bitmap):
            return int(value, 16)
        if isinstance(kind, Struct):
            return state_from_json(kind.description, value)
        if isinstance(kind, Array | VArray | Seq | QTailQ):
            if not isinstance(value, list):
                raise EncodeError(f"expected a list, got {type(value).__name__}")
            elements = _elements(kind, len(value))
            if len(elements) != len(value):
                raise EncodeError(f"expected {len(elements)} elements, got {len(value)}")
            out = []
            for i, (k, v) in enumerate(zip(elements, value, strict=True)):
                try:
                    out.append(None if v is None else _from_json(k, v))
                except EncodeError as e:
                    raise e.within(i) from None
            return out
    except (TypeError, ValueError, struct.error) as exc:
        raise EncodeError(f"bad value {value!r}: {exc}") from None
    return value
