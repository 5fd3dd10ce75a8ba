"""``vmstate diff``: two saved device states (files of ``vmstate save``) and two description
sets, field by field.  Every offset shown is checked against the files' bytes; the
description sets' differences against QEMU's own dumps.  (Two streams, and the edit
encode makes: tests/test_encode.py.)"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA
from test_pci_vfio import CONFIG, MSIX_BAR, programmed, saved

from vmstate.cli import main

DUMP_7_2 = DATA / "qemu" / "dump-pc-i440fx-7.2.json"
DUMP_10_0 = DATA / "qemu-10.0" / "dump-pc-i440fx-10.0.json"


def _diffed(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(["diff", *args])
    out, err = capsys.readouterr()
    assert err == ""
    return status, out


@pytest.fixture
def two_states(tmp_path: Path) -> tuple[Path, Path]:
    """Two e1000e-like functions saved (with QEMU's own layout too), B with another
    interrupt line and MSI-X vector 2's data."""
    a, b = programmed("0000:00:05.0"), programmed("0000:00:06.0")
    b.write(CONFIG, 0x3C, b"\x05")
    b.write(MSIX_BAR, 16 * 2 + 8, struct.pack("<I", 0x4999))
    paths = tmp_path / "a.vms", tmp_path / "b.vms"
    for path, dev in zip(paths, (a, b), strict=True):
        path.write_bytes(saved(dev, qemu=True))
    return paths


def test_two_saved_device_states_differ_field_by_field(
    two_states: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_states
    status, out = _diffed(capsys, str(a), str(b))
    assert status == 1
    lines = out.splitlines()
    assert lines[:3] == [f"A: {a}", f"B: {b}", "saved device: 0000:00:05.0 -> 0000:00:06.0"]
    shown = [line.split("  [at ")[0] for line in lines[3:-1]]
    assert shown == [
        "vfio-pci-config: config[0x3c]: 0b -> 05",
        "vfio-pci-config: interrupt_line: 0xb -> 0x5",
        "vfio-pci-config: vfio-pci-config/msix-table.table[2].data: 0x4022 -> 0x4999",
        "VFIOPCIDevice: pdev[0].config[1][0x3c]: 0b -> 05",  # QEMU's copy of the config
        "VFIOPCIDevice: pdev[1].msix[0x28:0x2a]: 22 40 -> 99 49",  # vector 2's data, LE
    ]
    assert lines[-1] == "6 differences"  # the device named, and 5 fields


def test_the_offsets_of_a_diff_are_where_the_bytes_are(
    two_states: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--json: each difference's offsets hold its old bytes in A and its new ones in B."""
    a, b = two_states
    status, out = _diffed(capsys, str(a), str(b), "--json")
    doc: dict[str, Any] = json.loads(out)
    assert (status, doc["compared"], doc["same"]) == (1, "streams", False)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    fields = [d for d in doc["differences"] if d["where"] != "saved device"]
    assert len(fields) == 5
    for d in fields:
        old, new = d["old"], d["new"]
        if old.startswith("0x"):  # a number: the big-endian field of the description
            size = (int(new, 16).bit_length() + 7) // 8 if "data" not in d["path"] else 4
            at_a, at_b = d["offset_a"], d["offset_b"]
            assert int.from_bytes(data_a[at_a : at_a + size], "big") == int(old, 16), d
            assert int.from_bytes(data_b[at_b : at_b + size], "big") == int(new, 16), d
        else:  # bytes
            size = len(bytes.fromhex(old))
            assert data_a[d["offset_a"] : d["offset_a"] + size] == bytes.fromhex(old), d
            assert data_b[d["offset_b"] : d["offset_b"] + size] == bytes.fromhex(new), d


def test_one_device_saved_twice_is_compared_under_its_own_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = programmed("0000:00:05.0")
    before = tmp_path / "before.vms"
    before.write_bytes(saved(dev))
    same = tmp_path / "same.vms"
    same.write_bytes(saved(dev))
    assert _diffed(capsys, str(before), str(same)) == (0, f"A: {before}\nB: {same}\nthe same\n")
    dev.write(CONFIG, 0x04, struct.pack("<H", 0x0503))  # bus master off
    after = tmp_path / "after.vms"
    after.write_bytes(saved(dev))
    status, out = _diffed(capsys, str(before), str(after))
    assert status == 1
    assert [line.split("  [at ")[0] for line in out.splitlines()[2:-1]] == [
        "0000:00:05.0/vfio-pci-config: config[0x4]: 07 -> 03",
        "0000:00:05.0/vfio-pci-config: command: 0x507 -> 0x503",
    ]


def _fields(dump: dict[str, Any], device: str) -> list[str]:
    return [f["field"] for f in dump[device]["Description"]["Fields"]]


def test_two_qemu_dumps_differ_by_device_and_field(capsys: pytest.CaptureFixture[str]) -> None:
    """QEMU 7.2's and 10.0's -dump-vmstate of pc-i440fx: the device types one has and the
    other lacks, and e1000e's fields that 10.0 dropped, as the dumps list them."""
    status, out = _diffed(capsys, str(DUMP_7_2), str(DUMP_10_0), "--json")
    assert status == 1
    found = json.loads(out)["differences"]
    old, new = json.loads(DUMP_7_2.read_text()), json.loads(DUMP_10_0.read_text())
    devices = {k for k in {*old, *new} if isinstance((old | new)[k], dict)}
    removed = {d["where"] for d in found if d["change"] == "removed" and not d["path"]}
    added = {d["where"] for d in found if d["change"] == "added" and not d["path"]}
    assert removed == {k for k in devices if k not in new} and len(removed) == 11
    assert added == {k for k in devices if k not in old} and len(added) == 22
    gone = {d["path"] for d in found if d["where"] == "e1000e" and d["change"] == "removed"}
    dropped = set(_fields(old, "e1000e")) - set(_fields(new, "e1000e"))
    assert gone == dropped and "core.itr_intr_pending" in gone
