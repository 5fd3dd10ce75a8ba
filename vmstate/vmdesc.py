"""The vmdesc JSON at the end of a QEMU stream, to and from descriptions.

vmdesc records what the source wrote, field by field with sizes, so a
description built from it decodes that stream exactly: scalars whose size
matches their type become numbers, everything else opaque bytes tagged with
QEMU's type name.  An array is one entry with ``array_len`` when its elements
are alike, else several consecutive entries of the same name: one per element
carrying ``index`` (QEMU 7.2), or since QEMU 8.2 pieces of alike elements, a
NULL pointer's piece typed ``nullptr``, and the last element without ``index``
at all.  Such runs become one :class:`PiecedSeq` that remembers its pieces.
Export goes the other way: given a description and a state, the entry QEMU's
``vmstate_save_state`` would write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from vmstate.description import Description, Subsection
from vmstate.errors import DescriptionError
from vmstate.fields import (
    SCALAR_TYPES,
    Array,
    Bitmap,
    Buffer,
    Field,
    Kind,
    QTailQ,
    Scalar,
    Seq,
    Struct,
    Unused,
    Validate,
    VArray,
    VBuffer,
    scalar_kind,
)
from vmstate.interpreter.context import Ctx, Frame
from vmstate.kinds.nullptr import NullPointer
from vmstate.predicates import is_opaque, opaque_condition

MAX_DEPTH = 64
#: types whose nested description vmdesc writes inline, in the field's own object
_INLINE = frozenset({"vstruct", "tmp"})
MAX_ENTRIES = 1 << 20
#: the keys QEMU may write on one entry of an array
ARRAY_LEN = "array_len"
INDEX = "index"
@attrs.frozen
class Piece:
    """One vmdesc entry of an array: how many elements it stands for and which
    key QEMU wrote on it (``array_len``, ``index`` or none)."""

    count: int
    key: str | None


@attrs.frozen
class PiecedSeq(Seq):
    """An array that vmdesc describes in several entries of one name; ``pieces``
    are those entries in order, so export writes them back as QEMU did."""

    pieces: tuple[Piece, ...] = attrs.field(kw_only=True)

    def __attrs_post_init__(self) -> None:
        if sum(p.count for p in self.pieces) != len(self.elements):
            raise DescriptionError("the pieces of an array do not add up to its elements")


def _get(obj: Any, key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise DescriptionError(f"missing {key!r}", location=where)
    value = obj[key]
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is int):
        raise DescriptionError(f"{key!r} has the wrong type {type(value).__name__}", location=where)
    return value


def _size(entry: Any, where: str) -> int:
    size = _get(entry, "size", int, where)
    if size < 0:
        raise DescriptionError(f"negative size {size}", location=where)
    return size


def description_from_vmdesc(
    entry: Mapping[str, Any], version: int | None = None, where: str = "vmdesc", depth: int = 0
) -> Description:
    """Build the description of one vmdesc device or struct entry."""
    if depth > MAX_DEPTH:
        raise DescriptionError("vmdesc nests too deeply", location=where)
    name = entry.get("vmsd_name", entry.get("name")) if isinstance(entry, dict) else None
    if not isinstance(name, str) or not name:
        raise DescriptionError("entry has no vmsd_name", location=where)
    if "version" in entry:
        version = _get(entry, "version", int, where)
    if version is None:
        raise DescriptionError("entry has no version", location=where)
    raw_fields = entry.get("fields", [])
    if not isinstance(raw_fields, list):
        raise DescriptionError("'fields' is not a list", location=where)
    fields: list[Field] = []
    i = 0
    while i < len(raw_fields):
        fname = _get(raw_fields[i], "name", str, f"{where}.fields[{i}]")
        run = i + 1
        while (
            run < len(raw_fields)
            and isinstance(raw_fields[run], dict)
            and raw_fields[run].get("name") == fname
        ):
            run += 1
        at = f"{where}.{fname}"
        if run - i == 1 and INDEX not in raw_fields[i]:
            fields.append(Field(fname, _entry_kind(raw_fields[i], at, depth)))
        else:
            fields.append(Field(fname, _pieces(raw_fields[i:run], at, depth)))
        i = run
    subs = entry.get("subsections", [])
    if not isinstance(subs, list):
        raise DescriptionError("'subsections' is not a list", location=where)
    subsections = [
        Subsection(
            description_from_vmdesc(sub, None, f"{where}/{k}", depth + 1),
            opaque_condition("vmdesc"),
        )
        for k, sub in enumerate(subs)
    ]
    return Description(name, version, 0, fields, subsections)


def _count(f: Mapping[str, Any], where: str) -> int:
    count = _get(f, ARRAY_LEN, int, where)
    if not 0 <= count <= MAX_ENTRIES:
        raise DescriptionError(f"array_len {count} out of range", location=where)
    return count


def _entry_kind(f: Mapping[str, Any], where: str, depth: int) -> Kind:
    """The kind of a field QEMU described in one entry."""
    kind = _element(f, where, depth)
    return Array(kind, _count(f, where)) if ARRAY_LEN in f else kind


def _pieces(entries: list[Any], where: str, depth: int) -> PiecedSeq:
    """One array from its consecutive entries; an ``index`` must be the element's position."""
    kinds: list[Kind] = []
    pieces = []
    for f in entries:
        if INDEX in f and (index := _get(f, INDEX, int, where)) != len(kinds):
            raise DescriptionError(f"element index {index} out of order", location=where)
        at = f"{where}[{len(kinds)}]"
        kind = _element(f, at, depth)
        count = _count(f, at) if ARRAY_LEN in f else 1
        if len(kinds) + count > MAX_ENTRIES:
            raise DescriptionError(f"more than {MAX_ENTRIES} elements", location=where)
        kinds.extend([kind] * count)
        key = ARRAY_LEN if ARRAY_LEN in f else INDEX if INDEX in f else None
        pieces.append(Piece(count, key))
    return PiecedSeq(tuple(kinds), pieces=tuple(pieces))


def _element(f: Mapping[str, Any], where: str, depth: int) -> Kind:
    typ = _get(f, "type", str, where)
    if typ == "struct":
        return Struct(
            description_from_vmdesc(_get(f, "struct", dict, where), None, where, depth + 1)
        )
    size = _size(f, where)
    if typ in _INLINE and "vmsd_name" in f:
        desc = description_from_vmdesc(f, None, where, depth + 1)
        return Struct(desc, desc.version_id, typ)
    if typ == NullPointer.info and size == 1:
        return NullPointer()
    if typ in SCALAR_TYPES and (kind := scalar_kind(typ)).size == size:
        return kind
    return Buffer(size, typ)


def resolver_from_vmdesc(vmdesc: Mapping[str, Any]) -> Any:
    """A stream resolver: (idstr, instance_id, version) -> description, built on first use."""
    devices = vmdesc.get("devices", [])
    by_key: dict[tuple[str, int], tuple[int, Any]] = {}
    for n, dev in enumerate(devices):
        if (
            isinstance(dev, dict)
            and isinstance(dev.get("name"), str)
            and isinstance(dev.get("instance_id"), int)
        ):
            by_key.setdefault((dev["name"], dev["instance_id"]), (n, dev))
    cache: dict[tuple[str, int, int], Description] = {}

    def resolve(idstr: str, instance_id: int, version_id: int) -> Description | None:
        key = (idstr, instance_id, version_id)
        if key in cache:
            return cache[key]
        found = by_key.get((idstr, instance_id))
        if found is None:
            return None
        n, dev = found
        desc = description_from_vmdesc(dev, version_id, f"vmdesc.devices[{n}]")
        cache[key] = desc
        return desc

    return resolve


# -- export -------------------------------------------------------------


def vmdesc_entry(
    desc: Description,
    state: Mapping[str, Any],
    version_id: int | None = None,
    held: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What QEMU writes to vmdesc for *desc* saved from *state* (*held* as for save)."""
    version = desc.version_id if version_id is None else version_id
    ctx = Ctx()
    frame = Frame(dict(state), version, held, ctx)
    counts: dict[str, int] = {}
    for field in desc.fields:
        counts[field.name] = counts.get(field.name, 0) + 1
    seen: dict[str, int] = {}
    fields: list[dict[str, Any]] = []
    for field in desc.fields:
        k = seen.get(field.name, 0)
        seen[field.name] = k + 1
        if isinstance(field.kind, Validate):
            continue
        if field.exists is not None:
            if is_opaque(field.exists):
                if field.kind.stored and field.name not in state:
                    continue
            elif not field.exists(frame):
                continue
        elif field.since > version:
            continue
        name = field.name if counts[field.name] == 1 else f"{field.name}[{k}]"
        value = state.get(field.name) if field.kind.stored else None
        fields.extend(_entries(name, field, value, frame))
    out: dict[str, Any] = {"vmsd_name": desc.name, "version": version, "fields": fields}
    subs = []
    for sub in desc.subsections:
        if sub.name in state:
            sub_held = held.get(sub.name) if held is not None else None
            subs.append(vmdesc_entry(sub.description, state[sub.name], held=sub_held))
    if subs:
        out["subsections"] = subs
    return out


def _entries(name: str, field: Field, value: Any, frame: Frame) -> list[dict[str, Any]]:
    kind = field.kind
    if isinstance(kind, PiecedSeq):
        out = []
        at = 0
        for piece in kind.pieces:
            head: dict[str, Any] = {"name": name}
            if piece.key is not None:
                head[piece.key] = piece.count if piece.key == ARRAY_LEN else at
            out.append({**head, **_one(kind.elements[at], value[at], frame, name)})
            at += piece.count
        return out
    if isinstance(kind, Array | VArray | Seq):
        elements = kind.elements if isinstance(kind, Seq) else (kind.element,) * len(value or ())
        if not value:
            return []
        compress = (
            isinstance(kind, Array | VArray)
            and _compressible(kind.element)
            and not kind.nullable
            and field.exists is None
        )
        if compress:
            entry = {
                "name": name,
                ARRAY_LEN: len(value),
                **_one(elements[0], value[0], frame, name),
            }
            return [entry]
        return [
            {"name": name, INDEX: i, **_one(el, v, frame, name)}
            for i, (el, v) in enumerate(zip(elements, value, strict=True))
        ]
    return [{"name": name, **_one(kind, value, frame, name)}]


def _one(kind: Kind, value: Any, frame: Frame, name: str) -> dict[str, Any]:
    if isinstance(kind, Struct) and kind.info == "struct":
        inner = vmdesc_entry(kind.description, value, held=_held(frame, name))
        out = bytearray()
        kind.save(out, value, frame, name, None)
        return {"type": "struct", "struct": inner, "size": len(out)}
    out = bytearray()
    kind.save(out, value, frame, name, None)
    if isinstance(kind, Struct):
        return {
            "type": kind.info,
            **vmdesc_entry(kind.description, value, kind.version, held=_held(frame, name)),
            "size": len(out),
        }
    return {"type": _type_name(kind), "size": len(out)}


def _held(frame: Frame, name: str) -> Mapping[str, Any] | None:
    return frame.held.get(name) if frame.held is not None else None


def _type_name(kind: Kind) -> str:
    if isinstance(kind, Scalar | Buffer | VBuffer):
        return kind.info
    if isinstance(kind, Unused):
        return "unused_buffer"
    if isinstance(kind, Bitmap):
        return "bitmap"
    if isinstance(kind, QTailQ):
        return "qtailq"
    if isinstance(kind, NullPointer):
        return kind.info
    return "unknown"


def _compressible(kind: Kind) -> bool:
    """QEMU's vmsd_can_compress: no exists-tests anywhere inside, no subsections."""
    if isinstance(kind, Struct):
        desc = kind.description
        return not desc.subsections and all(
            f.exists is None and _compressible(f.kind) for f in desc.fields
        )
    return True
