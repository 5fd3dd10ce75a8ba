"""QEMU's vfio sections in a migration stream (vmstate.qemu_vfio), without a guest.

The payload bytes here are what QEMU 10.0 wrote for an mtty in the test guest
(tests/vfio/test_qemu_mtty.py migrates one on every run and checks the real stream
the same ways); the section framing around them is QEMU's, rebuilt by hand.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import attrs
import pytest

from vmstate import pci_vfio, qemu_vfio, registry, stream, vfio_section
from vmstate.cli import main
from vmstate.device_regions import RegionInfo
from vmstate.device_save import save
from vmstate.errors import DecodeError, TruncatedError
from vmstate.saved_file import read_file
from vmstate.testing.migratable import MigratablePci
from vmstate.testing.pci import EmulatedPciBuilder
from vmstate.vfio_section import (
    DEV_CONFIG_STATE,
    DEV_DATA_STATE,
    DEV_SETUP_STATE,
    END_OF_STATE,
)

IDSTR = "0000:00:04.0/vfio"
FORMAT = "mtty-migration-data"
# QEMU 10.0's bytes for an mtty whose UART registers program_source set
# (tests/vfio/test_mtty_migration.py): its PRE_COPY header, its STOP_COPY ports and
# the start of its config space (the rest of the 4096 bytes QEMU saves is zero).
HEADER = bytes.fromhex("4e2c3e8c89099d7e01000000000000000200000000000000")
PORTS = bytes.fromhex(
    "0000001b030000a5766d0000000000000000000000000000020002000000000007100100"
    "000000830000005a000000000000000000000000000000000000000100000c0000100000"
)
CONFIG = bytes.fromhex(
    "4843533200000002100200070000000001000000010000000000000000000000000000000000"
    "0000000000004843533200000000000000000000000000010000230000802300000023000000"
    "23000000000000000000000000000000000000005043492053657269616c2f55415254"
)
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")
END = _BE64.pack(END_OF_STATE)


def data_group(*chunks: bytes) -> bytes:
    framed = b"".join(_BE64.pack(DEV_DATA_STATE) + _BE64.pack(len(c)) + c for c in chunks)
    return framed + END


def config_group(config: bytes = CONFIG, size: int = 4096) -> bytes:
    state = _BE32.pack(2) + config.ljust(size, b"\0") + bytes(16)  # version_id, irq_state
    return _BE64.pack(DEV_CONFIG_STATE) + state + END


def qemu_stream(
    precopy: bytes = HEADER, stop_copy: bytes = PORTS, config: bytes = config_group()
) -> bytes:
    """A stream framed as QEMU frames a VFIO device's migration: START (setup), a PART
    per pre-copy round (the second read nothing), END (stop-copy data), then FULL with
    the config state, which alone vmdesc lists, as a buffer."""
    name = IDSTR.encode()
    section_id = 3

    def opening(kind: int) -> bytes:
        return (
            bytes([kind])
            + _BE32.pack(section_id)
            + bytes([len(name)])
            + name
            + bytes(4)
            + _BE32.pack(1)
        )

    def footer() -> bytes:
        return b"\x7e" + _BE32.pack(section_id)

    def part(kind: int, payload: bytes) -> bytes:
        return bytes([kind]) + _BE32.pack(section_id) + payload + footer()

    body = [
        _BE32.pack(stream.MAGIC) + _BE32.pack(stream.VERSION),
        opening(stream.SECTION_START) + _BE64.pack(DEV_SETUP_STATE) + END + footer(),
        part(stream.SECTION_PART, data_group(precopy)),
        part(stream.SECTION_PART, END),
        part(stream.SECTION_END, data_group(stop_copy)),
        opening(stream.SECTION_FULL) + config + footer(),
        bytes([stream.EOF]),
    ]
    field = {"name": "data", "type": "buffer", "size": len(config)}
    device = {"name": IDSTR, "instance_id": 0, "size": len(config), "fields": [field]}
    vmdesc = json.dumps({"page_size": 4096, "devices": [device]}).encode()
    return b"".join(body) + bytes([stream.VMDESCRIPTION]) + _BE32.pack(len(vmdesc)) + vmdesc


def gathered(data: bytes, fmt: str | None = FORMAT) -> qemu_vfio.VfioSections:
    parsed = stream.parse(data, raw=vfio_section.raw_sections)
    (device,) = qemu_vfio.gather(parsed, data, registry.get(fmt) if fmt else None)
    return device


def test_the_device_data_is_joined_across_qemus_sections() -> None:
    data = qemu_stream()
    device = gathered(data)
    assert device.layout() == "START PART PART END FULL"
    assert [size for _, size in device.chunks] == [24, 72]
    assert [p.groups for p in device.payloads] == [
        ((DEV_SETUP_STATE, 0),),
        ((DEV_DATA_STATE, 1),),
        ((END_OF_STATE, 0),),  # QEMU's pre-copy round that read nothing
        ((DEV_DATA_STATE, 1),),
        ((DEV_CONFIG_STATE, 0),),
    ]
    assert device.data is not None
    assert device.data["nr_ports"] == 2
    assert device.data["ports"][0]["uart_reg"] == [0, 0, 0, 0x1B, 0x03, 0, 0, 0xA5]
    assert device.data["ports"][1]["divisor"] == 12
    assert device.config is not None
    assert device.config["pdev[0]"]["config[1]"][:111] == CONFIG
    assert gathered(data, None).data is None


def test_the_config_layout_is_the_one_end_of_state_closes() -> None:
    """QEMU saves 4096 config bytes unless the config region is 256 bytes; mtty's
    (0xff) and a conventional device's both decode, whatever the capabilities say."""
    for size, field in ((4096, "config[1]"), (256, "config[0]")):
        device = gathered(qemu_stream(config=config_group(size=size)))
        assert device.config is not None and len(device.config["pdev[0]"][field]) == size
    broken = config_group()[:-8] + _BE64.pack(DEV_SETUP_STATE)
    with pytest.raises(DecodeError) as info:
        gathered(qemu_stream(config=broken))
    assert "not closed by END_OF_STATE" in info.value.message
    state = gathered(qemu_stream()).sections[-1].start + 8
    short, long = state + 4 + 256 + 16, state + 4 + 4096 + 16  # the first guess: no PCIe cap
    assert info.value.offset == short
    assert info.value.found == f"{bytes(8).hex()} at {short:#x}, ffffffffef100003 at {long:#x}"
    with pytest.raises(TruncatedError) as cut:  # neither layout fits: the first one's error
        vfio_section.walk_vfio(config_group()[:280], 0)
    assert (cut.value.offset, cut.value.expected) == (8 + 4 + 256, "16 bytes of pci irq state")


def test_every_vfio_section_encodes_back_to_its_bytes() -> None:
    data = qemu_stream()
    device = gathered(data)
    assert qemu_vfio.encode(device, data) == [data[s.start : s.end] for s in device.sections]
    assert qemu_vfio.verify((device,), data) == (5, ())
    assert qemu_vfio.verify((gathered(data, None),), data) == (5, ())
    assert device.data is not None
    ports = [{**device.data["ports"][0], "uart_reg": [0] * 8}, device.data["ports"][1]]
    changed = attrs.evolve(device, data={**device.data, "ports": ports})
    _, mismatches = qemu_vfio.verify((changed,), data)
    (mismatch,) = mismatches
    assert mismatch.section.type == stream.SECTION_END
    assert mismatch.offset == device.chunks[1][0] + 3  # port 0's LCR, the first set register
    assert (mismatch.expected[:1], mismatch.found[:1]) == (b"\x1b", b"\x00")


def test_analyze_summarises_decodes_and_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "qemu.mig"
    path.write_bytes(qemu_stream())
    assert main(["analyze", str(path), "--device-data", FORMAT]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"  vfio  {IDSTR}  sections START PART PART END FULL: config state VFIOPCIDevice, "
        f"device data 96 bytes in 2 chunks as {FORMAT}"
    )
    assert main(["analyze", str(path), "--device-data", FORMAT, "--format", "json"]) == 0
    (decoded,) = json.loads(capsys.readouterr().out)["vfio"]
    assert decoded["idstr"] == IDSTR
    assert decoded["sections"] == [3, 3, 3, 3, 3]
    assert decoded["device_data"]["state"]["ports"][0]["fifo"].startswith("766d")
    assert decoded["config"]["state"]["pdev[0]"]["version_id"] == 2
    assert main(["analyze", str(path), "--verify-roundtrip"]) == 0
    assert (
        capsys.readouterr().out.strip() == "verified 5 device sections: 5 byte-identical, 0 differ"
    )
    assert main(["analyze", str(path), "--format", "qemu"]) == 0
    assert capsys.readouterr().out == "{}\n"  # QEMU's analyzer has no vfio sections


def test_encode_writes_vfio_sections_back_and_refuses_an_edited_view(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """vfio sections travel as bytes; the decoded view beside them is checked, not used."""
    path = tmp_path / "qemu.mig"
    path.write_bytes(qemu_stream())
    assert main(["analyze", str(path), "--device-data", FORMAT, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    out = tmp_path / "again.mig"
    assert main(["encode", str(tmp_path / "doc.json"), "-o", str(out)]) == 0
    assert out.read_bytes() == path.read_bytes()
    doc["vfio"][0]["device_data"]["state"]["ports"][0]["head"] ^= 1
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["encode", str(tmp_path / "doc.json"), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "the document's vfio view is not what its vfio sections hold" in err
    assert out.read_bytes() == path.read_bytes()  # the refused encode left it as it was


def test_check_stream_checks_device_data_against_its_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.mig"
    good.write_bytes(qemu_stream())
    bad = tmp_path / "bad.mig"
    bad.write_bytes(qemu_stream(precopy=bytes([HEADER[0] ^ 0xFF]) + HEADER[1:]))
    magic_at = gathered(qemu_stream(), None).chunks[0][0]
    args = ["check", "--dst", str(good), "--device-data", FORMAT, "--stream"]
    assert main([*args, str(good)]) == 0
    assert capsys.readouterr().out == "compatible: 0 errors, 0 warnings\n"
    assert main([*args, str(bad)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"error: {IDSTR}: {FORMAT}.magic_ok: Input validation failed: {FORMAT}/magic_ok at offset "
        f"{magic_at + 8:#x} (expected magic == 0x7e9d09898c3e2c4e to hold, found false) "
        "[device-data]",
        "NOT compatible: 1 error, 0 warnings",
    ]
    assert main(["check", "--stream", str(bad), "--dst", str(good)]) == 0
    assert "its device data is not checked" in capsys.readouterr().out
    assert main(["check", "--src", str(good), "--dst", str(good), "--device-data", FORMAT]) == 2
    assert "--device-data goes with --stream" in capsys.readouterr().err


class ShortConfigMtty(MigratablePci):
    """mtty's shape: a conventional function whose config region is 0xff bytes, with
    migration v2 (an emulated driver's data stands in for mtty's)."""

    def __init__(self, name: str, region_size: int) -> None:
        self.region_size = region_size
        built = (
            EmulatedPciBuilder()
            .header(0x4348, 0x3253, 0x070002, revision=0x10, interrupt_pin=1)
            .bar(0, 8, io=True)
            .bar(1, 8, io=True)
            .build(name)
        )
        super().__init__(name, built, size=72)

    def region(self, index: int) -> RegionInfo:
        info = super().region(index)
        return attrs.evolve(info, size=self.region_size) if index == 7 else info

    def regions(self) -> tuple[RegionInfo, ...]:
        return tuple(self.region(r.index) for r in super().regions())


@pytest.mark.parametrize(("region_size", "saved"), [(0xFF, 4096), (256, 256)])
def test_save_writes_as_many_config_bytes_as_qemu_would(
    tmp_path: Path, region_size: int, saved: int
) -> None:
    """vmstate save follows QEMU's rule (pci_vfio.qemu_express), and reading the
    file back finds the layout without being told."""
    device = ShortConfigMtty("mtty-like", region_size)
    assert pci_vfio.qemu_express(region_size) == (saved == 4096)
    path = tmp_path / "mtty.vms"
    save(device, path)
    found = read_file(path.read_bytes())
    assert found.data is not None and found.data.payload.config is not None
    start, end = found.data.payload.config
    assert end - start == 4 + saved + 16
    state = found.qemu_config
    assert state is not None
    config = state["pdev[0]"]["config[1]" if saved == 4096 else "config[0]"]
    assert config[:4] == bytes.fromhex("48435332") and not any(config[256:])
