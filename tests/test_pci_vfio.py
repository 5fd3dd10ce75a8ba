"""A PCI function's config state (vmstate.pci_vfio) saved and loaded into another, on
emulated devices (vmstate.testing.pci, with PCI write semantics) and, read-only, on
this host's real devices through sysfs."""

from __future__ import annotations

import io
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import IN_CI

from vmstate import pci_vfio, registry, stream
from vmstate.cli import main
from vmstate.device_load import load, plan_load
from vmstate.device_regions import Device
from vmstate.device_save import write_state
from vmstate.errors import DecodeError, IncompatibleError, TruncatedError, VMStateError
from vmstate.inputs import open_stream
from vmstate.pci.ids import pci_ids
from vmstate.pci_vfio import CONFIG, DESCRIPTION_NAME, KIND_MEM32, KIND_MEM64
from vmstate.saved_file import read_file
from vmstate.stream_writer import DeviceSection, write
from vmstate.testing.pci import EmulatedPciDevice, e1000e_like

QEMU = Path(__file__).parent / "data" / "qemu"
MSIX_BAR = 3


def programmed(name: str = "src") -> EmulatedPciDevice:
    """An e1000e-like device as firmware and a driver leave it: BARs, MSI-X, bus master."""
    dev = e1000e_like(name)
    for offset, value in (
        (0x10, 0xFEBC0000),
        (0x14, 0xFEBA0000),
        (0x18, 0xC001),
        (0x1C, 0xFEBD0000),
    ):
        dev.write(CONFIG, offset, struct.pack("<I", value))
    dev.write(CONFIG, 0x3C, b"\x0b")
    dev.write(CONFIG, 0xD2, struct.pack("<H", 0x0080))  # MSI control, not enabled
    dev.write(CONFIG, 0xD4, struct.pack("<IIH", 0xFEE01004, 0, 0x4041))
    for vector in range(5):
        entry = struct.pack("<IIII", 0xFEE00000 | vector << 12, 0, 0x4020 + vector, 0)
        dev.write(MSIX_BAR, 16 * vector, entry)
    dev.write(CONFIG, 0xA2, struct.pack("<H", 0x8004))  # MSI-X enabled
    dev.write(CONFIG, 0x04, struct.pack("<H", 0x0507))
    return dev


def saved(dev: Device, *, qemu: bool = False) -> bytes:
    """The file vmstate save writes for *dev*, in memory."""
    out = io.BytesIO()
    write_state(dev, out, qemu=qemu)
    return out.getvalue()


def refusals(dst: Device, data: bytes) -> list[DecodeError]:
    return [r.error for r in plan_load(dst, read_file(data)).refusals]


def snapshot_of(dev: EmulatedPciDevice) -> dict[int, bytes]:
    return {r.index: dev.read(r.index, 0, r.size) for r in dev.regions()}


def test_save_and_load_into_a_second_device() -> None:
    src, dst = programmed(), e1000e_like("dst")
    data = saved(src)
    load(dst, data)
    assert pci_vfio.read_state(dst) == pci_vfio.read_state(src)
    assert dst.read(CONFIG, 0, 4096) == src.read(CONFIG, 0, 4096)
    assert dst.read(MSIX_BAR, 0, 80) == src.read(MSIX_BAR, 0, 80)


def test_dry_run_writes_nothing() -> None:
    src, dst = programmed(), e1000e_like("dst")
    before = snapshot_of(dst)
    plan = load(dst, saved(src), dry_run=True)
    assert plan.saved.config.state["command"] == 0x0507
    assert snapshot_of(dst) == before


class Recording(EmulatedPciDevice):
    """An emulated device that logs every config write (offset, bytes)."""

    log: list[tuple[int, int, bytes]]

    def write(self, index: int, offset: int, data: bytes) -> None:
        self.log.append((index, offset, bytes(data)))
        super().write(index, offset, data)


def recording() -> Recording:
    base = e1000e_like("dst")
    dev = Recording(
        "dst",
        base.read(CONFIG, 0, 4096),
        base._wmask,
        base._w1cmask,
        {3: bytes(0x4000), 0: bytes(0x20000), 1: bytes(0x20000), 2: bytes(0x20)},
    )
    dev.log = []
    dev.write(CONFIG, 0x04, struct.pack("<H", 0x0407))  # decoding on, INTx disabled
    dev.log.clear()
    return dev


def test_apply_order_is_safe() -> None:
    dst = recording()
    load(dst, saved(programmed()))
    config = [(offset, data) for index, offset, data in dst.log if index == CONFIG]
    commands = [data for offset, data in config if offset == 0x04]
    # decoding and bus mastering off with a bitwise mask, the other bits (INTx disable) kept;
    # then the saved command without bus mastering (memory on: the MSI-X table is in BAR3);
    # the saved command last
    assert commands == [
        struct.pack("<H", 0x0400),
        struct.pack("<H", 0x0503),
        struct.pack("<H", 0x0507),
    ]
    assert config[-1] == (0x04, struct.pack("<H", 0x0507))
    first_command, staged = (
        i for i, (offset, _) in enumerate(config) if offset == 0x04 and i < len(config) - 1
    )
    bars = [i for i, (offset, _) in enumerate(config) if 0x10 <= offset < 0x28]
    msi_control = [i for i, (offset, _) in enumerate(config) if offset == 0xD2]
    msix_control = [i for i, (offset, _) in enumerate(config) if offset == 0xA2]
    assert first_command < min(bars) and max(bars) < staged < min(msi_control)
    # MSI programmed with its enable clear, MSI-X masked and disabled, enables at the end
    assert config[msi_control[0]][1] == struct.pack("<H", 0x0080)
    assert config[msix_control[0]][1] == struct.pack("<H", 0x4004)
    assert config[msix_control[-1]][1] == struct.pack("<H", 0x8004)
    table_writes = [i for i, (index, _, _) in enumerate(dst.log) if index == MSIX_BAR]
    assert table_writes and dst.read(CONFIG, 0xA2, 2) == struct.pack("<H", 0x8004)


def rewritten(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """The saved file with its state changed and re-encoded (valid framing, other content)."""
    section = read_file(data).config
    state = dict(section.state)
    change(state)
    desc = registry.get(DESCRIPTION_NAME)
    return write([DeviceSection(section.section.idstr, desc, state)], "vmstate")


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(state: dict[str, Any]) -> None:
        state[key] = value

    return change


def _bar_size(state: dict[str, Any]) -> None:
    state["bars"] = [dict(b) for b in state["bars"]]
    state["bars"][0]["size"] *= 2


def _bar_kind(state: dict[str, Any]) -> None:
    state["bars"] = [dict(b) for b in state["bars"]]
    state["bars"][0]["kind"] = KIND_MEM64 if state["bars"][0]["kind"] == KIND_MEM32 else KIND_MEM32


def _msix_size(state: dict[str, Any]) -> None:
    msix = dict(state["vfio-pci-config/msix-table"])
    msix["table_size"] += 1
    msix["table"] = [*msix["table"], msix["table"][0]]
    state["vfio-pci-config/msix-table"] = msix


def _cmask(offset: int, value: int) -> Callable[[dict[str, Any]], None]:
    def change(state: dict[str, Any]) -> None:
        config = bytearray(state["config"])
        config[offset] = value
        state["config"] = bytes(config)

    return change


REJECTIONS = [
    (
        "vendor_id",
        _set("vendor_id", 0x1AF4),
        "vendor_id does not equal the value held",
        "0x8086",
        "0x1af4",
    ),
    ("device_id", _set("device_id", 0x10D4), "device_id does not equal", "0x10d3", "0x10d4"),
    (
        "subsystem_vendor_id",
        _set("subsystem_vendor_id", 0x1234),
        "subsystem_vendor_id does not equal",
        "0x8086",
        "0x1234",
    ),
    ("subsystem_id", _set("subsystem_id", 0x0001), "subsystem_id does not equal", "0x0", "0x1"),
    ("revision_id", _set("revision_id", 3), "revision_id does not equal", "0x0", "0x3"),
    ("class_code", _set("class_code", 0x010802), "class_code does not equal", "0x20000", "0x10802"),
    ("header_type", _set("header_type", 0x80), "header_type does not equal", "0x0", "0x80"),
    ("bars[0].size", _bar_size, "size does not equal", "0x20000", "0x40000"),
    ("bars[0].kind", _bar_kind, "kind does not equal", "0x2", "0x3"),
    ("msix_table_size", _msix_size, "table_size does not equal", "0x5", "0x6"),
    ("cmask: capability pointer", _cmask(0x34, 0xD0), "capability at 0xc8", "0x1", "none"),
    ("cmask: MSI capability id", _cmask(0xD0, 0x09), "capability at 0xd0", "0x5", "0x9"),
    ("cmask: status capability bit", _cmask(0x06, 0x00), "byte 0x006", "0x10", "0x00"),
]


@pytest.mark.parametrize(
    ("what", "change", "message", "expected", "found"), REJECTIONS, ids=[r[0] for r in REJECTIONS]
)
def test_rejections_write_nothing(
    what: str, change: Callable[[dict[str, Any]], None], message: str, expected: str, found: str
) -> None:
    src, dst = programmed(), programmed("dst")
    dst.write(CONFIG, 0x04, struct.pack("<H", 0x0006))
    data = rewritten(saved(src), change)
    before = snapshot_of(dst)
    with pytest.raises(IncompatibleError) as info:
        load(dst, data)
    assert snapshot_of(dst) == before, "a rejected load must not write"
    problems = refusals(dst, data)
    first = problems[0]
    assert info.value.path == first.path and info.value.message.startswith(first.message)
    err = next(p for p in problems if message in p.message)
    assert (err.expected, err.found) == (expected, found)
    assert err.path[0] == DESCRIPTION_NAME
    assert 0 < err.offset < len(data)
    if what.startswith("cmask"):
        assert err.path[1] == "config"


def test_load_into_a_device_of_another_type_lists_every_difference() -> None:
    from vmstate.testing.pci import EmulatedPciBuilder

    other = (
        EmulatedPciBuilder(config_size=256)
        .header(
            vendor=0x1AF4,
            device=0x1041,
            class_code=0x020000,
            subsystem_vendor=0x1AF4,
            interrupt_pin=1,
        )
        .bar(0, 0x1000)
        .build("virtio")
    )
    data = saved(programmed())
    before = snapshot_of(other)
    problems = refusals(other, data)
    # each difference once, by what it is (not again as the config_size field's equal-check)
    assert str(problems[0]).endswith(
        "config space is 4096 bytes, destination's 256 (expected 256 bytes, found 4096 bytes)"
    )
    assert not any("does not equal the value held" in str(p) for p in problems)
    text = "\n".join(map(str, problems))
    assert "vendor id: source 0x8086, destination 0x1af4" in text
    with pytest.raises(IncompatibleError):
        load(other, data)
    assert snapshot_of(other) == before


def test_truncated_oversized_and_newer_files_are_refused() -> None:
    data = saved(programmed())
    dst = programmed("dst")
    before = snapshot_of(dst)
    vmdesc = stream.find_vmdesc(data)
    assert vmdesc is not None
    for cut in (10, 100, 300, 3000, vmdesc - 20):
        with pytest.raises(DecodeError) as info:
            load(dst, data[:cut])
        assert isinstance(info.value, TruncatedError | DecodeError)
        assert info.value.path
    body = data[:vmdesc]
    with pytest.raises(DecodeError, match="unexpected bytes after EOF"):
        load(dst, body + b"\x00garbage")
    newer = bytearray(data)
    header = newer.index(b"/vfio-pci-config") + len(b"/vfio-pci-config")
    newer[header + 4 : header + 8] = (3).to_bytes(4, "big")  # section version 3
    with pytest.raises(
        IncompatibleError, match="incoming version_id 3 is too new for local version_id 2"
    ):
        load(dst, bytes(newer))
    assert snapshot_of(dst) == before


def test_config_state_of_a_256_byte_device_does_not_fit_a_4096_one() -> None:
    from vmstate.testing.pci import EmulatedPciBuilder

    small = (
        EmulatedPciBuilder(config_size=256)
        .header(vendor=0x8086, device=0x10D3, class_code=0x020000)
        .build("small")
    )
    with pytest.raises(IncompatibleError) as info:
        load(programmed("dst"), saved(small))
    assert info.value.path == (DESCRIPTION_NAME, "config_size")
    assert (info.value.expected, info.value.found) == ("4096 bytes", "256 bytes")


def test_qemu_layout_matches_qemus_own_bytes() -> None:
    """VFIOPCIDevice decodes and re-encodes QEMU's PCIDevice+msix of a real e1000e."""
    desc = registry.get(pci_vfio.QEMU_DESCRIPTION_NAME)
    with open_stream(QEMU / "q35-e1000e-virtio.mig") as opened:
        buf = opened.data
        parsed = stream.parse(buf)
        section = next(s for s in parsed.device_sections() if s.idstr.endswith("/e1000e"))
        held = {"msix_present": True, "pdev[0]": {"express": True}, "pdev[1]": {"msix_bytes": 81}}
        state, end = desc.load_from(buf, section.start, 1, held=held)
        assert end - section.start == 4116 + 81
        assert desc.save(state, held=held) == bytes(buf[section.start : end])
    from vmstate.vmdesc import vmdesc_entry

    ours = vmdesc_entry(desc, state, held=held)["fields"]
    theirs = next(d for d in parsed.vmdesc["devices"] if d["name"] == section.idstr)["fields"][:2]
    assert [f["struct"] for f in ours] == [f["struct"] for f in theirs]


def test_qemu_state_of_an_emulated_device() -> None:
    src = programmed()
    state = pci_vfio.read_state(src)
    express = pci_vfio.qemu_express(src.region(CONFIG).size)
    assert express  # a 4096-byte config region
    qemu = pci_vfio.qemu_state(state, express)
    held = pci_vfio.qemu_held(state["config"], express)
    assert qemu["pdev[0]"]["config[1]"] == src.read(CONFIG, 0, 4096)
    assert qemu["pdev[1]"]["msix"][:80] == src.read(MSIX_BAR, 0, 80)
    data = registry.get("VFIOPCIDevice").save(qemu, held=held)
    assert len(data) == 4 + 4096 + 16 + 5 * 16 + 1
    assert data[4 + 4096 + 16 :][:80] == src.read(MSIX_BAR, 0, 80)


# -- this host's real devices, read-only through sysfs -----------------------------


def host_bdfs() -> list[str]:
    root = Path("/sys/bus/pci/devices")
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def require_root() -> None:
    if os.geteuid() != 0:
        message = "reading whole config spaces from sysfs needs root"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def test_devices_lists_this_hosts_pci_devices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "--bdf-only"]) == 0
    assert capsys.readouterr().out.split() == host_bdfs()
    assert main(["devices"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:6] == ["BDF", "ID", "CLASS", "DRIVER", "GROUP", "VFIO"]
    assert len(out) == len(host_bdfs()) + 1


@pytest.mark.parametrize("bdf", host_bdfs())
def test_save_and_show_every_host_device(
    bdf: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_root()
    out = tmp_path / "dev.vms"
    assert main(["save", bdf, "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"saved {bdf} (") and "read-only from sysfs" in said
    sysfs = Path("/sys/bus/pci/devices") / bdf
    vendor, device = (int((sysfs / n).read_text(), 16) for n in ("vendor", "device"))
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert pci_ids().device_name(vendor, device) in shown
    # four hex digits, as sysfs and lspci -n print IDs
    assert f"vendor_id: {vendor:#06x}" in shown and f"device_id: {device:#06x}" in shown
    config = (sysfs / "config").read_bytes()
    with open_stream(out) as opened:
        state = read_file(opened.data).config.state
    assert state["config"] + state.get("extended_config", b"") == config
    resources = (sysfs / "resource").read_text().splitlines()
    for index in range(6):
        start, end, _flags = (int(x, 16) for x in resources[index].split())
        size = end - start + 1 if end else 0
        assert state["bars"][index]["size"] == size
    if config[0x06] & 0x10:
        assert "Capabilities: [" in shown


def test_load_refuses_devices_not_bound_to_vfio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bdf = next(
        b
        for b in host_bdfs()
        if (Path("/sys/bus/pci/devices") / b / "driver").resolve().name != "vfio-pci"
    )
    require_root()
    out = tmp_path / "dev.vms"
    assert main(["save", bdf, "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["load", str(out), bdf, "--", "true"]) == 1
    assert "not vfio-pci: loads go through VFIO only" in capsys.readouterr().err


def test_a_load_into_a_pci_function_needs_a_command_to_hold_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """vfio-pci undoes a standalone load when vmstate exits: refused, before any file
    is read or device opened, with the way to do it."""
    assert main(["load", "/nonexistent.vms", "0000:00:02.0"]) == 2
    err = capsys.readouterr().err
    assert "a load would be undone when vmstate exits" in err
    assert "vmstate load /nonexistent.vms 0000:00:02.0 -- COMMAND" in err
    assert main(["load", "--dry-run", "/nonexistent.vms", "0000:00:02.0", "--", "true"]) == 2
    assert "nothing to hold" in capsys.readouterr().err


def test_errors_are_vmstate_errors() -> None:
    with pytest.raises(VMStateError):
        load(e1000e_like("x"), b"QEVM")


def test_a_different_serial_number_does_not_block_a_load() -> None:
    """Two devices of one type differ in their Device Serial Number (QEMU's e1000e
    derives it from the MAC): the serial is not identity, the capability is."""
    from vmstate.testing.pci import EmulatedPciBuilder

    def nic(name: str, serial: int) -> EmulatedPciDevice:
        builder = EmulatedPciBuilder(config_size=4096).header(
            vendor=0x8086, device=0x10D3, class_code=0x020000
        )
        builder.capability(0xE0, 0x10, struct.pack("<HIH", 0x0001, 0x00008CC1, 0) + bytes(10))
        builder.extended_capability(0x100, 0x0003, 1, struct.pack("<Q", serial))
        return builder.build(name)

    src, dst = nic("src", 0x525400FFFE123456), nic("dst", 0x525400FFFE123457)
    # QEMU's masks do check the serial; the load leaves those bytes out on purpose
    from vmstate.pci.masks import build_masks

    assert build_masks(dst.read(CONFIG, 0, 4096)).checked[0x104:0x10C] == b"\xff" * 8
    load(dst, saved(src))
    assert dst.read(CONFIG, 0x104, 8) == struct.pack("<Q", 0x525400FFFE123457)


# -- a PCI function read through sysfs, MSI-X table included --------------------------


def fake_sysfs(tmp_path: Path, config: bytes, table: bytes) -> Path:
    """A sysfs device directory as the kernel lays one out, for an e1000e-like function
    whose BAR3 (``resource3``) holds *table*."""
    bdf = "0000:00:05.0"
    device = tmp_path / bdf
    device.mkdir()
    (device / "config").write_bytes(config)
    lines = []
    for index, size in enumerate((0x20000, 0x20000, 0x20, 0x4000, 0, 0, 0)):
        start = 0xFE000000 + index * 0x100000
        flags = 0x101 if index == 2 else 0x40200  # I/O, else memory
        lines.append(f"{start:#018x} {start + size - 1 if size else 0:#018x} {flags:#018x}")
    (device / "resource").write_text("\n".join(lines) + "\n" + "0x0 0x0 0x0\n" * 6)
    for index in (0, 1, 3):
        (device / f"resource{index}").write_bytes(table if index == 3 else bytes(0x20000))
    return tmp_path


@pytest.mark.parametrize(
    ("command", "pmcsr", "readable"),
    [(0x0106, 0x0000, True), (0x0104, 0x0000, False), (0x0106, 0x0003, False)],
    ids=["decoding-D0", "no-memory-decoding", "D3hot"],
)
def test_sysfs_reads_the_msix_table_only_where_the_function_answers(
    tmp_path: Path, command: int, pmcsr: int, readable: bool
) -> None:
    src = programmed()
    src.write(CONFIG, 0x04, struct.pack("<H", command))
    config = bytearray(src.read(CONFIG, 0, 4096))
    config[0xCC:0xCE] = struct.pack("<H", pmcsr)  # PMCSR: power state
    table = src.read(MSIX_BAR, 0, 0x4000)
    from vmstate.device_regions import SysfsPciDevice

    with SysfsPciDevice.open("0000:00:05.0", fake_sysfs(tmp_path, bytes(config), table)) as dev:
        state = pci_vfio.read_state(dev)
    assert state["msix_saved"] is readable
    if readable:
        entries = state["vfio-pci-config/msix-table"]["table"]
        assert [e["data"] for e in entries] == [0x4020 + v for v in range(5)]


@pytest.mark.parametrize("pmcsr", [0x0000, 0x0003], ids=["D0", "D3hot"])
def test_save_qemu_warns_when_the_msix_field_is_written_as_zeros(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pmcsr: int,
) -> None:
    """``vmstate save --qemu`` of a function whose MSI-X is enabled but whose table sysfs
    cannot read (D3hot): QEMU's msix field (5 vectors and the PBA) is zeros in the file,
    and one line on stderr says so and why; in D0 it holds the table, without a word."""
    import vmstate.pci_host

    src = programmed()
    config = bytearray(src.read(CONFIG, 0, 4096))
    config[0xCC:0xCE] = struct.pack("<H", pmcsr)
    root = fake_sysfs(tmp_path, bytes(config), src.read(MSIX_BAR, 0, 0x4000))
    from vmstate.device_regions import SysfsPciDevice

    def from_fake_sysfs(name: str) -> tuple[Device, str]:
        return SysfsPciDevice.open(name, root), "read-only from sysfs"

    monkeypatch.setattr(vmstate.pci_host, "open_for_reading", from_fake_sysfs)
    monkeypatch.setattr(vmstate.pci_host, "driver_of", lambda name: "e1000e")
    monkeypatch.setattr(vmstate.pci_host, "title", lambda name: "an e1000e-like function")
    out = tmp_path / "saved.vms"
    assert main(["save", "0000:00:05.0", "--qemu", "-o", str(out)]) == 0
    said, err = capsys.readouterr()
    assert said.startswith("saved 0000:00:05.0 (an e1000e-like function) read-only from sysfs")
    with open_stream(out) as opened:
        (qemu,) = (
            s for s in stream.parse(opened.data).sections if s.idstr.endswith("/VFIOPCIDevice")
        )
    msix = qemu.state["pdev[1]"]["msix"]
    assert len(msix) == 5 * 16 + 1
    if pmcsr == 0:
        assert msix[8:12] == struct.pack("<I", 0x4020) and err == ""
        return
    assert msix == bytes(81)
    assert err == (
        "vmstate: warning: 0000:00:05.0: MSI-X is enabled but its table could not be read "
        "(root, memory decoding and D0 are needed): QEMU's msix field is written as zeros, "
        "so a QEMU that loads this file programs every vector with address 0 and data 0\n"
    )


def test_show_names_what_a_saved_functions_numbers_mean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """IDs with lspci's and QEMU's four (class: six) hex digits, BAR kinds by name as the
    config's BARs say (BAR2 an I/O BAR, 0xc001), counts in the singular for one."""
    src = programmed()
    root = fake_sysfs(tmp_path, src.read(CONFIG, 0, 4096), src.read(MSIX_BAR, 0, 0x4000))
    from vmstate.device_regions import SysfsPciDevice
    from vmstate.device_save import save

    out = tmp_path / "saved.vms"
    with SysfsPciDevice.open("0000:00:05.0", root) as dev:
        save(dev, out)
    assert main(["show", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{out}: QEMU-format stream, {out.stat().st_size} bytes, 1 section"
    for line in ("  vendor_id: 0x8086", "  subsystem_id: 0x0000", "  class_code: 0x020000"):
        assert line in lines
    kinds = [line.strip() for line in lines if line.strip().startswith("kind:")]
    assert kinds[:6] == [
        "kind: 2 (32-bit memory)",
        "kind: 2 (32-bit memory)",
        "kind: 1 (I/O)",
        "kind: 2 (32-bit memory)",
        "kind: 0 (unused)",
        "kind: 0 (unused)",
    ]


def test_without_its_msix_table_a_state_loads_only_if_msix_was_off() -> None:
    """An idle vfio-pci function sits in D3hot: sysfs cannot read its table, but then its
    MSI-X is off and the table carries nothing.  An enabled MSI-X without it is refused."""
    src = programmed()
    state = pci_vfio.read_state(src)
    del state["vfio-pci-config/msix-table"]
    state["msix_saved"] = False
    desc = registry.get(DESCRIPTION_NAME)
    enabled = write([DeviceSection("src/vfio-pci-config", desc, state)], "vmstate")
    dst = programmed("dst")
    with pytest.raises(IncompatibleError, match="MSI-X was enabled but its table was not saved"):
        load(dst, enabled)
    config = bytearray(state["config"])
    config[0xA3] &= 0x7F  # MSI-X control: enable off
    state["config"] = bytes(config)
    disabled = write([DeviceSection("src/vfio-pci-config", desc, state)], "vmstate")
    table = dst.read(MSIX_BAR, 0, 80)
    load(dst, disabled)
    assert dst.read(CONFIG, 0xA2, 2) == struct.pack("<H", 0x0004), "the saved control, off"
    assert dst.read(MSIX_BAR, 0, 80) == table, "the destination's table is left alone"


def test_save_to_a_device_node_writes_through_it(tmp_path: Path) -> None:
    """``vmstate save BDF -o /dev/full`` as root replaced the node with a regular file."""
    require_root()
    bdf = host_bdfs()[0]
    full = tmp_path / "full"
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    assert main(["save", bdf, "-o", str(full)]) == 1  # ENOSPC, reported
    assert stat.S_ISCHR(full.stat().st_mode)


def test_save_to_stdout_keeps_the_report_off_it(
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    require_root()
    bdf = host_bdfs()[0]
    assert main(["save", bdf, "-o", "-"]) == 0
    out, err = capfdbinary.readouterr()
    vendor = int((Path("/sys/bus/pci/devices") / bdf / "vendor").read_text(), 16)
    assert read_file(out).config.state["vendor_id"] == vendor
    assert err.decode().startswith(f"saved {bdf} (")
