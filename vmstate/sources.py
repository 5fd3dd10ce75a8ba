"""Description sets from any supported source, for ``--descriptions``, ``--src`` and ``--dst``.

- a QEMU ``-dump-vmstate`` JSON (``.json`` or ``.json.gz``): sections by device type;
- a stream's vmdesc JSON (as ``analyze --dump desc`` prints it), or a migration
  stream itself (bare or in a libvirt save image): sections by id string, exactly
  as the source sent them;
- a description file (``.toml``) or a directory of them: sections by name.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import attrs

from vmstate.compat import DUMP, VMDESC, DescriptionSet
from vmstate.description_file import load_description_file
from vmstate.dump_layout import DumpLayouts
from vmstate.errors import DescriptionError, UsageError
from vmstate.inputs import open_stream
from vmstate.libvirt_save import is_save_image
from vmstate.qemu_dump import MACHINE_KEY, load_qemu_dump
from vmstate.stream import (
    MAGIC,
    Resolver,
    find_vmdesc,
    parse_vmdesc,
    resolver_from,
    stream_machine,
)
from vmstate.vmdesc import description_from_vmdesc, resolver_from_vmdesc

_MAX_JSON = 64 << 20
ANY_VERSION = 0xFFFFFFFF


def load_description_set(path: str | Path) -> DescriptionSet:
    """Read *path* in whichever supported form it is."""
    source = Path(path)
    if source.is_dir():
        descs = [load_description_file(p) for p in sorted(source.glob("*.toml"))]
        if not descs:
            raise UsageError(f"{source}: no *.toml description files")
        return DescriptionSet({d.name: d for d in descs}, origin=str(source))
    if source.suffix == ".toml":
        desc = load_description_file(source)
        return DescriptionSet({desc.name: desc}, origin=str(source))
    head = _head(source)
    if head[:4] == MAGIC.to_bytes(4, "big") or is_save_image(head):
        vmdesc, machine = _stream_vmdesc(source)
        return attrs.evolve(_from_vmdesc(vmdesc, str(source)), machine=machine or "")
    data = _json(source)
    if isinstance(data, dict) and MACHINE_KEY in data:
        dump = load_qemu_dump(source)
        versions = {
            dev.type_name: (dev.version_id, dev.minimum_version_id)
            for dev in dump.devices
            if (dev.version_id, dev.minimum_version_id)
            != (dev.description.version_id, dev.description.minimum_version_id)
        }
        return DescriptionSet(
            {dev.type_name: dev.description for dev in dump.devices},
            frozenset(dev.type_name for dev in dump.devices if dev.unmigratable),
            origin=str(source),
            kind=DUMP,
            versions=versions,
            machine=dump.machine,
            counts_known=dump.counts_known,
        )
    if isinstance(data, dict) and isinstance(data.get("devices"), list):
        return _from_vmdesc(data, str(source))
    raise UsageError(f"{source}: not a description file, -dump-vmstate JSON, vmdesc or stream")


@attrs.frozen
class Decoder:
    """How to find a stream's sections' descriptions: by name (*resolver*), or, for a
    -dump-vmstate, by fitting the dump to each section's bytes (*layouts*)."""

    resolver: Resolver | None = None
    layouts: DumpLayouts | None = None


def load_decoder(path: str | Path) -> Decoder:
    """A decoder of streams from any description source."""
    source = Path(path)
    if source.suffix == ".json" and source.is_file():
        data = _json(source)
        if isinstance(data, dict) and isinstance(data.get("devices"), list):
            return Decoder(resolver_from_vmdesc(data))
    found = load_description_set(source)
    if found.kind == DUMP:
        return Decoder(layouts=DumpLayouts(found))
    by_name = {desc.name: desc for desc in found.sections.values()}
    return Decoder(resolver_from(by_name))


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(16)
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror}") from None


def _json(path: Path) -> Any:
    try:
        raw = path.read_bytes() if path.suffix != ".gz" else gzip.decompress(path.read_bytes())
        if len(raw) > _MAX_JSON:
            raise UsageError(f"{path}: larger than {_MAX_JSON} bytes")
        return json.loads(raw)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UsageError(f"{path}: not readable JSON: {e}") from None


def _stream_vmdesc(path: Path) -> tuple[dict[str, Any], str | None]:
    """A stream's vmdesc and the machine type its configuration section names."""
    with open_stream(path) as opened:
        buf = opened.data
        at = find_vmdesc(buf)
        if at is None:
            raise UsageError(f"{path}: the stream has no vmdesc to describe its sections")
        return parse_vmdesc(buf, at), stream_machine(buf)


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
