"""VfioDevice on real devices: every device bound to vfio-pci, and every mediated device.

These run inside the QEMU test guest (tests/vm), which binds QEMU's edu, pci-testdev,
e1000e and ivshmem devices to vfio-pci and creates mtty mdevs.  On a host with no
device bound they skip; in the guest (VMSTATE_IN_GUEST=1) that is a failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from vmstate._lowlevel import ioctl, vfio
from vmstate.device_regions import SysfsPciDevice, VfioDevice
from vmstate.errors import DeviceError

pytestmark = pytest.mark.vfio

IN_GUEST = os.environ.get("VMSTATE_IN_GUEST") == "1"
VFIO_PCI = Path("/sys/bus/pci/drivers/vfio-pci")
MDEVS = Path("/sys/bus/mdev/devices")
SYSFS_PCI = Path("/sys/bus/pci/devices")
CONFIG = vfio.VFIO_PCI_CONFIG_REGION_INDEX
EDU = (0x1234, 0x11E8)


def promised(message: str) -> NoReturn:
    """What the test guest provides is missing: a failure there, a skip elsewhere."""
    if IN_GUEST:
        pytest.fail(f"{message}, yet VMSTATE_IN_GUEST=1")
    pytest.skip(f"{message}; these tests run in the QEMU test guest (tests/vm)")


def bound() -> list[str]:
    """PCI addresses bound to vfio-pci (the driver directory also holds bind, new_id, ...)."""
    if not VFIO_PCI.is_dir():
        return []
    return sorted(p.name for p in VFIO_PCI.iterdir() if p.name.count(":") == 2)


def ids(bdf: str) -> tuple[int, int]:
    vendor, device = (int((SYSFS_PCI / bdf / f).read_text(), 16) for f in ("vendor", "device"))
    return vendor, device


# Tests loop over the devices rather than being parametrized by them: the host stands in
# for each guest test by node ID, and the host cannot know the guest's PCI addresses.
@pytest.fixture
def devices() -> Iterator[list[VfioDevice]]:
    """Every device bound to vfio-pci, opened (each in its own container)."""
    names = bound()
    if not names:
        promised(f"no device is bound to vfio-pci ({VFIO_PCI})")
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(VfioDevice.open(name)) for name in names]


def u16(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<H", data, offset)[0])


def capability(config: bytes, cap_id: int) -> int | None:
    """Offset of standard capability *cap_id* in *config*, walking at most 48 links."""
    offset = config[0x34] & 0xFC if u16(config, 0x06) & 0x10 else 0
    for _ in range(48):
        if not offset:
            return None
        if config[offset] == cap_id:
            return offset
        offset = config[offset + 1] & 0xFC
    return None


def test_regions_match_sysfs(devices: list[VfioDevice]) -> None:
    for device in devices:
        assert device.info.flags & vfio.VFIO_DEVICE_FLAGS_PCI, device.name
        config = device.region(CONFIG)
        assert config.readable and config.writable, device.name
        assert config.size == (SYSFS_PCI / device.name / "config").stat().st_size, device.name
        with SysfsPciDevice.open(device.name) as host:
            for index in range(vfio.VFIO_PCI_ROM_REGION_INDEX):
                region, seen = device.region(index), host.region(index)
                where = f"{device.name} BAR{index}"
                assert region.size == seen.size, where
                assert (region.readable and region.writable) == bool(region.size), where
            rom, seen = device.region(vfio.VFIO_PCI_ROM_REGION_INDEX), host.region(6)
            # vfio-pci reports an unassigned ROM as absent.
            assert rom.size == (seen.size if seen.offset else 0), device.name
            assert not rom.writable, device.name


def test_config_matches_sysfs(devices: list[VfioDevice]) -> None:
    for device in devices:
        config = device.read(CONFIG, 0, device.region(CONFIG).size)
        with SysfsPciDevice.open(device.name) as host:
            seen = host.read(CONFIG, 0, 64)
        assert u16(config, 0) == ids(device.name)[0], device.name
        # Identity, class, header type, subsystem and interrupt pin are not virtualised.
        for offset, size in ((0x00, 4), (0x08, 4), (0x0E, 1), (0x2C, 4), (0x3D, 1)):
            where = f"{device.name} config {offset:#x}"
            assert config[offset : offset + size] == seen[offset : offset + size], where


def test_irqs_match_config(devices: list[VfioDevice]) -> None:
    for device in devices:
        irqs = {irq.index: irq for irq in device.irqs()}
        assert len(irqs) == len(device.irqs()), device.name
        assert set(irqs) <= set(range(device.info.num_irqs)), device.name
        config = device.read(CONFIG, 0, 256)
        intx = irqs[vfio.VFIO_PCI_INTX_IRQ_INDEX]
        assert intx.count <= (1 if config[0x3D] else 0), device.name
        msix_cap = capability(config, 0x11)
        msix = irqs[vfio.VFIO_PCI_MSIX_IRQ_INDEX].count
        assert msix == ((u16(config, msix_cap + 2) & 0x7FF) + 1 if msix_cap else 0), device.name


def test_msix_bar_carries_the_msix_mappable_capability(devices: list[VfioDevice]) -> None:
    """vfio-pci marks the mappable BAR holding the MSI-X table with a region capability."""
    checked = 0
    for device in devices:
        config = device.read(CONFIG, 0, 256)
        msix_cap = capability(config, 0x11)
        table_bar = struct.unpack_from("<I", config, msix_cap + 4)[0] & 0x7 if msix_cap else None
        for region in device.regions():
            expected = region.index == table_bar and region.mappable
            assert region.msix_mappable == expected, f"{device.name} region {region.index}"
            checked += expected
    if not checked:
        pytest.skip("no bound device has a mappable MSI-X BAR")


def test_accesses_outside_a_region_raise(devices: list[VfioDevice]) -> None:
    for device in devices:
        size = device.region(CONFIG).size
        outside = f"{device.name}: region 7: 4 bytes at offset {size - 2:#x} lie outside"
        with pytest.raises(DeviceError, match=re.escape(outside)):
            device.read(CONFIG, size - 2, 4)
        with pytest.raises(DeviceError, match="lie outside"):
            device.write(CONFIG, size, b"\x00")
        with pytest.raises(DeviceError, match="no region 99"):
            device.read(99, 0, 1)


def test_plain_vfio_pci_cannot_migrate(devices: list[VfioDevice]) -> None:
    flags = vfio.VFIO_DEVICE_FEATURE_GET | vfio.VFIO_DEVICE_FEATURE_MIGRATION
    for device in devices:
        with pytest.raises(ioctl.IoctlError) as caught:
            device.device_feature(flags, bytes(8))
        assert caught.value.errno == errno.ENOTTY, device.name
        assert caught.value.message.startswith(device.name)


def test_reset_when_offered(devices: list[VfioDevice]) -> None:
    for device in devices:
        vendor = device.read(CONFIG, 0, 2)
        if device.info.flags & vfio.VFIO_DEVICE_FLAGS_RESET:
            device.reset()
            assert device.read(CONFIG, 0, 2) == vendor, device.name
        else:
            with pytest.raises(DeviceError, match="does not support reset"):
                device.reset()


def test_interrupt_loopback(devices: list[VfioDevice]) -> None:
    """Route each device's first IRQ index to an eventfd, trigger it from user space, disable."""
    trigger = vfio.VFIO_IRQ_SET_ACTION_TRIGGER
    tried = 0
    for device in devices:
        usable = [i for i in device.irqs() if i.count and i.index <= vfio.VFIO_PCI_MSIX_IRQ_INDEX]
        if not usable:
            continue
        index = usable[0].index
        event = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            eventfds = vfio.VFIO_IRQ_SET_DATA_EVENTFD | trigger
            ioctl.device_set_irqs(device.fd, eventfds, index, 0, 1, struct.pack("=i", event))
            ioctl.device_set_irqs(device.fd, vfio.VFIO_IRQ_SET_DATA_NONE | trigger, index, 0, 1)
            assert os.eventfd_read(event) == 1, f"{device.name} IRQ index {index}"
            ioctl.device_set_irqs(device.fd, vfio.VFIO_IRQ_SET_DATA_NONE | trigger, index, 0, 0)
        finally:
            os.close(event)
        tried += 1
    if not tried:
        pytest.skip("no bound device has INTx, MSI or MSI-X vectors")


def test_edu_registers_by_read_write_and_mmap(devices: list[VfioDevice]) -> None:
    """QEMU's edu: BAR0+0 is an id register, BAR0+4 returns the complement of what was written."""
    edu = [d for d in devices if ids(d.name) == EDU]
    if not edu:
        pytest.skip("no QEMU edu device is bound to vfio-pci")
    device = edu[0]
    command = u16(device.read(CONFIG, 0x04, 2), 0)
    device.write(CONFIG, 0x04, struct.pack("<H", command | 0x2))  # memory decoding on
    assert device.read(0, 0, 4)[0] == 0xED
    device.write(0, 4, struct.pack("<I", 0x12345678))
    assert device.read(0, 4, 4) == struct.pack("<I", ~0x12345678 & 0xFFFFFFFF)
    bar0 = device.region(0)
    assert bar0.mappable
    with device.mmap(0, 0, 4096) as mapped, memoryview(mapped) as raw, raw.cast("I") as words:
        # 4-byte accesses: edu ignores narrower ones.
        assert words[0] & 0xFF == 0xED
        words[1] = 0x0F0F0F0F
        assert words[1] == 0xF0F0F0F0
    with pytest.raises(DeviceError, match="page-aligned"):
        device.mmap(0, 4, 4096)


def test_closed_device_refuses_access(devices: list[VfioDevice]) -> None:
    device = devices[0]
    device.close()
    device.close()
    with pytest.raises(DeviceError, match="closed"):
        device.read(CONFIG, 0, 4)
    with pytest.raises(DeviceError, match="closed"):
        _ = device.fd
    VfioDevice.open(device.name).close()  # the group was released


# --- mediated devices (mtty: migration v2) -------------------------------------------


@pytest.fixture
def mdevs() -> Iterator[list[VfioDevice]]:
    """Every mediated device, opened."""
    uuids = mdev_uuids()
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(VfioDevice.open(uuid)) for uuid in uuids]


def mdev_uuids() -> list[str]:
    """Every mediated device (the test guest creates two mtty)."""
    uuids = sorted(p.name for p in MDEVS.iterdir()) if MDEVS.is_dir() else []
    if not uuids:
        promised(f"no mediated devices in {MDEVS}")
    return uuids


def read_until_pause(fd: int) -> bytes:
    """Read a migration data fd until ENOMSG (PRE_COPY pause) or end of stream, bounded."""
    data = b""
    for _ in range(1024):
        try:
            chunk = os.read(fd, 65536)
        except OSError as exc:
            if exc.errno == errno.ENOMSG:
                return data
            raise
        if not chunk:
            return data
        data += chunk
    raise AssertionError("migration data fd never paused")


def test_mdev_regions_and_migration_features(mdevs: list[VfioDevice]) -> None:
    probe = vfio.VFIO_DEVICE_FEATURE_PROBE | vfio.VFIO_DEVICE_FEATURE_SET
    running = ioctl.MigState(vfio.VFIO_DEVICE_STATE_RUNNING, -1)
    for mdev in mdevs:
        assert mdev.info.flags & vfio.VFIO_DEVICE_FLAGS_PCI, mdev.name
        config = mdev.region(CONFIG)
        assert config.readable and config.size > 0x40, mdev.name
        assert len(mdev.read(CONFIG, 0, config.size)) == config.size, mdev.name
        assert ioctl.migration_flags(mdev.fd) & vfio.VFIO_MIGRATION_STOP_COPY, mdev.name
        assert mdev.device_feature(probe | vfio.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE) == b""
        assert ioctl.get_mig_state(mdev.fd) == running, mdev.name
        assert ioctl.mig_data_size(mdev.fd) > 0, mdev.name


def test_mdev_precopy_info(mdevs: list[VfioDevice]) -> None:
    """RUNNING -> PRE_COPY opens a data fd whose initial bytes PRECOPY_INFO announces."""
    mdev = mdevs[0]
    if not ioctl.migration_flags(mdev.fd) & vfio.VFIO_MIGRATION_PRE_COPY:
        pytest.skip(f"{mdev.name} does not offer PRE_COPY")
    state = ioctl.set_mig_state(mdev.fd, vfio.VFIO_DEVICE_STATE_PRE_COPY)
    assert state.data_fd >= 0
    try:
        before = ioctl.mig_get_precopy_info(state.data_fd)
        initial = read_until_pause(state.data_fd)
        after = ioctl.mig_get_precopy_info(state.data_fd)
        assert len(initial) == before.initial_bytes > 0
        assert after.initial_bytes == 0
    finally:
        ioctl.set_mig_state(mdev.fd, vfio.VFIO_DEVICE_STATE_RUNNING)
        os.close(state.data_fd)
    assert ioctl.get_mig_state(mdev.fd).device_state == vfio.VFIO_DEVICE_STATE_RUNNING
