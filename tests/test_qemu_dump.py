"""QEMU's -dump-vmstate: every description of full q35 and pc dumps imports, exports
back to equal JSON, and encodes and decodes generated state."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, require_tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmstate.description import Description
from vmstate.description_file import check_description_text, dump_description
from vmstate.errors import DescriptionError
from vmstate.fields import Array, Buffer, Struct, Unused, uint8
from vmstate.qemu_dump import (
    DumpedBytes,
    DumpedDevice,
    DumpedStruct,
    QemuDump,
    export_qemu_dump,
    format_qemu_dump,
    load_qemu_dump,
    parse_qemu_dump,
)

#: -M argument -> the machine name a dump of it records
MACHINES = {"q35": "pc-q35-", "pc": "pc-i440fx-"}


@pytest.fixture(scope="session")
def dump_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Full dumps: the ones saved in tests/data/qemu (QEMU 7.2) and tests/data/qemu-10.0,
    else made now with QEMU."""
    saved = [p for d in ("qemu", "qemu-10.0") for p in sorted((DATA / d).glob("dump-*.json*"))]
    if saved:
        return saved
    qemu = require_tool("qemu-system-x86_64")
    out = tmp_path_factory.mktemp("dumps")
    for machine in MACHINES:
        path = out / f"dump-{machine}.json"
        subprocess.run(
            [qemu, "-M", machine, "-nodefaults", "-accel", "tcg", "-dump-vmstate", str(path)],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return sorted(out.iterdir())


@pytest.fixture(scope="session")
def dumps(dump_files: list[Path]) -> list[QemuDump]:
    loaded = [load_qemu_dump(f) for f in dump_files]
    for prefix in MACHINES.values():
        assert any(d.machine.startswith(prefix) for d in loaded), f"no {prefix}* dump"
    return loaded


def _raw(path: Path) -> Any:
    data = path.read_bytes()
    return json.loads(gzip.decompress(data) if path.suffix == ".gz" else data)


def test_qemu_10_dumps_state_array_lengths() -> None:
    """What broke `check` on QEMU 10.0: "num" beside "size"; it reads as an array."""
    dump = load_qemu_dump(DATA / "qemu-10.0" / "dump-pc-q35-10.0.json")
    assert dump.counts_known and dump.unknown_keys == frozenset()
    e1000e = dump.device("e1000e").description
    mac = next(f for f in e1000e.fields if f.name == "core.mac")
    assert isinstance(mac.kind, Array) and (mac.kind.count, mac.kind.element.size) == (32768, 4)
    redir = dump.device("usb-redir").description  # the first entry 7.2's reader refused
    assert any(isinstance(f.kind, Array) for d in redir.walk() for f in d.fields)


def test_every_description_exports_back_equal(
    dump_files: list[Path], dumps: list[QemuDump]
) -> None:
    for path, dump in zip(dump_files, dumps, strict=True):
        raw = _raw(path)
        assert len(dump.devices) == len(raw) - 1 > 100
        exported = export_qemu_dump(dump)
        for dev in dump.devices:
            assert exported[dev.type_name] == raw[dev.type_name], dev.type_name
        assert exported == raw
        assert json.loads(format_qemu_dump(dump)) == raw


def test_repeated_names_get_vmdesc_suffixes(dumps: list[QemuDump]) -> None:
    e1000 = dumps[0].device("e1000").description
    names = [f.name for f in e1000.fields]
    assert [n for n in names if n.startswith("mac_reg[") and n[8:-1].isdigit()] == [
        "mac_reg[0]",
        "mac_reg[1]",
        "mac_reg[2]",
    ]
    assert names.count("unused") > 1
    assert all(isinstance(f.kind, Unused) for f in e1000.fields if f.name == "unused")
    pci = e1000.fields[0].kind
    assert isinstance(pci, DumpedStruct) and pci.description.name == "PCIDevice"
    config = [f for f in pci.description.fields if f.name.startswith("config")]
    assert [(f.name, f.kind.size, f.exists is not None) for f in config] == [
        ("config[0]", 256, True),
        ("config[1]", 4096, True),
    ]
    assert all(isinstance(f.kind, DumpedBytes) and f.kind.qemu_name == "config" for f in config)


def test_devices_without_a_field_list_are_unmigratable(dumps: list[QemuDump]) -> None:
    nvme = dumps[0].device("nvme")
    assert nvme.unmigratable and nvme.description.fields == ()
    assert not dumps[0].device("e1000").unmigratable


def test_every_description_writes_a_loadable_description_file(dumps: list[QemuDump]) -> None:
    """A dump is a starting point for description files: each one exports to a file
    that checks without errors (opaque tests are warnings)."""
    for dev in dumps[0].devices:
        text = dump_description(dev.description)
        errors = [p for p in check_description_text(text, dev.type_name) if p.severity == "error"]
        assert errors == [], dev.type_name


# -- generated state -----------------------------------------------------------------


def _bytes(data: st.DataObject, n: int) -> bytes:
    if n <= 64:
        return data.draw(st.binary(min_size=n, max_size=n))
    pattern = data.draw(st.binary(min_size=1, max_size=8))
    return (pattern * (n // len(pattern) + 1))[:n]


def _state(data: st.DataObject, desc: Description, version: int, decide: dict[str, bool]) -> Any:
    """A state for *desc*; *decide* records the choice for each opaque exists-test."""
    state: dict[str, Any] = {}
    for field in desc.fields:
        if not field.kind.stored:
            continue  # padding is written whatever its test says
        if field.exists is not None:
            key = f"{desc.name}/{field.name}"
            if key not in decide:
                decide[key] = data.draw(st.booleans(), label=key)
            if not decide[key]:
                continue
        elif field.since > version:
            continue
        state[field.name] = _value(data, field.kind, decide)
    for sub in desc.subsections:
        if data.draw(st.booleans(), label=sub.name):
            state[sub.name] = _state(data, sub.description, sub.description.version_id, decide)
    return state


def _value(data: st.DataObject, kind: Any, decide: dict[str, bool]) -> Any:
    if isinstance(kind, Array):  # QEMU 10.0's "num": one drawn element, repeated
        return [_value(data, kind.element, decide)] * kind.count
    if isinstance(kind, Struct):
        nested = kind.description
        return _state(data, nested, nested.version_id, decide)
    assert isinstance(kind, Buffer)
    return _bytes(data, kind.size)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def _round_trips(desc: Description, data: st.DataObject) -> None:
    decide: dict[str, bool] = {}
    state = _state(data, desc, desc.version_id, decide)
    blob = desc.save(state)
    loaded = desc.load(blob, opaque=lambda key, _values: decide.get(key, True))
    assert loaded == state
    assert desc.save(loaded) == blob


def test_generated_states_round_trip_through_every_description(dumps: list[QemuDump]) -> None:
    """Every distinct description of the dumps, the opaque exists-tests bound to
    hypothesis-chosen booleans."""
    distinct = {dev.description for dump in dumps for dev in dump.devices}
    assert len(distinct) > 100
    for desc in sorted(distinct, key=lambda d: d.name):
        _round_trips(desc)


# -- malformed dumps -------------------------------------------------------------------


def _dump(fields: list[Any], **device: Any) -> dict[str, Any]:
    desc = {"name": "dev", "version_id": 1, "minimum_version_id": 1, "Fields": fields}
    return {
        "vmschkmachine": {"Name": "m"},
        "dev": {"Name": "dev", "version_id": 1, "minimum_version_id": 1, "Description": desc}
        | device,
    }


def _field(name: str, size: int = 4, **extra: Any) -> dict[str, Any]:
    return {"field": name, "version_id": 0, "field_exists": False, "size": size} | extra


@pytest.mark.parametrize(
    ("dump", "location", "message"),
    [
        ([], "x.json", "a dump is a JSON object"),
        ({"dev": {}}, "x.json", "missing 'vmschkmachine'"),
        (
            _dump([_field("a", size="4")]),
            "x.json: dev.Description.Fields[0]",
            "'size' must be int, not str",
        ),
        (_dump([_field("a", size=-1)]), "x.json: dev.Description.Fields[0]", "negative size"),
        (
            _dump([_field("a", field_exists=1)]),
            "x.json: dev.Description.Fields[0]",
            "'field_exists' must be bool",
        ),
        (
            _dump(
                [_field("s", Description={"name": "s", "version_id": 1, "minimum_version_id": 1})]
            ),
            "x.json: dev.Description.Fields[0].Description",
            "no field list",
        ),
        (
            _dump([_field("x"), _field("x"), _field("x[1]")]),
            "x.json: dev.Description",
            "'x[1]' appears twice",
        ),
    ],
)
def test_malformed_dumps_say_where(dump: Any, location: str, message: str) -> None:
    with pytest.raises(DescriptionError, match=re.escape(message)) as info:
        parse_qemu_dump(dump, "x.json")
    assert info.value.location == location


def test_keys_of_a_newer_qemu_are_kept_and_listed() -> None:
    """A key this reader does not know never makes a dump unreadable: it is listed and
    exported back where it was."""
    raw = _dump([_field("a") | {"type": "uint32"}], flags=3)
    raw["dev"]["Description"]["x-note"] = "new"
    parsed = parse_qemu_dump(raw, "x.json")
    assert parsed.unknown_keys == {"type", "flags", "x-note"}
    assert export_qemu_dump(parsed) == raw


def test_an_empty_subsections_list_exports_back_as_qemu_wrote_it() -> None:
    """savevm.c writes "Subsections": [] for a description whose subsection array holds
    only its NULL end; that list, at the top and nested, exports back (it once vanished:
    found by fuzz/run.py, qemu_dump target)."""
    raw = _dump([_field("a")])
    raw["dev"]["Description"]["Subsections"] = [
        {"name": "dev/sub", "version_id": 1, "minimum_version_id": 1,
         "Fields": [_field("b")], "Subsections": []}]
    parsed = parse_qemu_dump(raw, "x.json")
    assert parsed.unknown_keys == set()
    assert export_qemu_dump(parsed) == raw
    raw["dev"]["Description"]["Subsections"] = []
    assert export_qemu_dump(parse_qemu_dump(raw, "x.json")) == raw


def test_num_is_an_array_of_elements() -> None:
    """QEMU 10.0 writes "num" for fixed-size arrays; "size" stays one element's."""
    raw = _dump([_field("regs", 4, num=16), _field("flag", 1)])
    parsed = parse_qemu_dump(raw, "x.json")
    regs = parsed.device("dev").description.fields[0]
    assert isinstance(regs.kind, Array) and regs.kind.count == 16 and regs.kind.size == 64
    assert parsed.counts_known
    assert export_qemu_dump(parsed) == raw
    assert not parse_qemu_dump(_dump([_field("regs", 4)]), "x.json").counts_known


def test_gzipped_dumps_and_unreadable_files(tmp_path: Path) -> None:
    raw = _dump([_field("a"), _field("unused", 2)])
    path = tmp_path / "dump-m.json.gz"
    path.write_bytes(gzip.compress(json.dumps(raw).encode()))
    assert export_qemu_dump(load_qemu_dump(path)) == raw
    (tmp_path / "bad.json").write_text("{")
    for name, message in [("bad.json", "not JSON"), ("missing.json", "cannot read")]:
        with pytest.raises(DescriptionError, match=message) as info:
            load_qemu_dump(tmp_path / name)
        assert info.value.location == str(tmp_path / name)


def test_only_dump_fields_export() -> None:
    dump = QemuDump("m", (DumpedDevice("dev", Description("dev", 1, 1, [uint8("a")])),))
    with pytest.raises(DescriptionError, match="'a' is a uint8 field"):
        export_qemu_dump(dump)
    with pytest.raises(DescriptionError, match="unmigratable device has no fields"):
        DumpedDevice("dev", Description("dev", 1, 1, [uint8("a")]), unmigratable=True)


def test_entries_that_disagree_with_their_description_survive() -> None:
    """QEMU's checker test data has entries whose Name or versions differ from their
    description's, or no Description at all: they import and export unchanged."""
    for dump in (_dump([], Name="other"), _dump([], version_id=2)):
        assert export_qemu_dump(parse_qemu_dump(dump, "x.json")) == dump
    undescribed = {
        "vmschkmachine": {"Name": "m"},
        "dev": {"Name": "dev", "version_id": 1, "minimum_version_id": 1},
    }
    parsed = parse_qemu_dump(undescribed, "x.json")
    assert parsed.devices[0].unmigratable
    assert export_qemu_dump(parsed) == undescribed
