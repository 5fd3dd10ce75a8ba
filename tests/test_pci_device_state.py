"""Saving a PCI device's config state and loading it into another, on emulated
devices (vmstate.device_regions.EmulatedPciDevice, with PCI write semantics)
and, read-only, on this host's real devices through sysfs."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import IN_CI

from vmstate import pci_device_state, registry, stream
from vmstate.cli import main
from vmstate.device_regions import EmulatedPciDevice, e1000e_like
from vmstate.errors import DecodeError, IncompatibleError, TruncatedError, VMStateError
from vmstate.inputs import open_stream
from vmstate.pci.ids import pci_ids
from vmstate.pci_device_state import CONFIG, DESCRIPTION_NAME, KIND_MEM32, KIND_MEM64
from vmstate.stream import DeviceState, write

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


def snapshot_of(dev: EmulatedPciDevice) -> dict[int, bytes]:
    return {r.index: dev.read(r.index, 0, r.size) for r in dev.regions()}


def test_save_and_load_into_a_second_device() -> None:
    src, dst = programmed(), e1000e_like("dst")
    data = pci_device_state.save(src)
    pci_device_state.load(dst, data)
    assert pci_device_state.read_state(dst) == pci_device_state.read_state(src)
    assert dst.read(CONFIG, 0, 4096) == src.read(CONFIG, 0, 4096)
    assert dst.read(MSIX_BAR, 0, 80) == src.read(MSIX_BAR, 0, 80)


def test_dry_run_writes_nothing() -> None:
    src, dst = programmed(), e1000e_like("dst")
    before = snapshot_of(dst)
    checked = pci_device_state.load(dst, pci_device_state.save(src), dry_run=True)
    assert checked.state["command"] == 0x0507
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
    pci_device_state.load(dst, pci_device_state.save(programmed()))
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
    section = pci_device_state.find_section(data)
    state = dict(section.state or {})
    change(state)
    desc = registry.get(DESCRIPTION_NAME)
    return write([DeviceState(section.idstr, desc, state)], "vmstate")


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
    data = rewritten(pci_device_state.save(src), change)
    before = snapshot_of(dst)
    with pytest.raises(IncompatibleError) as info:
        pci_device_state.load(dst, data)
    assert snapshot_of(dst) == before, "a rejected load must not write"
    problems = pci_device_state.problems_with(dst, data)
    first = problems[0]
    assert info.value.path == first.path and info.value.message.startswith(first.message)
    err = next(p for p in problems if message in p.message)
    assert (err.expected, err.found) == (expected, found)
    assert err.path[0] == DESCRIPTION_NAME
    assert 0 < err.offset < len(data)
    if what.startswith("cmask"):
        assert err.path[1] == "config"


def test_load_into_a_device_of_another_type_lists_every_difference() -> None:
    from vmstate.device_regions import EmulatedPciBuilder

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
    data = pci_device_state.save(programmed())
    before = snapshot_of(other)
    problems = pci_device_state.problems_with(other, data)
    assert str(problems[0]).startswith("vfio-pci-config.config_size at offset ")
    text = "\n".join(map(str, problems))
    assert "vendor id: source 0x8086, destination 0x1af4" in text
    with pytest.raises(IncompatibleError):
        pci_device_state.load(other, data)
    assert snapshot_of(other) == before


def test_truncated_oversized_and_newer_files_are_refused() -> None:
    data = pci_device_state.save(programmed())
    dst = programmed("dst")
    before = snapshot_of(dst)
    vmdesc = stream.find_vmdesc(data)
    assert vmdesc is not None
    for cut in (10, 100, 300, 3000, vmdesc - 20):
        with pytest.raises(DecodeError) as info:
            pci_device_state.load(dst, data[:cut])
        assert isinstance(info.value, TruncatedError | DecodeError)
        assert info.value.path
    body = data[:vmdesc]
    with pytest.raises(DecodeError, match="unexpected bytes after EOF"):
        pci_device_state.load(dst, body + b"\x00garbage")
    newer = bytearray(data)
    header = newer.index(b"/vfio-pci-config") + len(b"/vfio-pci-config")
    newer[header + 4 : header + 8] = (3).to_bytes(4, "big")  # section version 3
    with pytest.raises(
        IncompatibleError, match="incoming version_id 3 is too new for local version_id 2"
    ):
        pci_device_state.load(dst, bytes(newer))
    assert snapshot_of(dst) == before


def test_config_state_of_a_256_byte_device_does_not_fit_a_4096_one() -> None:
    from vmstate.device_regions import EmulatedPciBuilder

    small = (
        EmulatedPciBuilder(config_size=256)
        .header(vendor=0x8086, device=0x10D3, class_code=0x020000)
        .build("small")
    )
    with pytest.raises(IncompatibleError) as info:
        pci_device_state.load(programmed("dst"), pci_device_state.save(small))
    assert info.value.path == (DESCRIPTION_NAME, "config_size")
    assert (info.value.expected, info.value.found) == ("0x1000", "0x100")


def test_qemu_layout_matches_qemus_own_bytes() -> None:
    """VFIOPCIDevice decodes and re-encodes QEMU's PCIDevice+msix of a real e1000e."""
    desc = registry.get(pci_device_state.QEMU_DESCRIPTION_NAME)
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
    state = pci_device_state.read_state(src)
    express = pci_device_state.qemu_express(src.region(CONFIG).size)
    assert express  # a 4096-byte config region
    qemu = pci_device_state.qemu_state(state, express)
    held = pci_device_state.qemu_held(state["config"], express)
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
    assert f"vendor_id: {vendor:#x}" in shown and f"device_id: {device:#x}" in shown
    config = (sysfs / "config").read_bytes()
    with open_stream(out) as opened:
        buf = opened.data
        state = pci_device_state.find_section(buf).state
    assert state is not None
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
    with pytest.raises(SystemExit) as info:
        main(["load", str(out), bdf])
    assert info.value.code == 2
    assert "not vfio-pci: loads go through VFIO only" in capsys.readouterr().err


def test_errors_are_vmstate_errors() -> None:
    with pytest.raises(VMStateError):
        pci_device_state.load(e1000e_like("x"), b"QEVM")


def test_a_different_serial_number_does_not_block_a_load() -> None:
    """Two devices of one type differ in their Device Serial Number (QEMU's e1000e
    derives it from the MAC): the serial is not identity, the capability is."""
    from vmstate.device_regions import EmulatedPciBuilder

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
    pci_device_state.load(dst, pci_device_state.save(src))
    assert dst.read(CONFIG, 0x104, 8) == struct.pack("<Q", 0x525400FFFE123457)
