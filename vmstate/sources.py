"""Description sets from any supported source, for ``--descriptions``, ``--src`` and ``--dst``.

- a QEMU ``-dump-vmstate`` JSON (gzip-compressed too): sections by device type;
- a stream's vmdesc JSON (as ``analyze --dump desc`` prints it), or a migration
  stream itself (bare or in a libvirt save image): sections by id string, exactly
  as the source sent them;
- a description file (``.toml``) or a directory of them: sections by name.

A source is read once, wherever it is (a file, ``-``, a pipe: see
:func:`vmstate.inputs.open_stream`), and told apart by its contents; a
``.toml`` name, or text that is no JSON, is a description file.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import attrs

from vmstate.compat import DUMP, VMDESC, DescriptionSet
from vmstate.description import Description
from vmstate.description_file import load_description_file, load_description_text
from vmstate.description_file.reader import MAX_FILE_BYTES
from vmstate.dump_layout import DumpLayouts
from vmstate.errors import DecodeError, DescriptionError, InputError, LimitError
from vmstate.inputs import STDIN, open_stream
from vmstate.qemu_dump import MACHINE_KEY, QemuDump, parse_qemu_dump
from vmstate.stream import (
    MAGIC,
    Input,
    Resolver,
    find_vmdesc,
    parse_vmdesc,
    refuse_truncated,
    resolver_from,
    stream_machine,
)
from vmstate.vmdesc import ANY_VERSION, description_from_vmdesc, resolver_from_vmdesc

_MAX_JSON = 64 << 20
_NOT_A_SOURCE = "not a description file, -dump-vmstate JSON, vmdesc or migration stream"
_GZIP = b"\x1f\x8b"


@attrs.frozen
class _Read:
    """What a source held: description files, a vmdesc (and the stream's machine type),
    or a -dump-vmstate; exactly one of them."""

    origin: str
    files: tuple[Description, ...] = ()
    vmdesc: dict[str, Any] | None = None
    machine: str | None = None
    dump: QemuDump | None = None


def load_description_set(path: str | Path) -> DescriptionSet:
    """Read *path* in whichever supported form it is."""
    return _as_set(_read(path))


def _as_set(found: _Read) -> DescriptionSet:
    if found.vmdesc is not None:
        return attrs.evolve(_from_vmdesc(found.vmdesc, found.origin), machine=found.machine or "")
    if found.dump is not None:
        return dump_description_set(found.dump, found.origin)
    return DescriptionSet({d.name: d for d in found.files}, origin=found.origin)


def dump_description_set(dump: QemuDump, origin: str) -> DescriptionSet:
    """A -dump-vmstate as check compares it: its device classes, which of them cannot
    migrate, the versions its entries give where their descriptions differ."""
    versions = {
        dev.type_name: (dev.version_id, dev.minimum_version_id)
        for dev in dump.devices
        if (dev.version_id, dev.minimum_version_id)
        != (dev.description.version_id, dev.description.minimum_version_id)
    }
    return DescriptionSet(
        {dev.type_name: dev.description for dev in dump.devices},
        frozenset(dev.type_name for dev in dump.devices if dev.unmigratable),
        origin=origin,
        kind=DUMP,
        versions=versions,
        machine=dump.machine,
        counts_known=dump.counts_known,
    )


@attrs.frozen
class Decoder:
    """How to find a stream's sections' descriptions: by name (*resolver*), or, for a
    -dump-vmstate, by fitting the dump to each section's bytes (*layouts*)."""

    resolver: Resolver | None = None
    layouts: DumpLayouts | None = None


def load_decoder(path: str | Path) -> Decoder:
    """A decoder of streams from any description source."""
    found = _read(path)
    if found.vmdesc is not None:
        return Decoder(resolver_from_vmdesc(found.vmdesc))
    if found.dump is not None:
        return Decoder(layouts=DumpLayouts(_as_set(found)))
    return Decoder(resolver_from({desc.name: desc for desc in found.files}))


def _read(path: str | Path) -> _Read:
    text = str(path)
    source = Path(text)
    if text != STDIN and source.is_dir():
        files = tuple(load_description_file(p) for p in sorted(source.glob("*.toml")))
        if not files:
            raise InputError("no *.toml description files in this directory", text)
        return _Read(text, files=files)
    if text.endswith(".toml"):
        return _Read(text, files=(load_description_file(source),))
    with open_stream(text) as opened:
        buf = opened.data
        head, magic = bytes(buf[:4]), MAGIC.to_bytes(4, "big")
        if not head:
            raise InputError(f"empty: {_NOT_A_SOURCE}", text)
        if head == magic or magic.startswith(head) or opened.save_image is not None:
            return _Read(text, vmdesc=_stream_vmdesc(buf, text), machine=stream_machine(buf))
        raw = _unpacked(buf, text)
    if raw.lstrip()[:1] not in (b"{", b"["):
        return _Read(text, files=(_description_text(raw, text),))
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"not JSON: {e}", text) from None
    except RecursionError:
        raise LimitError("JSON nests too deeply", path=(text,)) from None
    if isinstance(data, dict) and MACHINE_KEY in data:
        return _Read(text, dump=parse_qemu_dump(data, text))
    if isinstance(data, dict) and isinstance(data.get("devices"), list):
        return _Read(text, vmdesc=data)
    raise InputError("JSON that is neither a -dump-vmstate nor a vmdesc", text)


def _unpacked(buf: Input, origin: str) -> bytes:
    """The bytes of a JSON or description source, gunzipped when they are gzip, bounded."""
    if len(buf) > _MAX_JSON:
        raise LimitError(
            "too large for a description source",
            offset=_MAX_JSON,
            expected=f"<= {_MAX_JSON} bytes",
            found=f"{len(buf)} bytes",
            path=(origin,),
        )
    if bytes(buf[:2]) != _GZIP:
        return bytes(buf)
    unzip = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = unzip.decompress(bytes(buf), _MAX_JSON + 1)
    except zlib.error as e:
        raise DecodeError(
            "corrupt gzip data", expected="gzip data", found=str(e), path=(origin,)
        ) from None
    if len(data) > _MAX_JSON:
        raise LimitError(
            "decompresses to too much for a description source",
            expected=f"<= {_MAX_JSON} bytes",
            found="more",
            path=(origin,),
        )
    return data


def _description_text(raw: bytes, origin: str) -> Description:
    """A description file's text (what is neither a stream nor JSON)."""
    if len(raw) > MAX_FILE_BYTES:
        raise DescriptionError(f"larger than {MAX_FILE_BYTES} bytes", location=origin)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(_NOT_A_SOURCE, origin) from None
    return load_description_text(text, origin)


def _stream_vmdesc(buf: Input, origin: str) -> dict[str, Any]:
    at = find_vmdesc(buf)
    if at is None:
        refuse_truncated(buf)
        raise InputError("the stream has no vmdesc to describe its sections", origin)
    return parse_vmdesc(buf, at)


def _from_vmdesc(vmdesc: dict[str, Any], origin: str) -> DescriptionSet:
    sections = {}
    for n, dev in enumerate(vmdesc["devices"]):
        if not isinstance(dev, dict) or not isinstance(dev.get("name"), str):
            raise DescriptionError(
                "device entry without a name", location=f"{origin}: devices[{n}]"
            )
        key = (
            dev["name"]
            if dev.get("instance_id", 0) == 0
            else f"{dev['name']} ({dev['instance_id']})"
        )
        # an old-style section's entry records no version: it takes any
        version = dev.get("version", ANY_VERSION)
        sections[key] = description_from_vmdesc(dev, version, f"{origin}: devices[{n}]")
    return DescriptionSet(sections, origin=origin, kind=VMDESC)


__all__ = ["Decoder", "load_decoder", "load_description_set"]
