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

import functools
import json
import mmap
import struct
from collections.abc import Mapping
from typing import Any

import attrs

from vmstate.description import Description, Subsection
from vmstate.errors import DecodeError, DescriptionError, LimitError, TruncatedError
from vmstate.fields import (
    SCALAR_TYPES,
    Array,
    Buffer,
    Field,
    Kind,
    Seq,
    Struct,
    scalar_kind,
)
from vmstate.interpreter.spans import Span
from vmstate.kinds.nullptr import NullPointer
from vmstate.predicates import opaque_condition

MAX_DEPTH = 64
#: types whose nested description vmdesc writes inline, in the field's own object
_INLINE = frozenset({"vstruct", "tmp"})
MAX_ENTRIES = 1 << 20
#: the keys QEMU may write on one entry of an array
ARRAY_LEN = "array_len"
INDEX = "index"
#: the version of an old-style section's entry, which records none: it takes any
ANY_VERSION = 0xFFFFFFFF

#: the largest vmdesc read
MAX_VMDESC = 64 << 20
#: the stream's EOF byte, which the VMDESCRIPTION marker (0x06) follows
_EOF = 0x00
_BE32 = struct.Struct(">I")
#: a whole stream: bytes or a mapping of its file
StreamBytes = bytes | mmap.mmap


def find_vmdesc(buf: StreamBytes) -> int | None:
    """Offset of the VMDESCRIPTION marker, whose JSON runs to the end of the input.

    JSON text never contains byte 0x06, so the marker is among the last few
    0x06 bytes (its own length field may hold one).
    """
    n = len(buf)
    lo, hi = max(0, n - MAX_VMDESC - 5), n
    for _ in range(6):
        p = buf.rfind(b"\x06", lo, hi)
        if p < 0:
            return None
        if p + 5 <= n and _BE32.unpack_from(buf, p + 1)[0] == n - p - 5:
            return p
        hi = p
    return None


def parse_vmdesc(buf: StreamBytes, at: int) -> dict[str, Any]:
    (length,) = _BE32.unpack_from(buf, at + 1)
    if length > MAX_VMDESC:
        raise LimitError(
            "vmdesc too large", offset=at, expected=f"<= {MAX_VMDESC} bytes", found=str(length)
        )
    raw = bytes(buf[at + 5 : at + 5 + length])
    try:
        desc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DecodeError(
            f"vmdesc is not JSON: {e}", offset=at + 5, expected="JSON", found="garbage"
        ) from None
    except RecursionError:
        raise LimitError("vmdesc nests too deeply", offset=at + 5) from None
    if not isinstance(desc, dict) or not isinstance(desc.get("devices", []), list):
        raise DecodeError(
            "vmdesc has no device list",
            offset=at + 5,
            expected='{"devices": [...]}',
            found=type(desc).__name__,
        )
    return desc


def truncated_vmdesc(buf: StreamBytes) -> None:
    """Raise when the stream ends inside its vmdesc: the marker after EOF is there, with a
    length that runs past the end (JSON holds no 0x06, so the marker is a late one)."""
    n = len(buf)
    hi = n
    for _ in range(6):
        p = buf.rfind(b"\x06", max(0, n - MAX_VMDESC - 5), hi)
        if p < 1:
            return
        if buf[p - 1] == _EOF and p + 6 <= n and buf[p + 5] == ord("{"):
            (length,) = _BE32.unpack_from(buf, p + 1)
            if length > n - p - 5:
                raise TruncatedError(
                    f"truncated at offset {n:#x}, inside the vmdesc",
                    offset=p,
                    expected=f"{length} bytes of vmdesc JSON from offset {p + 5:#x}",
                    found=f"{n - p - 5} bytes",
                )
        hi = p


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

    def vmdesc_entries(self, name: str, span: Span, exists: bool) -> list[dict[str, Any]]:
        """The pieces as QEMU wrote them: each with its own key, and the value of its
        first element."""
        out = []
        at = 0
        for piece in self.pieces:
            head: dict[str, Any] = {"name": name}
            if piece.key is not None:
                head[piece.key] = piece.count if piece.key == ARRAY_LEN else at
            element = span.children[at]
            out.append({**head, **element.kind.vmdesc_value(element)})
            at += piece.count
        return out


def _get(obj: Any, key: str, typ: type | tuple[type, ...], where: Where) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise DescriptionError(f"missing {key!r}", location=_at(where))
    value = obj[key]
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is int):
        raise DescriptionError(f"{key!r} has the wrong type {type(value).__name__}",
                               location=_at(where))
    return value


#: where an entry is, for messages: a text, or the parts of one (joined only for an error)
Where = str | tuple[Any, ...]


def _at(where: Where) -> str:
    if isinstance(where, str):
        return where
    head, *rest = where
    return _at(head) + "".join(str(part) for part in rest)


def _size(entry: Any, where: Where) -> int:
    size = _get(entry, "size", int, where)
    if size < 0:
        raise DescriptionError(f"negative size {size}", location=_at(where))
    return size


def description_from_vmdesc(
    entry: Mapping[str, Any], version: int | None = None, where: Where = "vmdesc",
    depth: int = 0,
) -> Description:
    """Build the description of one vmdesc device or struct entry."""
    if depth > MAX_DEPTH:
        raise DescriptionError("vmdesc nests too deeply", location=_at(where))
    name = entry.get("vmsd_name", entry.get("name")) if isinstance(entry, dict) else None
    if not isinstance(name, str) or not name:
        raise DescriptionError("entry has no vmsd_name", location=_at(where))
    if "version" in entry:
        version = _get(entry, "version", int, where)
    if version is None:
        raise DescriptionError("entry has no version", location=_at(where))
    raw_fields = entry.get("fields", [])
    if not isinstance(raw_fields, list):
        raise DescriptionError("'fields' is not a list", location=_at(where))
    fields: list[Field] = []
    i = 0
    count = len(raw_fields)
    while i < count:
        fname = _get(raw_fields[i], "name", str, (where, ".fields[", i, "]"))
        run = i + 1
        while (
            run < count
            and isinstance(raw_fields[run], dict)
            and raw_fields[run].get("name") == fname
        ):
            run += 1
        at = (where, ".", fname)
        if run - i == 1 and INDEX not in raw_fields[i]:
            fields.append(_field(fname, _entry_kind(raw_fields[i], at, depth)))
        else:
            fields.append(_field(fname, _pieces(raw_fields[i:run], at, depth)))
        i = run
    subs = entry.get("subsections", [])
    if not isinstance(subs, list):
        raise DescriptionError("'subsections' is not a list", location=_at(where))
    subsections = [
        Subsection(
            description_from_vmdesc(sub, None, (where, "/", k), depth + 1),
            _SENT,
        )
        for k, sub in enumerate(subs)
    ]
    return Description(name, version, 0, fields, subsections)


#: a vmdesc says only that a subsection was sent: present iff the state has it
_SENT = opaque_condition("vmdesc")


@functools.lru_cache(maxsize=4096)
def _field(name: str, kind: Kind) -> Field:
    """Fields recur across sections (same name, same kind): made once each."""
    return Field(name, kind)


def _count(f: Mapping[str, Any], where: Where) -> int:
    count = _get(f, ARRAY_LEN, int, where)
    if not 0 <= count <= MAX_ENTRIES:
        raise DescriptionError(f"array_len {count} out of range", location=_at(where))
    return count


def _entry_kind(f: Mapping[str, Any], where: Where, depth: int) -> Kind:
    """The kind of a field QEMU described in one entry."""
    kind = _element(f, where, depth)
    return _array(kind, _count(f, where)) if ARRAY_LEN in f else kind


def _pieces(entries: list[Any], where: Where, depth: int) -> PiecedSeq:
    """One array from its consecutive entries; an ``index`` must be the element's position."""
    kinds: list[Kind] = []
    pieces = []
    last: tuple[Any, Kind] | None = None
    for f in entries:
        if INDEX in f and (index := _get(f, INDEX, int, where)) != len(kinds):
            raise DescriptionError(f"element index {index} out of order", location=_at(where))
        at = (where, "[", len(kinds), "]")
        # QEMU writes an array of structs as one entry per element (256 alike in
        # piix4_pm): an element like the one before is the same kind, built once
        kind = last[1] if last is not None and _alike(f, last[0]) else _element(f, at, depth)
        last = f, kind
        count = _count(f, at) if ARRAY_LEN in f else 1
        if len(kinds) + count > MAX_ENTRIES:
            raise DescriptionError(f"more than {MAX_ENTRIES} elements", location=_at(where))
        kinds.extend([kind] * count)
        key = ARRAY_LEN if ARRAY_LEN in f else INDEX if INDEX in f else None
        pieces.append(Piece(count, key))
    return PiecedSeq(tuple(kinds), pieces=tuple(pieces))


def _alike(f: Any, other: Mapping[str, Any]) -> bool:
    """Whether an entry describes the same element as *other*, an entry already read
    (every key but ``index`` equal)."""
    return (
        isinstance(f, dict)
        and len(f) == len(other)
        and all(k == INDEX or other.get(k, _MISSING) == v for k, v in f.items())
    )


_MISSING = object()


def _element(f: Mapping[str, Any], where: Where, depth: int) -> Kind:
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
    return _buffer(size, typ)


@functools.lru_cache(maxsize=1024)
def _buffer(size: int, typ: str) -> Kind:
    """Opaque bytes of QEMU's type *typ*: immutable, so shared between sections."""
    return Buffer(size, typ)


@functools.lru_cache(maxsize=1024)
def _array(kind: Kind, count: int) -> Kind:
    return Array(kind, count)


def resolver_from_vmdesc(vmdesc: Mapping[str, Any]) -> Any:
    """A stream resolver: (idstr, instance_id, version) -> description, built on first use."""
    devices = vmdesc.get("devices", [])
    if not isinstance(devices, list):  # nothing described: every lookup finds none
        devices = []
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
        desc = description_from_vmdesc(dev, version_id, ("vmdesc.devices[", n, "]"))
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
    _, span = desc.save_traced(state, version_id, held=held)
    return desc.vmdesc_entry(span)
