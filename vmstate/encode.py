"""A stream document (vmstate.stream_document) written back as a migration stream.

Each item becomes its record: device sections are encoded from their state
with their description (the document's vmdesc entry for the section, or its
own ``layout``), sections kept as bytes are copied (a reference is read from
the source file, its SHA-256 checked), PACKAGED lengths are computed.  The
result is parsed again before anyone sees it, with the same descriptions, so
an edit that breaks the framing (a count that no longer matches, a section
running past its package) is refused with the error QEMU's loader would meet,
and the document's ``vfio`` view must still be what the vfio sections hold.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from typing import IO, Any, BinaryIO

from vmstate.description import Description
from vmstate.errors import EncodeError, InputError
from vmstate.stream import (
    COMMAND,
    CONFIGURATION,
    CONFIGURATION_DESCRIPTION,
    EOF,
    FOOTER,
    MAGIC,
    PACKAGED,
    VERSION,
    VMDESCRIPTION,
    Input,
    Stream,
    parse,
)
from vmstate.stream_config import COMMANDS
from vmstate.stream_document import FORMAT_KEY, FORMAT_VERSION, SECTION_KINDS, vfio_view
from vmstate.vmdesc import description_from_vmdesc, resolver_from_vmdesc

_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
#: the largest numbers a 32-bit and a 16-bit field of the stream hold
_U32, _U16 = 0xFFFF_FFFF, 0xFFFF
_KIND_NUMBERS = {name: number for number, name in SECTION_KINDS.items()}
_COMMAND_NUMBERS = {name: number for number, (name, _) in COMMANDS.items()}
_CHUNK = 1 << 24
#: told how many bytes were written so far: (done, None)
Progress = Callable[[int, int | None], None]


def encode(
    doc: Any,
    out: BinaryIO,
    *,
    source: str | None = None,
    progress: Progress | None = None,
) -> Stream:
    """Write the stream *doc* describes to *out*; the parsed result.  *source* replaces
    the document's source file for bytes kept by reference."""
    items = _items(doc)
    descriptions = _Descriptions(items)
    with ExitStack() as stack:
        opened = _Source(stack, source if source is not None else _source_file(doc))
        work = stack.enter_context(tempfile.TemporaryFile(prefix="vmstate-encode-"))
        written = 0
        for chunk in _records(items, descriptions, opened):
            work.write(chunk)
            written += len(chunk)
            if progress is not None:
                progress(written, None)
        work.flush()
        parsed = _verify(work, descriptions, doc)
        work.seek(0)
        shutil.copyfileobj(work, out, _CHUNK)
    return parsed


def _items(doc: Any) -> list[Mapping[str, Any]]:
    if not isinstance(doc, Mapping) or doc.get(FORMAT_KEY) != FORMAT_VERSION:
        raise InputError(
            f"not a stream document: it needs {FORMAT_KEY!r}: {FORMAT_VERSION} "
            "(what vmstate analyze --format json prints)"
        )
    items = doc.get("items")
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise InputError("'items' must be a list of objects")
    return items


def _source_file(doc: Mapping[str, Any]) -> str | None:
    source = doc.get("source")
    return source.get("file") if isinstance(source, Mapping) else None


class _Descriptions:
    """The description of every section: its layout, else the vmdesc's entry; a section
    kept as bytes that is no RAM and no vfio section (no layout fitted it) reads as one
    buffer of its size, when the result is parsed again."""

    def __init__(self, items: list[Mapping[str, Any]]) -> None:
        from vmstate import fields
        from vmstate.vfio_section import raw_sections

        vmdesc = next((i for i in items if i.get("type") == "vmdesc"), None)
        table = None
        if vmdesc is not None:
            table = vmdesc.get("json") if "json" in vmdesc else _json_text(vmdesc.get("text"))
        self.vmdesc = resolver_from_vmdesc(table) if isinstance(table, Mapping) else None
        self.layouts: dict[tuple[str, int, int], Description] = {}
        for n, item in enumerate(items):
            if item.get("type") != "section" or item.get("kind") not in ("START", "FULL"):
                continue
            where = f"items[{n}]"
            key = (
                str(item.get("idstr")),
                _int(item, "instance_id", where, _U32),
                _int(item, "version_id", where, _U32),
            )
            if "layout" in item:
                layout = item["layout"]
                self.layouts[key] = description_from_vmdesc(layout, key[2], f"{where}.layout")
            elif "bytes" in item and key[0] != "ram" and raw_sections(key[0]) is None:
                size = _bytes_size(item["bytes"], f"{where}.bytes")
                self.layouts[key] = Description(key[0], key[2], 0, [fields.buffer("data", size)])

    def __call__(self, idstr: str, instance_id: int, version_id: int) -> Description | None:
        found = self.layouts.get((idstr, instance_id, version_id))
        if found is None and self.vmdesc is not None:
            found = self.vmdesc(idstr, instance_id, version_id)
        return found


def _json_text(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError as e:
        raise InputError(f"the vmdesc text is not JSON: {e}") from None


class _Source:
    """The source file of bytes kept by reference, opened on first use."""

    def __init__(self, stack: ExitStack, path: str | None) -> None:
        self.stack = stack
        self.path = path
        self.data: Input | None = None

    def read(self, ref: Mapping[str, Any], where: str) -> Iterator[bytes]:
        from vmstate.inputs import open_stream

        if self.path is None:
            raise InputError(f"{where} refers to the source file, and the document names none")
        if self.data is None:
            self.data = self.stack.enter_context(open_stream(self.path)).data
        offset, size = _int(ref, "offset", where), _int(ref, "size", where)
        if offset + size > len(self.data):
            raise InputError(f"{where}: {offset}+{size} runs past the end of {self.path}")
        digest = hashlib.sha256()
        for at in range(offset, offset + size, _CHUNK):
            piece = bytes(self.data[at : min(offset + size, at + _CHUNK)])
            digest.update(piece)
            yield piece
        if digest.hexdigest() != ref.get("sha256"):
            raise InputError(
                f"{where}: the bytes at {offset}+{size} of {self.path} are not the ones "
                "analyzed (SHA-256 differs): the file changed"
            )


def _bytes_size(kept: Any, where: str) -> int:
    if isinstance(kept, str):
        return len(kept) // 2
    if isinstance(kept, Mapping):
        return _int(kept, "size", where)
    raise InputError(f"{where} must be hex digits or a reference")


def _int(item: Mapping[str, Any], key: str, where: str, most: int | None = None) -> int:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{where}.{key} must be a non-negative integer, not {value!r}")
    if most is not None and value > most:
        raise InputError(f"{where}.{key} must be at most {most}, not {value}")
    return value


def _records(
    items: list[Mapping[str, Any]], descriptions: _Descriptions, source: _Source
) -> Iterator[bytes]:
    yield _BE32.pack(MAGIC) + _BE32.pack(VERSION)
    n = 0
    while n < len(items):
        item, where = items[n], f"items[{n}]"
        kind = item.get("type")
        if kind == "command" and item.get("name") == "PACKAGED":
            count = _int(item, "items", where)
            package = b"".join(
                b"".join(_record(items[k], f"items[{k}]", descriptions, source))
                for k in range(n + 1, min(len(items), n + 1 + count))
            )
            yield _command(PACKAGED, _BE32.pack(len(package))) + package
            n += 1 + count
            continue
        yield from _record(item, where, descriptions, source)
        n += 1


def _record(
    item: Mapping[str, Any], where: str, descriptions: _Descriptions, source: _Source
) -> Iterator[bytes]:
    kind = item.get("type")
    if kind == "configuration":
        state = _from_json(CONFIGURATION_DESCRIPTION, item.get("state"), where)
        yield bytes([CONFIGURATION]) + _save(CONFIGURATION_DESCRIPTION, state, 0, where)
    elif kind == "command":
        name = item.get("name")
        number = _COMMAND_NUMBERS.get(name) if isinstance(name, str) else None
        if number is None:
            raise InputError(f"{where}: unknown command {item.get('name')!r}")
        data = _hex(item.get("data", ""), f"{where}.data")
        if len(data) > _U16:  # its length is a 16-bit number on the wire
            raise InputError(f"{where}.data must be at most {_U16} bytes, not {len(data)}")
        yield _command(number, data)
    elif kind == "section":
        yield from _section(item, where, descriptions, source)
    elif kind == "eof":
        yield bytes([EOF])
    elif kind == "vmdesc":
        if "json" in item:
            separators = item.get("separators", [", ", ": "])
            if not (isinstance(separators, list) and len(separators) == 2
                    and all(isinstance(part, str) for part in separators)):
                raise InputError(f"{where}.separators must be two strings, as [\", \", \": \"]")
            text = json.dumps(item["json"], separators=(separators[0], separators[1]))
        elif isinstance(item.get("text"), str):
            text = item["text"]
        else:
            raise InputError(f"{where}: a vmdesc item needs 'json' or 'text'")
        body = text.encode()
        yield bytes([VMDESCRIPTION]) + _BE32.pack(len(body)) + body
    else:
        raise InputError(f"{where}: unknown item type {kind!r}")


def _command(number: int, data: bytes) -> bytes:
    return bytes([COMMAND]) + _BE16.pack(number) + _BE16.pack(len(data)) + data


def _section(
    item: Mapping[str, Any], where: str, descriptions: _Descriptions, source: _Source
) -> Iterator[bytes]:
    kind_name = item.get("kind")
    kind = _KIND_NUMBERS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        raise InputError(f"{where}: section kind {item.get('kind')!r} is none of START PART END FULL")
    section_id = _int(item, "section_id", where, _U32)
    header = bytes([kind]) + _BE32.pack(section_id)
    idstr = item.get("idstr")
    if not isinstance(idstr, str):
        raise InputError(f"{where}.idstr must be a string")
    instance_id = _int(item, "instance_id", where, _U32)
    version_id = _int(item, "version_id", where, _U32)
    if kind in (1, 4):  # START, FULL: the section's name and numbers
        name = idstr.encode()
        if not 0 < len(name) < 256:
            raise InputError(f"{where}: idstr must be 1..255 bytes")
        header += bytes([len(name)]) + name + _BE32.pack(instance_id) + _BE32.pack(version_id)
    yield header
    if "state" in item:
        desc = descriptions(idstr, instance_id, version_id)
        if desc is None:
            raise InputError(
                f"{where}: no description of {idstr!r} instance {instance_id}: no vmdesc entry, "
                "and no layout"
            )
        yield _save(desc, _from_json(desc, item["state"], where), version_id, where)
    elif isinstance(item.get("bytes"), str):
        yield _hex(item["bytes"], f"{where}.bytes")
    elif isinstance(item.get("bytes"), Mapping):
        yield from source.read(item["bytes"], f"{where}.bytes")
    else:
        raise InputError(f"{where}: a section needs 'state' or 'bytes'")
    if item.get("footer", True):
        yield bytes([FOOTER]) + _BE32.pack(section_id)


def _from_json(desc: Description, data: Any, where: str) -> dict[str, Any]:
    try:
        return desc.from_json(data)
    except EncodeError as e:
        raise e.within(where) from None


def _save(desc: Description, state: Mapping[str, Any], version: int, where: str) -> bytes:
    try:
        return desc.save(state, version)
    except EncodeError as e:
        raise e.within(where) from None


def _hex(text: Any, where: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except (TypeError, ValueError):
        raise InputError(f"{where} must be hex digits") from None


def _verify(work: IO[bytes], descriptions: _Descriptions, doc: Mapping[str, Any]) -> Stream:
    """Parse what was written with the same descriptions; the vfio view must hold."""
    import mmap

    from vmstate import registry
    from vmstate.qemu_vfio import gather
    from vmstate.vfio_section import raw_sections

    with mmap.mmap(work.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        # as analyze reads it: with the stream's own vmdesc when nothing else is needed
        resolver = descriptions if descriptions.layouts or descriptions.vmdesc is None else None
        parsed = parse(buf, resolver, raw=raw_sections)
        views = doc.get("vfio")
        if views is not None:
            formats = {
                v.get("idstr"): v.get("device_data", {}).get("format")
                for v in views
                if isinstance(v, Mapping)
            }
            name = next((f for f in formats.values() if f), None)
            data_format = registry.get(name) if name else None
            again = [vfio_view(d) for d in gather(parsed, buf, data_format)]
            if again != views:
                raise InputError(
                    "the document's vfio view is not what its vfio sections hold: encode "
                    "writes vfio sections from their bytes, so edit those (or drop 'vfio')"
                )
    return parsed


__all__ = ["encode"]
