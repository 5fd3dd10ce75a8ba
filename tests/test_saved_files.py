"""A device's whole state in one file (saved_file, device_save, device_load), on an
emulated device that has both PCI config semantics (testing.pci.EmulatedPciDevice) and
migration v2 (testing.migration.EmulatedMigrationDevice): config state, QEMU's vfio
section framing, device data streamed in chunks, loads checked before writing."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from vmstate import pci_vfio, registry, saved_file, stream
from vmstate.cli import main
from vmstate.device_load import load
from vmstate.device_save import save
from vmstate.errors import DecodeError, DeviceError, IncompatibleError, LimitError, VMStateError
from vmstate.migration import DeviceState
from vmstate.saved_file import read_file
from vmstate.stream_writer import DeviceSection, StreamWriter
from vmstate.testing.migratable import MigratablePci
from vmstate.testing.pci import e1000e_like
from vmstate.vfio_section import (
    DEV_CONFIG_STATE,
    DEV_DATA_STATE,
    DEV_SETUP_STATE,
    END_OF_STATE,
    walk_vfio,
)


def state_of(dev: MigratablePci) -> DeviceState:
    return DeviceState(struct.unpack("=Ii", dev.device_feature(0x10002 | 1 << 16, bytes(8)))[0])


def programmed(name: str = "src", seed: int = 7, size: int = 3 << 20) -> MigratablePci:
    dev = MigratablePci(name, seed=seed, size=size)
    dev.write(7, 0x10, struct.pack("<I", 0xFEBC0000))
    dev.write(7, 0x04, struct.pack("<H", 0x0506))
    return dev


def test_save_streams_device_data_in_qemus_vfio_framing(tmp_path: Path) -> None:
    src = programmed()
    path = tmp_path / "dev.vms"
    reports: list[tuple[int, int | None]] = []
    saved = save(src, path, progress=lambda done, total: reports.append((done, total)))
    assert saved.data_size == 24 + (3 << 20)
    assert reports[-1] == (saved.data_size, saved.data_size)
    data = path.read_bytes()
    found = read_file(data)
    assert found.data is not None and found.meta is not None
    assert found.meta["data_size"] == saved.data_size and found.meta["protocol"] == 2
    assert len(found.data.payload.chunks) >= 3  # bounded chunks, not one 3 MiB blob
    assert max(size for _, size in found.data.payload.chunks) <= 1 << 20
    assert found.data.payload.config is not None
    start, end = found.data.payload.config
    assert data[start - 8 : start] == DEV_CONFIG_STATE.to_bytes(8, "big")
    assert data[end : end + 8] == END_OF_STATE.to_bytes(8, "big")
    assert data[end + 24 : end + 32] == DEV_DATA_STATE.to_bytes(8, "big")
    assert state_of(src) == DeviceState.RUNNING


def test_load_restores_data_then_config(tmp_path: Path) -> None:
    src, dst = programmed(), MigratablePci("dst", seed=7, size=3 << 20)
    path = tmp_path / "dev.vms"
    save(src, path)
    load(dst, path.read_bytes())
    arcs = [(a.source, a.target) for a in dst.migration.arcs]
    assert (DeviceState.STOP, DeviceState.RESUMING) in arcs
    assert arcs.index((DeviceState.STOP, DeviceState.RESUMING)) < arcs.index(
        (DeviceState.RESUMING, DeviceState.STOP)
    )
    assert state_of(dst) == DeviceState.RUNNING
    assert pci_vfio.read_state(dst)["bars"][0]["address"] == 0xFEBC0000
    assert pci_vfio.read_state(dst)["command"] == 0x0506


def test_corrupt_device_data_is_refused_by_the_driver_and_nothing_else_changes(
    tmp_path: Path,
) -> None:
    src, dst = programmed(), MigratablePci("dst", seed=7, size=3 << 20)
    path = tmp_path / "dev.vms"
    save(src, path)
    data = bytearray(path.read_bytes())
    found = read_file(bytes(data))
    assert found.data is not None
    at, _ = found.data.payload.chunks[1]
    data[at + 100] ^= 0xFF  # inside the data: only the driver can tell
    config_before = dst.read(7, 0, 4096)
    with pytest.raises(VMStateError) as info:
        load(dst, bytes(data))
    assert "was left in RESUMING and was reset" in str(info.value)
    assert state_of(dst) not in (DeviceState.RESUMING, DeviceState.ERROR)
    assert dst.read(7, 0, 4096) == config_before, "config is applied only after the data took"


def test_config_is_checked_before_any_device_data_moves(tmp_path: Path) -> None:
    from vmstate.testing.pci import EmulatedPciBuilder

    src = programmed()
    path = tmp_path / "dev.vms"
    save(src, path)

    base = (
        EmulatedPciBuilder(config_size=4096)
        .header(vendor=0x1AF4, device=0x1041, class_code=0x020000)
        .build("o")
    )
    other = MigratablePci("other", base, seed=7, size=3 << 20)
    with pytest.raises(IncompatibleError, match="vendor id: source 0x8086, destination 0x1af4"):
        load(other, path.read_bytes())
    assert other.migration.arcs == [], "no state change may be requested before the checks pass"


def test_a_device_without_migration_still_saves_its_config(tmp_path: Path) -> None:
    plain = MigratablePci("plain", flags=None)
    saved = save(plain, tmp_path / "plain.vms")
    assert saved.data_size is None
    assert (
        saved.reason
        == "its driver has no VFIO migration v2 (VFIO_DEVICE_FEATURE_MIGRATION: ENOTTY)"
    )
    found = read_file((tmp_path / "plain.vms").read_bytes())
    assert found.data is None
    with pytest.raises(DeviceError, match="does not support migration"):
        from vmstate import migration

        migration.DeviceStateMachine(plain)


def test_file_with_device_data_needs_a_migration_capable_destination(tmp_path: Path) -> None:
    path = tmp_path / "dev.vms"
    save(programmed(), path)
    with pytest.raises(IncompatibleError, match="cannot take it"):
        load(MigratablePci("dst", flags=None), path.read_bytes())


def test_framing_errors_name_offsets(tmp_path: Path) -> None:
    path = tmp_path / "dev.vms"
    save(programmed(size=4096), path)
    data = path.read_bytes()
    found = read_file(data)
    assert found.data is not None
    at, size = found.data.payload.chunks[0]
    huge = bytearray(data)
    huge[at - 8 : at] = (1 << 40).to_bytes(8, "big")
    with pytest.raises(LimitError) as info:
        read_file(bytes(huge))
    assert info.value.offset == at - 8
    tag = bytearray(data)
    end = found.data.payload.end
    tag[end - 8 : end] = (0xFFFFFFFFEF100009).to_bytes(8, "big")
    with pytest.raises(DecodeError):
        read_file(bytes(tag))
    meta_lie = bytearray(data)
    section = next(
        s
        for s in stream.parse(
            data,
            raw=lambda i: (
                None if not i.endswith("/vfio") else (lambda b, p: walk_vfio(b, p).end)
            ),
        ).device_sections()
        if s.idstr.endswith(saved_file.META_NAME)
    )
    meta_lie[section.end - 16 : section.end - 8] = (size + 1).to_bytes(8, "big")  # data_size
    with pytest.raises(IncompatibleError, match="device data size differs"):
        read_file(bytes(meta_lie))


MTTY_PORT = struct.Struct("<8s16sBBB??xHBBBx")


def mtty_data(magic: int = 0x7E9D09898C3E2C4E, major: int = 1, ports: int = 2) -> bytes:
    header = struct.pack("<QIIII", magic, major, 0, ports, 0)
    port = MTTY_PORT.pack(
        bytes([0x41, 0x05, 0xC1, 0x1B, 0x08, 0x60, 0, 0x5A]),
        bytes(16),
        0,
        0,
        0,
        False,
        False,
        12,
        0xC1,
        16,
        1,
    )
    return header + port * ports


def mtty_file(tmp_path: Path, data: bytes) -> Path:
    """A saved file as vmstate save writes one for an mtty device."""
    dev = e1000e_like("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001")
    state = pci_vfio.read_state(dev)
    path = tmp_path / "mtty.vms"
    with open(path, "wb") as out:
        writer = StreamWriter(out, "vmstate")
        writer.device(DeviceSection(f"{dev.name}/vfio-pci-config", pci_vfio.description(), state))

        def payload(f: Any) -> int:
            f.write(DEV_SETUP_STATE.to_bytes(8, "big") + END_OF_STATE.to_bytes(8, "big"))
            f.write(
                DEV_DATA_STATE.to_bytes(8, "big")
                + len(data).to_bytes(8, "big")
                + data
                + END_OF_STATE.to_bytes(8, "big")
            )
            return 16 + 16 + len(data) + 8

        writer.raw(f"{dev.name}/vfio", 1, payload)
        fmt = b"mtty-migration-data"
        meta = {
            "protocol": 2,
            "flags": 7,
            "format_len": len(fmt),
            "format": fmt,
            "data_size": len(data),
            "dirty_pages": 0,
        }
        writer.device(
            DeviceSection(f"{dev.name}/vfio-device-state", registry.get("vfio-device-state"), meta)
        )
        writer.finish()
    return path


def test_mtty_data_decodes_field_by_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = mtty_file(tmp_path, mtty_data())
    found = read_file(path.read_bytes())
    assert found.data is not None and found.data.format is not None
    decoded = found.data.decoded
    assert decoded is not None
    assert decoded["magic"] == 0x7E9D09898C3E2C4E
    assert decoded["nr_ports"] == 2
    assert decoded["ports"][0]["uart_reg"] == [0x41, 0x05, 0xC1, 0x1B, 0x08, 0x60, 0, 0x5A]
    assert decoded["ports"][1]["divisor"] == 12
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "mtty-migration-data" in out and "divisor: 0xc" in out and "uart_reg: [0x41, 5, 0xc1" in out
    )
    # the device's migration flags by the names linux/vfio.h gives bits 0, 1 and 2
    assert "flags: 0x7 (STOP_COPY|P2P|PRE_COPY)" in out and "protocol: 2 (VFIO migration v2)" in out


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (mtty_data(magic=0x1234), "mtty-migration-data/magic_ok"),
        (mtty_data(major=2), "mtty-migration-data/version_ok"),
        (mtty_data(ports=3)[:96], "mtty-migration-data/ports_ok"),
        (mtty_data()[:80], "input ends early"),
        (mtty_data() + b"\x00" * 4, "unexpected bytes after the end"),
    ],
    ids=["magic", "version", "ports", "short", "long"],
)
def test_corrupt_mtty_data_is_refused_before_the_device(
    tmp_path: Path, data: bytes, message: str
) -> None:
    path = mtty_file(tmp_path, data)
    with pytest.raises(DecodeError) as info:
        read_file(path.read_bytes())
    assert message in str(info.value)
    assert info.value.path[0].endswith("/vfio")
    raw = path.read_bytes()
    assert 0 < info.value.offset < len(raw)


# -- the 2019 patch's region protocol ---------------------------------------------------


class RegionProtocolPci:
    """An emulated PCI function (regions 0-7) that also has the 2019 patch's
    device-state regions (9-11, test_region_protocol's emulation)."""

    def __init__(self, name: str, snapshot: bytes, dirty: frozenset[int] = frozenset()) -> None:
        """*dirty*: guest addresses the device reports as written."""
        from test_region_protocol import StateRegionsDevice

        self.name = name
        self.pci = e1000e_like(name)
        self.state = StateRegionsDevice(snapshot=snapshot, dirty=dirty)

    def _part(self, index: int) -> Any:
        return self.pci if index <= 8 else self.state

    def regions(self) -> tuple[Any, ...]:
        return self.pci.regions() + self.state.regions()

    def region(self, index: int) -> Any:
        return self._part(index).region(index)

    def find_region(self, type: int, subtype: int) -> Any:
        return self.state.find_region(type, subtype)

    def read(self, index: int, offset: int, size: int) -> bytes:
        return self._part(index).read(index, offset, size)

    def write(self, index: int, offset: int, data: bytes) -> None:
        self._part(index).write(index, offset, data)

    def close(self) -> None:
        return None


def test_region_protocol_device_config_data_travels_in_the_file(tmp_path: Path) -> None:
    from vmstate.region_protocol import CAP_SYSTEM_MEMORY

    snapshot = bytes(range(256)) * 12
    dirty = frozenset(0x100000 + page * 4096 for page in (1, 2, 40))
    src = RegionProtocolPci("src", snapshot, dirty=dirty)
    path = tmp_path / "regions.vms"
    saved = save(src, path, dirty_range=(0x100000, 64))  # type: ignore[arg-type]
    assert saved.data_size == len(snapshot) and saved.reason == ""
    found = read_file(path.read_bytes())
    assert found.data is None and found.meta is not None
    assert found.meta["protocol"] == saved_file.PROTOCOL_REGIONS
    assert found.meta["flags"] == CAP_SYSTEM_MEMORY
    assert found.meta["vfio-device-state/region-config"]["data"] == snapshot
    bitmap = found.meta["vfio-device-state/dirty-bitmap"]
    assert (bitmap["start_addr"], bitmap["page_nr"]) == (0x100000, 64)
    assert int.from_bytes(bitmap["bitmap"], "little") == (1 << 1) | (1 << 2) | (1 << 40)
    dst = RegionProtocolPci("dst", b"")
    load(dst, path.read_bytes())  # type: ignore[arg-type]
    assert dst.state.loaded == snapshot
    with pytest.raises(IncompatibleError, match="has no device-state regions"):
        load(MigratablePci("plain", flags=None), path.read_bytes())
