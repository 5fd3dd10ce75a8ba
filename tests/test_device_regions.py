"""Device regions: the sysfs backend on this machine's real PCI devices, the emulated
device's PCI write semantics, bounds checks, and VfioDevice's refusals on a host
without VFIO (the VFIO backend itself is tested in tests/vfio, inside the guest)."""

from __future__ import annotations

import mmap
import os
import re
import struct
from pathlib import Path

import pytest

from vmstate._lowlevel import vfio
from vmstate.device_regions import (
    SYSFS_PCI,
    SysfsPciDevice,
    VfioDevice,
)
from vmstate.errors import DeviceError

CONFIG = vfio.VFIO_PCI_CONFIG_REGION_INDEX
HOST_DEVICES = sorted(os.listdir(SYSFS_PCI)) if SYSFS_PCI.is_dir() else []


def host_devices() -> list[object]:
    if HOST_DEVICES:
        return HOST_DEVICES
    return [pytest.param(None, marks=pytest.mark.skip(reason=f"no PCI devices in {SYSFS_PCI}"))]


def sysfs_number(bdf: str, attribute: str) -> int:
    return int((SYSFS_PCI / bdf / attribute).read_text(), 16)


def u16(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<H", data, offset)[0])


def u32(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", data, offset)[0])


# --- sysfs -------------------------------------------------------------------------


@pytest.mark.parametrize("bdf", host_devices())
def test_sysfs_config_matches_sysfs_attributes(bdf: str) -> None:
    with SysfsPciDevice.open(bdf) as device:
        config = device.region(CONFIG)
        assert config.readable and not config.writable and not config.mappable
        assert config.size == (SYSFS_PCI / bdf / "config").stat().st_size in (256, 4096)
        header = device.read(CONFIG, 0, 64)
        assert u16(header, 0) == sysfs_number(bdf, "vendor")
        assert u16(header, 2) == sysfs_number(bdf, "device")
        assert u32(header, 8) >> 8 == sysfs_number(bdf, "class")
        if os.geteuid() == 0:
            assert len(device.read(CONFIG, 0, config.size)) == config.size


@pytest.mark.parametrize("bdf", host_devices())
def test_sysfs_regions_match_resource_file(bdf: str) -> None:
    lines = (SYSFS_PCI / bdf / "resource").read_text().splitlines()
    expected, memory = [], []
    for index, line in enumerate(lines[: vfio.VFIO_PCI_ROM_REGION_INDEX + 1]):
        start, end, flags = (int(word, 0) for word in line.split())
        expected.append(end - start + 1 if end else 0)
        mapped_file = (SYSFS_PCI / bdf / f"resource{index}").exists()
        memory.append(bool(flags & 0x200 and end) and mapped_file)  # IORESOURCE_MEM
    memory[vfio.VFIO_PCI_ROM_REGION_INDEX] = False  # the ROM is no resourceN file
    with SysfsPciDevice.open(bdf) as device:
        bars = [device.region(i) for i in range(vfio.VFIO_PCI_ROM_REGION_INDEX + 1)]
        assert [bar.size for bar in bars] == expected
        assert [r.index for r in device.regions()] == [0, 1, 2, 3, 4, 5, 6, CONFIG]
        assert not any(bar.readable or bar.writable for bar in bars)
        assert [bar.mappable for bar in bars] == memory
        mappable = [bar.index for bar in bars if bar.mappable]
        if mappable and os.geteuid() == 0:  # resourceN is root's; mapped, never read here
            mapped = device.mmap(mappable[0], 0, mmap.PAGESIZE)
            with mapped, pytest.raises(TypeError, match="read-only"):
                mapped[0:1] = b"\0"
        unmappable = [bar.index for bar in bars if not bar.mappable and bar.size]
        for index in unmappable:
            with pytest.raises(DeviceError, match=f"region {index} is not mappable"):
                device.mmap(index, 0, mmap.PAGESIZE)


def test_sysfs_device_is_read_only() -> None:
    if not HOST_DEVICES:
        pytest.skip(f"no PCI devices in {SYSFS_PCI}")
    with SysfsPciDevice.open(HOST_DEVICES[0]) as device:
        before = device.read(CONFIG, 0, 64)
        with pytest.raises(DeviceError, match="read-only sysfs device"):
            device.write(CONFIG, 4, b"\x00\x00")
        with pytest.raises(DeviceError, match="region 0 is not readable"):
            device.read(0, 0, 4)
        with pytest.raises(DeviceError, match=r"region 7: 8 bytes at offset 0x\w+ lie outside"):
            device.read(CONFIG, device.region(CONFIG).size - 4, 8)
        assert device.read(CONFIG, 0, 64) == before
    with pytest.raises(DeviceError, match="closed"):
        device.read(CONFIG, 0, 4)


def test_sysfs_without_root_reads_only_64_bytes() -> None:
    """The kernel hides config space past 64 bytes from openers without CAP_SYS_ADMIN."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to an unprivileged user")
    if not HOST_DEVICES:
        pytest.skip(f"no PCI devices in {SYSFS_PCI}")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, then open
        os.close(read_end)
        report = b""
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            with SysfsPciDevice.open(HOST_DEVICES[0]) as device:
                report += b"64:%d;" % len(device.read(CONFIG, 0, 64))
                try:
                    device.read(CONFIG, 0, 128)
                except DeviceError as exc:
                    report += str(exc).encode()
        finally:
            os.write(write_end, report)
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read().decode()
    os.waitpid(pid, 0)
    assert report.startswith("64:64;")
    assert "stopped after 64" in report and "without root" in report


def test_sysfs_rejects_bad_names_and_missing_devices(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="not a PCI address"):
        SysfsPciDevice.open("../../etc")
    with pytest.raises(DeviceError, match="cannot read"):
        SysfsPciDevice.open("0000:00:00.0", sysfs=tmp_path)
    (tmp_path / "0000:00:00.0").mkdir()
    (tmp_path / "0000:00:00.0" / "resource").write_text("0x0 0x0\n")
    with pytest.raises(DeviceError, match="malformed"):
        SysfsPciDevice.open("0000:00:00.0", sysfs=tmp_path)


# --- VFIO refusals on a host without VFIO access ----------------------------------------


def test_vfio_open_rejects_names_that_are_not_devices() -> None:
    with pytest.raises(DeviceError, match="not a PCI address"):
        VfioDevice.open("../vfio")
    with pytest.raises(DeviceError, match=r"ffff:ff:1f\.7: no IOMMU group"):
        VfioDevice.open("ffff:ff:1f.7")


def test_vfio_open_of_a_device_not_bound_to_vfio_fails_cleanly() -> None:
    unbound = [
        bdf for bdf in HOST_DEVICES if (SYSFS_PCI / bdf / "driver").resolve().name != "vfio-pci"
    ]
    if not unbound:
        pytest.skip("every PCI device here is bound to vfio-pci")
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(DeviceError, match=re.escape(unbound[0])):
        VfioDevice.open(unbound[0])
    assert set(os.listdir("/proc/self/fd")) == before  # nothing leaked on the way out
