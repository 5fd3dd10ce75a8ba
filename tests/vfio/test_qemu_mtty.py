"""QEMU's own VFIO migration of an mtty, inside the test guest: QEMU's bytes and its
verdicts are the ground truth for vmstate's vfio framing and VFIOPCIDevice state.

QEMU 10.0 (VFIO migration v2; 7.2 predates it) runs in the guest as the host prepared
it (tests/vm/guest_qemu.py): a paused q35 machine whose firmware is a page of ``hlt``,
so nothing of an inner guest ever runs, with one mtty attached as vfio-pci.  mtty has
no dirty tracking: ``enable-migration=on`` turns QEMU's blocker into a warning and
``x-device-dirty-page-tracking=off`` keeps QEMU from asking for a DMA log it cannot
have.  The inner machine has no vIOMMU and one VFIO device, as QEMU requires.

The UART registers are set through the device before QEMU opens it.  QEMU's realize
and system reset leave them alone, as the stream itself shows: mtty does not offer
VFIO_DEVICE_FLAGS_RESET, so QEMU finds no way to reset it ("Cannot reset device ...,
no available reset mechanism"), and its VFIO_DEVICE_RESET would reset only the
migration state anyway.  A destination QEMU hands the data to the device when its
paused machine first runs (RESUMING -> STOP happens then), so loads end with ``cont``.
QEMU leaves the devices STOPped; tests reset them to RUNNING, which keeps registers.
"""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from conftest import IN_CI
from peers.apt import PeerError
from peers.qemu import Qemu
from peers.qmp import QemuProcess
from vm.guest_qemu import from_env

from vfio.test_mtty_migration import (
    DESTINATION,
    FCR,
    FCR_ENABLE_AND_CLEAR,
    IER,
    LCR,
    LCR_DLAB,
    MCR,
    MDEVS,
    RX_TX,
    SCR,
    SOURCE,
    STREAM_SIZE,
    _available,
    assert_programmed,
    program_source,
    set_uart,
    uart,
)
from vmstate import qemu_vfio, registry, stream, vfio_section
from vmstate.cli import main
from vmstate.device_regions import VfioDevice
from vmstate.migration import DeviceStateMachine
from vmstate.vfio_section import DEV_CONFIG_STATE, DEV_DATA_STATE, DEV_SETUP_STATE, END_OF_STATE

pytestmark = pytest.mark.vfio

#: QEMU 10.0's q35 as it comes, its AHCI controller included (whose vmdesc names a
#: field twice: vmstate reads such pieced arrays)
MACHINE = "q35"
SLOT = "04.0"
IDSTR = f"0000:00:{SLOT}/vfio"
FORMAT = "mtty-migration-data"
TCG = "tcg,tb-size=16"  # a small translation cache: the guest has 1 GiB in all
#: a paused machine with nothing but the mtty: no disks, no network, no display
INNER_MACHINE = ("-M", MACHINE, "-accel", TCG, "-m", "16", "-nodefaults", "-display", "none", "-S")
#: the reset vector's page full of hlt: the inner machine stops at its first instruction
HALT_FIRMWARE = b"\xf4" * 0x10000
PCI_COMMAND = 0x04
#: where the config space starts in a DEV_CONFIG_STATE group (tag, PCIDevice version_id)
CONFIG_AT = 8 + 4
_BE64 = struct.Struct(">Q")
END = _BE64.pack(END_OF_STATE)


@pytest.fixture(scope="module")
def guest_qemu() -> Qemu:
    """QEMU 10.0 as the host prepared it (its name is what tells the host to)."""
    for uuid in (SOURCE, DESTINATION):
        _available(MDEVS / uuid, "the test guest creates two mtty mdevs")
    try:
        return from_env()
    except PeerError as e:
        if IN_CI:
            pytest.fail(str(e), pytrace=False)
        pytest.skip(str(e))


@contextlib.contextmanager
def opened(uuid: str) -> Iterator[VfioDevice]:
    """The mtty, reset to RUNNING (its registers stay)."""
    with VfioDevice.open(uuid) as device:
        DeviceStateMachine(device).reset()
        yield device


def reset(*uuids: str) -> None:
    for uuid in uuids:
        with opened(uuid):
            pass


def mark_destination() -> None:
    """A value in the destination's scratch register that any load replaces."""
    with opened(DESTINATION) as destination:
        set_uart(destination, 0, FCR, FCR_ENABLE_AND_CLEAR)
        set_uart(destination, 0, SCR, 0x33)


def program_other(device: VfioDevice) -> None:
    """Registers unlike program_source's, and two other bytes in port 0's FIFO."""
    set_uart(device, 0, FCR, FCR_ENABLE_AND_CLEAR)
    set_uart(device, 0, LCR, 0x03)
    set_uart(device, 0, SCR, 0x3C)
    set_uart(device, 0, MCR, 0x0B)
    set_uart(device, 0, RX_TX, ord("q"))
    set_uart(device, 0, RX_TX, ord("e"))
    set_uart(device, 1, LCR, LCR_DLAB | 0x1F)
    set_uart(device, 1, RX_TX, 0x60)  # divisor 0x0160
    set_uart(device, 1, IER, 0x01)
    set_uart(device, 1, SCR, 0xC3)


def assert_other(device: VfioDevice) -> None:
    assert (uart(device, 0, LCR), uart(device, 0, SCR), uart(device, 0, MCR)) == (0x03, 0x3C, 0x0B)
    assert (uart(device, 1, LCR), uart(device, 1, SCR)) == (LCR_DLAB | 0x1F, 0xC3)
    assert (uart(device, 1, RX_TX), uart(device, 1, IER)) == (0x60, 0x01)
    assert bytes([uart(device, 0, RX_TX), uart(device, 0, RX_TX)]) == b"qe"


@attrs.frozen
class Machine:
    """How to start the inner machine with one of the guest's mtty devices."""

    qemu: Qemu
    firmware: Path

    def argv(self, uuid: str, *extra: str) -> list[str]:
        device = (
            f"vfio-pci,sysfsdev={MDEVS / uuid},id=mtty,addr={SLOT},"
            "enable-migration=on,x-device-dirty-page-tracking=off"
        )
        firmware = ("-bios", str(self.firmware))
        return self.qemu.command(*INNER_MACHINE, *firmware, "-device", device, *extra)

    def save(self, uuid: str, out: Path, work: Path) -> dict[str, object]:
        """QEMU migrates the machine with mtty *uuid* into *out*; query-migrate at the end."""
        with QemuProcess(self.argv(uuid), work) as vm:
            vm.command("migrate", {"uri": f"file:{out}"})
            info: dict[str, object] = vm.migration_status()
            assert info["status"] == "completed", vm.log()
        return info

    def load(self, uuid: str, stream_file: Path, work: Path) -> tuple[dict[str, object], str]:
        """QEMU with mtty *uuid* loads *stream_file*, then its machine runs for a moment
        (the device takes its data on leaving RESUMING); query-migrate and QEMU's log."""
        work.mkdir()
        with QemuProcess(self.argv(uuid, "-incoming", "defer"), work) as vm:
            vm.command("migrate-incoming", {"uri": f"file:{stream_file}", "exit-on-error": False})
            info: dict[str, object] = vm.migration_status()
            if info["status"] == "completed":
                vm.command("cont")
                vm.command("stop")
            log = (work / "qemu.log").read_text(errors="replace")
        return info, log


@attrs.frozen
class Saved:
    """The first mtty's state, with its registers set, as QEMU and as vmstate saved it."""

    qemu_stream: Path
    vmstate_file: Path
    machine: Machine


@pytest.fixture(scope="module")
def saved(guest_qemu: Qemu, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saved]:
    """QEMU migrates the first mtty to a file; vmstate then saves the very same state.
    Both mtty devices are left RUNNING for the tests after these."""
    work = tmp_path_factory.mktemp("qemu-mtty")
    firmware = work / "halt.bin"
    firmware.write_bytes(HALT_FIRMWARE)
    machine = Machine(guest_qemu, firmware)
    with opened(SOURCE) as source:
        program_source(source)
    qemu_stream = work / "qemu.mig"
    info = machine.save(SOURCE, qemu_stream, work)
    assert info["vfio"] == {"transferred": STREAM_SIZE}
    reset(SOURCE)  # migration left it in STOP; vmstate save starts from RUNNING
    vmstate_file = work / "vmstate.vms"
    assert main(["save", SOURCE, "-o", str(vmstate_file)]) == 0
    yield Saved(qemu_stream, vmstate_file, machine)
    reset(SOURCE, DESTINATION)


def device_sections(path: Path) -> qemu_vfio.VfioSections:
    """The one VFIO device in a stream, its data decoded as mtty's."""
    data = path.read_bytes()
    parsed = stream.parse(data, raw=vfio_section.raw_sections)
    (device,) = qemu_vfio.gather(parsed, data, registry.get(FORMAT))
    return device


def payloads(path: Path, device: qemu_vfio.VfioSections) -> list[bytes]:
    data = path.read_bytes()
    return [data[s.start : s.end] for s in device.sections]


def test_analyze_decodes_qemus_mtty_sections_field_by_field(
    saved: Saved, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config state and device data QEMU wrote, with the registers that were set."""
    path = str(saved.qemu_stream)
    assert main(["analyze", path, "--device-data", FORMAT]) == 0
    summary = capsys.readouterr().out
    assert f"  vfio  {IDSTR}  sections START PART" in summary
    assert (
        f"END FULL: config state VFIOPCIDevice, device data {STREAM_SIZE} bytes in 2 "
        f"chunks as {FORMAT}"
    ) in summary
    assert main(["analyze", path, "--device-data", FORMAT, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (decoded,) = (device for device in doc["vfio"] if device["idstr"] == IDSTR)
    assert sum(i.get("idstr") == IDSTR for i in doc["items"]) == len(decoded["sections"])
    config = decoded["config"]["state"]["pdev[0]"]
    assert config["version_id"] == 2
    config_space = bytes.fromhex(config["config[1]"])  # 4096 bytes: see qemu_express
    assert len(config_space) == 4096 and config_space[:4] == bytes.fromhex("48435332")
    data = decoded["device_data"]
    assert (data["size"], data["chunks"], data["format"]) == (STREAM_SIZE, 2, FORMAT)
    header = {k: data["state"][k] for k in ("magic", "major_ver", "nr_ports", "flags")}
    assert header == {"magic": 0x7E9D09898C3E2C4E, "major_ver": 1, "nr_ports": 2, "flags": 0}
    port0, port1 = data["state"]["ports"]
    # program_source: LCR 0x1b, MCR 0x03, scratch 0xa5; "vm" in the FIFO, enabled and cleared
    assert port0["uart_reg"] == [0, 0, 0, 0x1B, 0x03, 0, 0, 0xA5]
    assert (port0["fifo"][:4], port0["count"], port0["fcr"]) == ("766d", 2, 0x07)
    # port 1: DLAB set on divisor 12, scratch 0x5a
    assert port1["uart_reg"] == [0, 0, 0, LCR_DLAB | 0x03, 0, 0, 0, 0x5A]
    assert (port1["dlab"], port1["divisor"]) == (True, 12)


def test_verify_roundtrip_reproduces_qemus_stream_byte_for_byte(
    saved: Saved, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every section, the vfio ones encoded again from the decoded config state and
    mtty data (and from the bytes as read, without a format)."""
    data = saved.qemu_stream.read_bytes()
    parsed = stream.parse(data, raw=vfio_section.raw_sections)
    n_devices = len(parsed.device_sections())
    n_vfio = sum(qemu_vfio.is_vfio(s) for s in parsed.sections)
    assert n_vfio >= 4  # START, PART..., END, FULL
    for extra in (["--device-data", FORMAT], []):
        assert main(["analyze", str(saved.qemu_stream), "--verify-roundtrip", *extra]) == 0
        n = n_devices + n_vfio
        assert capsys.readouterr().out.strip() == (
            f"verified {n} device sections: {n} byte-identical, 0 differ"
        )
    device = device_sections(saved.qemu_stream)
    tampered = attrs.evolve(device, data={**device.data, "flags": 1})  # type: ignore[dict-item]
    _, mismatches = qemu_vfio.verify((tampered,), data)
    assert [m.offset for m in mismatches] == [device.chunks[0][0] + 20]  # the flags field


def test_vmstate_save_writes_qemus_vfio_framing_and_device_data(saved: Saved) -> None:
    """vmstate save of the same state, group by group against QEMU's sections.

    The chunks (tag, size, bytes) and the SETUP group are QEMU's exactly.  QEMU spreads
    the groups over the sections of a live migration and closes each with END_OF_STATE
    (a pre-copy round that read nothing is END_OF_STATE alone); vmstate's file holds
    them in one section, its data in one group, which QEMU's loader reads the same
    way (see test_qemu_loads_device_data_that_vmstate_saved).  In the config state
    only the command register differs: QEMU saves its emulation of it, which system
    reset cleared and no guest set, vmstate what mtty reports, I/O enabled (mtty
    ignores writes to it)."""
    qemu = device_sections(saved.qemu_stream)
    ours = device_sections(saved.vmstate_file)
    assert qemu.layout().startswith("START PART") and qemu.layout().endswith("END FULL")
    assert ours.layout() == "FULL"
    assert [size for _, size in qemu.chunks] == [size for _, size in ours.chunks] == [24, 72]
    qemu_bytes = saved.qemu_stream.read_bytes()
    header, ports = (qemu_bytes[at : at + size] for at, size in qemu.chunks)
    precopy = _BE64.pack(DEV_DATA_STATE) + _BE64.pack(24) + header
    stop_copy = _BE64.pack(DEV_DATA_STATE) + _BE64.pack(72) + ports
    start, *parts, end, full = payloads(saved.qemu_stream, qemu)
    assert start == _BE64.pack(DEV_SETUP_STATE) + END
    assert [p for p in parts if p != END] == [precopy + END]
    assert end == stop_copy + END
    (ours_full,) = payloads(saved.vmstate_file, ours)
    config_group = len(full)
    assert ours_full[config_group:] == _BE64.pack(DEV_SETUP_STATE) + END + precopy + stop_copy + END
    ours_config = ours_full[:config_group]
    assert ours_config[:8] == full[:8] == _BE64.pack(DEV_CONFIG_STATE)
    assert ours_config[-8:] == full[-8:] == END
    assert len(full) == 8 + 4 + 4096 + 16 + 8  # no MSI-X; config padded as QEMU pads it
    differ = [
        i - CONFIG_AT for i, (a, b) in enumerate(zip(full, ours_config, strict=True)) if a != b
    ]
    assert differ == [PCI_COMMAND]
    assert (full[CONFIG_AT + PCI_COMMAND], ours_config[CONFIG_AT + PCI_COMMAND]) == (0x00, 0x01)
    assert qemu.data == ours.data  # and so the registers


def test_qemu_loads_its_own_stream_into_the_second_mtty(saved: Saved, tmp_path: Path) -> None:
    mark_destination()
    info, log = saved.machine.load(DESTINATION, saved.qemu_stream, tmp_path / "load")
    assert info["status"] == "completed", log
    with opened(DESTINATION) as destination:
        assert_programmed(destination)


def splice(qemu_stream: bytes, vmstate_file: bytes) -> bytes:
    """QEMU's stream with vmstate's device data group in place of QEMU's: the END
    section gets vmstate's chunks and END_OF_STATE verbatim, each pre-copy PART is left
    END_OF_STATE alone (as QEMU writes a round that read nothing)."""
    qemu = qemu_vfio.gather(stream.parse(qemu_stream, raw=vfio_section.raw_sections), qemu_stream)
    ours = qemu_vfio.gather(stream.parse(vmstate_file, raw=vfio_section.raw_sections), vmstate_file)
    (payload,) = ours[0].payloads
    assert payload.groups == ((DEV_CONFIG_STATE, 0), (DEV_SETUP_STATE, 0), (DEV_DATA_STATE, 2))
    data_group = vmstate_file[payload.chunks[0][0] - 16 : payload.end]
    out = bytearray(qemu_stream)
    for section in reversed(qemu[0].sections):
        kinds = {stream.SECTION_PART: END, stream.SECTION_END: data_group}
        if section.type in kinds:
            out[section.start : section.end] = kinds[section.type]
    return bytes(out)


def test_qemu_loads_device_data_that_vmstate_saved(
    saved: Saved, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Other registers in the first mtty, saved by vmstate, spliced into QEMU's stream:
    check finds it loadable, QEMU takes it and the second mtty gets those registers."""
    with opened(SOURCE) as source:
        program_other(source)
    ours = tmp_path / "other.vms"
    assert main(["save", SOURCE, "-o", str(ours)]) == 0
    spliced = tmp_path / "spliced.mig"
    spliced.write_bytes(splice(saved.qemu_stream.read_bytes(), ours.read_bytes()))
    dst = str(saved.qemu_stream)
    capsys.readouterr()
    assert main(["check", "--stream", str(spliced), "--dst", dst, "--device-data", FORMAT]) == 0
    assert "compatible: 0 errors, 0 warnings" in capsys.readouterr().out
    mark_destination()
    info, log = saved.machine.load(DESTINATION, spliced, tmp_path / "load")
    assert info["status"] == "completed", log
    with opened(DESTINATION) as destination:
        assert_other(destination)


def test_corrupt_device_data_is_refused_by_check_and_by_the_kernel_through_qemu(
    saved: Saved, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flipped byte in the magic of QEMU's pre-copy chunk, the framing intact:
    vmstate check names the field and offset; through QEMU, mtty refuses the write
    of the header (EFAULT), and the second mtty keeps its registers."""
    data = bytearray(saved.qemu_stream.read_bytes())
    device = device_sections(saved.qemu_stream)
    at = device.chunks[0][0]
    data[at] ^= 0xFF
    bad = tmp_path / "bad.mig"
    bad.write_bytes(bytes(data))
    capsys.readouterr()
    dst = str(saved.qemu_stream)
    assert main(["check", "--stream", str(bad), "--dst", dst, "--device-data", FORMAT]) == 1
    out = capsys.readouterr().out
    assert f"error: {IDSTR}: mtty-migration-data.magic_ok: Input validation failed" in out
    assert f"at offset {at + 8:#x} (expected magic == 0x7e9d09898c3e2c4e to hold" in out
    mark_destination()
    info, log = saved.machine.load(DESTINATION, bad, tmp_path / "load")
    assert info["status"] == "failed", log
    assert "Bad address" in f"{info.get('error-desc')}\n{log}"  # EFAULT: mtty's refusal
    with opened(DESTINATION) as destination:
        assert uart(destination, 0, SCR) == 0x33


def test_a_chunk_size_past_the_end_is_named_with_its_offset(
    saved: Saved, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """QEMU's stop-copy chunk claiming more bytes than the stream has: one line, exit 1."""
    data = bytearray(saved.qemu_stream.read_bytes())
    at, size = device_sections(saved.qemu_stream).chunks[-1]
    claimed = size + len(data)
    data[at - 8 : at] = _BE64.pack(claimed)
    bad = tmp_path / "long.mig"
    bad.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["analyze", str(bad), "--device-data", FORMAT]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device data chunk cut short" in err, err
    assert f"offset {at:#x}" in err and f"expected {claimed} bytes" in err, err
