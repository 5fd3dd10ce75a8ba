"""QEMU's ``-dump-vmstate`` JSON: every device class's description, as QEMU exports it.

``qemu-system-x86_64 -M q35 -nodefaults -dump-vmstate out.json`` writes, per
device class, its VMStateDescription as QEMU's ``dump_vmstate_vmsd`` sees it.
Of a field that is only: its name, the version it appeared in, whether an
exists-test decides it (the test is C code, not exported), a ``size`` and, for
a struct, the nested description.  The dump does not say a field's type (so not
its signedness), nor how many elements an array has (``size`` is one
element's, for a struct the host C struct's), nor any subsection's ``needed``.

The import keeps exactly that, and guesses nothing:

- a field with a nested description becomes a :class:`DumpedStruct`: the nested
  description, one element at its own version; ``host_size`` keeps QEMU's size;
- a field with ``num`` (QEMU 10.0 writes it for fixed-size arrays, VMS_ARRAY)
  becomes an :class:`~vmstate.fields.Array` of ``num`` such elements, ``size``
  being one element's; a variable array has no ``num`` and stays one element;
- a field named ``unused`` becomes :class:`~vmstate.fields.Unused` padding, as
  QEMU names every ``VMSTATE_UNUSED`` (and as ``vmstate-static-checker`` reads it);
- any other field becomes :class:`DumpedBytes`: ``size`` raw bytes;
- ``field_exists`` and every subsection's ``needed`` become opaque conditions
  (:func:`~vmstate.predicates.opaque_condition`): a load asks its ``opaque=``
  callback, a save writes what the state holds;
- a name QEMU repeats within one description (PCIDevice's two ``config``
  buffers, e1000's ``mac_reg`` slices) gets vmdesc's suffix in the state,
  ``config[0]``, ``config[1]``; the kind keeps QEMU's name for export.

A dump-derived description therefore lays out bytes as QEMU declares fields,
one element each: right for comparing QEMU versions and as the start of a
hand-written description file, not a decoder for real streams (a stream's
vmdesc says the real sizes; see :mod:`vmstate.vmdesc`).  Export gives back JSON
equal to the input.  Keys this module does not know (a newer QEMU's) never make
a dump unreadable: they are kept, exported back, and listed in
:attr:`QemuDump.unknown_keys` so a comparison can say what it could not use.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from vmstate.description import Description, Subsection
from vmstate.errors import DescriptionError
from vmstate.fields import Array, Buffer, Field, Kind, Struct, Unused
from vmstate.predicates import opaque_condition

__all__ = [
    "DumpedBytes",
    "DumpedDevice",
    "DumpedStruct",
    "QemuDump",
    "export_qemu_dump",
    "format_qemu_dump",
    "load_qemu_dump",
    "parse_qemu_dump",
    "read_json_file",
]

#: a full x86 dump is under 1 MB; anything this big is not a dump
MAX_DUMP_BYTES = 64 << 20
MAX_DEPTH = 64
MAX_NUM = 1 << 24
MACHINE_KEY = "vmschkmachine"
#: Buffer.info of dumped fields: the dump does not say QEMU's type
UNKNOWN_TYPE = "unknown"

_DEVICE_KEYS = frozenset({"Name", "version_id", "minimum_version_id", "Description"})
_DESC_KEYS = frozenset({"name", "version_id", "minimum_version_id", "Fields", "Subsections"})
_FIELD_KEYS = frozenset({"field", "version_id", "field_exists", "num", "size", "Description"})
#: where an object sits in the dump: (device type, "Description", "Fields", 3, ...)
JsonPath = tuple[str | int, ...]


@attrs.frozen
class DumpedBytes(Buffer):
    """A non-struct field of a dump: ``size`` bytes whose type QEMU did not export."""

    qemu_name: str = attrs.field(kw_only=True)

    def dump_field(self, name: str, head: dict[str, Any], extra: Mapping[str, Any],
                   nested: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        return {"field": self.qemu_name, **head, **extra, "size": self.size}

    def untyped(self) -> Kind:
        return Buffer(self.size, UNKNOWN_TYPE)


@attrs.frozen
class DumpedStruct(Struct):
    """A struct field of a dump; ``host_size`` is QEMU's C struct size (not portable)."""

    host_size: int = attrs.field(kw_only=True)
    qemu_name: str = attrs.field(kw_only=True)

    def dump_field(self, name: str, head: dict[str, Any], extra: Mapping[str, Any],
                   nested: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        return {"field": self.qemu_name, **head, **extra, "size": self.host_size,
                "Description": nested(self.description)}


@attrs.frozen
class DumpedDevice:
    """One device class of a dump.

    ``unmigratable`` when QEMU gives the class no field list at all: in QEMU
    7.2 those are exactly the ``.unmigratable = 1`` devices (saving a field
    list that does not exist would crash QEMU, so no migratable device has none).
    """

    type_name: str
    description: Description
    unmigratable: bool = False
    #: the device entry's own "Name", "version_id" and "minimum_version_id": QEMU
    #: writes the description's, but the checker compares these too
    name: str = attrs.field(
        kw_only=True, default=attrs.Factory(lambda self: self.type_name, takes_self=True)
    )
    version_id: int = attrs.field(
        kw_only=True,
        default=attrs.Factory(lambda self: self.description.version_id, takes_self=True),
    )
    minimum_version_id: int = attrs.field(
        kw_only=True,
        default=attrs.Factory(lambda self: self.description.minimum_version_id, takes_self=True),
    )
    #: False when the entry had no "Description" at all
    described: bool = attrs.field(kw_only=True, default=True)

    def __attrs_post_init__(self) -> None:
        if self.unmigratable and (self.description.fields or self.description.subsections):
            raise DescriptionError("an unmigratable device has no fields", location=self.type_name)


@attrs.frozen
class QemuDump:
    """A whole ``-dump-vmstate`` file: the machine and its device classes in file order."""

    machine: str
    devices: tuple[DumpedDevice, ...]
    #: keys of a newer QEMU, by where they were: kept for export, unused otherwise
    extra: Mapping[JsonPath, Mapping[str, Any]] = attrs.field(factory=dict)
    #: whether the dump states array lengths ("num", QEMU 10.0+); without them any
    #: field may stand for an array of unknown length
    counts_known: bool = False
    #: descriptions whose "Subsections" list was there but empty (QEMU writes one for
    #: a subsection array holding only its NULL end): kept for export
    empty_subsections: frozenset[JsonPath] = frozenset()

    @property
    def unknown_keys(self) -> frozenset[str]:
        return frozenset(key for keys in self.extra.values() for key in keys)

    def device(self, type_name: str) -> DumpedDevice:
        for dev in self.devices:
            if dev.type_name == type_name:
                return dev
        raise KeyError(type_name)


# -- import ---------------------------------------------------------------------


def load_qemu_dump(path: str | os.PathLike[str]) -> QemuDump:
    """Read a dump file (``.gz`` too); :class:`DescriptionError` names what is wrong where."""
    source = os.fspath(path)
    data = read_json_file(source, MAX_DUMP_BYTES)
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise DescriptionError(f"not JSON: {e}", location=source) from None
    return parse_qemu_dump(obj, source)


def read_json_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of a JSON file, a ``.gz`` one decompressed as far as *limit* and no
    further (a few kilobytes of gzip can hold gigabytes); DescriptionError past it."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if source.endswith(".gz") else raw
            data = stream.read(limit + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DescriptionError(f"cannot read: {e}", location=source) from None
    if len(data) > limit:
        raise DescriptionError(f"larger than {limit} bytes", location=source)
    return data


def parse_qemu_dump(obj: Any, source: str = "<dump>") -> QemuDump:
    """The dump in *obj*, parsed JSON."""
    if not isinstance(obj, dict):
        raise DescriptionError("a dump is a JSON object", location=source)
    machine = _get(_get(obj, MACHINE_KEY, dict, source), "Name", str, f"{source}: {MACHINE_KEY}")
    extra = _Extra()
    devices = [
        _device(name, value, f"{source}: {name}", extra)
        for name, value in obj.items()
        if name != MACHINE_KEY
    ]
    counts = any(
        f.kind.is_list
        for dev in devices
        for d in dev.description.walk()
        for f in d.fields
    )
    return QemuDump(machine, tuple(devices), extra.found, counts, frozenset(extra.empty))


def _get(obj: Mapping[str, Any], key: str, typ: type, where: str) -> Any:
    if key not in obj:
        raise DescriptionError(f"missing {key!r}", location=where)
    value = obj[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise DescriptionError(
            f"{key!r} must be {typ.__name__}, not {type(value).__name__}", location=where
        )
    return value


class _Extra:
    """Collects what the model of a dump does not hold, by where it was: a newer QEMU's
    keys, and empty "Subsections" lists."""

    def __init__(self) -> None:
        self.found: dict[JsonPath, dict[str, Any]] = {}
        self.empty: set[JsonPath] = set()

    def object(self, obj: Any, keys: frozenset[str], where: str, path: JsonPath) -> None:
        if not isinstance(obj, dict):
            raise DescriptionError("expected a JSON object", location=where)
        unknown = {key: value for key, value in obj.items() if key not in keys}
        if unknown:
            self.found[path] = unknown


def _device(type_name: str, obj: Any, where: str, extra: _Extra) -> DumpedDevice:
    extra.object(obj, _DEVICE_KEYS, where, (type_name,))
    version = _get(obj, "version_id", int, where)
    minimum = _get(obj, "minimum_version_id", int, where)
    described = "Description" in obj
    if described:
        raw = _get(obj, "Description", dict, where)
        desc = _description(
            raw, f"{where}.Description", (type_name, "Description"), extra, depth=0, top=True
        )
    else:  # QEMU always writes one; a hand-edited dump may not (the checker's test data)
        raw, desc = {}, Description(type_name, version, minimum)
    return DumpedDevice(
        type_name,
        desc,
        unmigratable="Fields" not in raw,
        name=_get(obj, "Name", str, where),
        version_id=version,
        minimum_version_id=minimum,
        described=described,
    )


def _description(
    obj: Any, where: str, path: JsonPath, extra: _Extra, depth: int, top: bool = False
) -> Description:
    if depth > MAX_DEPTH:
        raise DescriptionError("descriptions nest too deeply", location=where)
    extra.object(obj, _DESC_KEYS, where, path)
    name = _get(obj, "name", str, where)
    if "Fields" not in obj and not top:
        raise DescriptionError(
            "no field list: QEMU could not save this description", location=where
        )
    raw_fields = _get(obj, "Fields", list, where) if "Fields" in obj else []
    names = (f.get("field") if isinstance(f, dict) else None for f in raw_fields)
    counts = Counter(n for n in names if isinstance(n, str))  # others are refused below
    seen: Counter[str] = Counter()
    fields = [
        _field(raw, name, counts, seen, f"{where}.Fields[{i}]", (*path, "Fields", i), extra, depth)
        for i, raw in enumerate(raw_fields)
    ]
    subsections = []
    raw_subsections = _get(obj, "Subsections", list, where) if "Subsections" in obj else None
    if raw_subsections == []:
        extra.empty.add(path)
    for i, raw in enumerate(raw_subsections or []):
        at = f"{where}.Subsections[{i}]"
        sub = _description(raw, at, (*path, "Subsections", i), extra, depth + 1)
        subsections.append(Subsection(sub, opaque_condition(sub.name)))
    try:
        return Description(
            name,
            _get(obj, "version_id", int, where),
            _get(obj, "minimum_version_id", int, where),
            fields,
            subsections,
        )
    except DescriptionError as e:
        raise DescriptionError(e.message, location=where) from None


def _field(
    obj: Any,
    owner: str,
    counts: Counter[Any],
    seen: Counter[str],
    where: str,
    path: JsonPath,
    extra: _Extra,
    depth: int,
) -> Field:
    extra.object(obj, _FIELD_KEYS, where, path)
    qemu_name = _get(obj, "field", str, where)
    since = _get(obj, "version_id", int, where)
    size = _get(obj, "size", int, where)
    if size < 0:
        raise DescriptionError(f"negative size {size}", location=where)
    k = seen[qemu_name]
    seen[qemu_name] += 1
    kind: Kind
    if "Description" in obj:
        at = f"{where}.Description"
        nested = _description(obj["Description"], at, (*path, "Description"), extra, depth + 1)
        kind = DumpedStruct(nested, host_size=size, qemu_name=qemu_name)
    elif qemu_name == "unused":
        kind = Unused(size)
    else:
        kind = DumpedBytes(size, UNKNOWN_TYPE, qemu_name=qemu_name)
    if "num" in obj:
        num = _get(obj, "num", int, where)
        if not 0 <= num <= MAX_NUM:
            raise DescriptionError(f"num {num} out of range 0..{MAX_NUM}", location=where)
        kind = Array(kind, num)
    name = qemu_name if counts[qemu_name] == 1 or not kind.stored else f"{qemu_name}[{k}]"
    exists = opaque_condition(f"{owner}/{name}") if _get(obj, "field_exists", bool, where) else None
    try:
        return Field(name, kind, since, exists)
    except DescriptionError as e:
        raise DescriptionError(e.message, location=where) from None


# -- export ---------------------------------------------------------------------


def export_qemu_dump(dump: QemuDump) -> dict[str, Any]:
    """*dump* as the JSON object QEMU writes (equal to the imported one)."""
    out: dict[str, Any] = {MACHINE_KEY: {"Name": dump.machine}}
    for dev in dump.devices:
        path: JsonPath = (dev.type_name,)
        out[dev.type_name] = {
            "Name": dev.name,
            "version_id": dev.version_id,
            "minimum_version_id": dev.minimum_version_id,
            **dump.extra.get(path, {}),
        }
        if dev.described:
            out[dev.type_name]["Description"] = _description_json(
                dev.description, (*path, "Description"), dump, fields=not dev.unmigratable
            )
    return out


def format_qemu_dump(dump: QemuDump) -> str:
    """*dump* as JSON text, indented like QEMU's."""
    return json.dumps(export_qemu_dump(dump), indent=2) + "\n"


def _description_json(
    desc: Description, path: JsonPath, dump: QemuDump, fields: bool = True
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": desc.name,
        "version_id": desc.version_id,
        "minimum_version_id": desc.minimum_version_id,
        **dump.extra.get(path, {}),
    }
    if fields:
        out["Fields"] = [
            _field_json(f, desc.name, (*path, "Fields", i), dump)
            for i, f in enumerate(desc.fields)
        ]
    if desc.subsections or path in dump.empty_subsections:
        out["Subsections"] = [
            _description_json(s.description, (*path, "Subsections", i), dump)
            for i, s in enumerate(desc.subsections)
        ]
    return out


def _field_json(field: Field, owner: str, path: JsonPath, dump: QemuDump) -> dict[str, Any]:
    head: dict[str, Any] = {"version_id": field.since, "field_exists": field.exists is not None}

    def nested(desc: Any) -> dict[str, Any]:
        return _description_json(desc, (*path, "Description"), dump)

    try:
        return field.kind.dump_field(field.name, head, dump.extra.get(path, {}), nested)
    except DescriptionError as e:
        raise DescriptionError(e.message, location=owner) from None
