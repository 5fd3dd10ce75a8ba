"""Names from pci.ids, composed as lspci composes them.

lspci reads any pci.ids with ``-i FILE``: a small database written here, with one case
for each of lspci's naming rules, and functions built to hit them.  The first two
lines lspci prints for each (function title, subsystem) must be ours.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import IN_CI, require_tool
from test_pci_lspci_text import dump_text

from vmstate.pci.decode import decode_config
from vmstate.pci.ids import PciIds, parse_pci_ids, pci_ids
from vmstate.pci.render import render_text

IDS = """\
# vendors, devices, subsystems
1af4  Red Hat, Inc.
\t1041  Virtio 1.0 network device
\t\t1af4 1100  QEMU Virtual Machine
\t1050  Virtio 1.0 GPU
8086  Intel Corporation
\t10d3  82574L Gigabit Network Connection\t
\t\t8086 a01f  Gigabit CT Desktop Adapter
S 8086
\t7777  Intel's subsystem for any device
Z 1234  a block lspci does not know
\tabcd  skipped
# classes
C 01  Mass storage controller
\t01  IDE interface
C 02  Network controller
\t00  Ethernet controller
C 0c  Serial bus controller
\t03  USB controller
\t\t30  XHCI
"""

#: vendor, device, subsystem vendor, subsystem device, class, prog-if, revision
CASES = [
    (0x1AF4, 0x1041, 0x1AF4, 0x1100, 0x0200, 0x00, 0x01),  # all named
    (0x1AF4, 0x1050, 0x1AF4, 0x1050, 0x0280, 0x00, 0x00),  # subsystem = device; class only
    (0x8086, 0x10D3, 0x8086, 0xA01F, 0x0C03, 0x30, 0x00),  # prog-if named
    (0x8086, 0x1234, 0x8086, 0x7777, 0x0C03, 0x20, 0x00),  # unknown device; generic subsystem
    (0x8086, 0x10D3, 0x1AF4, 0x9999, 0x0101, 0x8A, 0x00),  # IDE modes; unknown subsystem
    (0x1234, 0xABCD, 0x4321, 0x0001, 0x1234, 0x05, 0x10),  # nothing named
    (0x1AF4, 0x1041, 0x0000, 0x0000, 0x0101, 0x70, 0x00),  # no subsystem; IDE bits not modes
]


def header(vendor: int, device: int, sv: int, sd: int, cls: int, prog_if: int, rev: int) -> bytes:
    data = bytearray(64)
    data[0:4] = (vendor | device << 16).to_bytes(4, "little")
    data[8], data[9], data[10:12] = rev, prog_if, cls.to_bytes(2, "little")
    data[0x2C:0x30] = (sv | sd << 16).to_bytes(4, "little")
    return bytes(data)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]:04x}:{c[1]:04x}-{c[4]:04x}")
def test_names_are_lspcis(case: tuple[int, ...], tmp_path: Path) -> None:
    ids_file = tmp_path / "pci.ids"
    ids_file.write_text(IDS)
    data = header(*case)
    dump = tmp_path / "dump.txt"
    dump.write_text(dump_text(data, "00:00.0"))
    lspci = subprocess.run(
        [require_tool("lspci"), "-F", str(dump), "-i", str(ids_file), "-vvv"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    ours = render_text(decode_config(data), None, parse_pci_ids(IDS)).split("\n")
    assert ours[0] == lspci[0].removeprefix("00:00.0 ")
    assert [line for line in ours[1:2] if "Subsystem" in line] == [
        line for line in lspci[1:2] if "Subsystem" in line
    ]


def test_parsing_keeps_what_lspci_keeps() -> None:
    ids = parse_pci_ids(IDS)
    assert ids.devices[(0x8086, 0x10D3)] == "82574L Gigabit Network Connection"  # trailing tab
    assert ids.generic_subsystems == {(0x8086, 0x7777): "Intel's subsystem for any device"}
    assert (0x1234, 0xABCD) not in ids.devices and 0x1234 not in ids.vendors
    assert ids.prog_ifs == {(0x0C, 0x03, 0x30): "XHCI"}


def test_without_a_database_numbers_stand_in() -> None:
    assert PciIds().device_name(0x1AF4, 0x1041) == "Device 1af4:1041"
    assert PciIds().class_name(0x02, 0x00) == "Class 0200"


def test_the_systems_database_is_read() -> None:
    """CI installs Debian's pci.ids; lspci and devices use the same file."""
    names = pci_ids()
    if not names.vendors:
        (pytest.fail if IN_CI else pytest.skip)("no pci.ids on this system (.ci/run installs it)")
    assert names.vendors[0x8086] == "Intel Corporation"
    assert names.class_name(0x02, 0x00) == "Ethernet controller"
