"""The guest offers what the real-VFIO tests rely on (runs inside the QEMU guest).

If one of these fails, the VFIO tests' failures say more about tests/vm than about
vmstate: check here first.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.vfio

PCI_DEVICES = Path("/sys/bus/pci/devices")
MDEV_DEVICES = Path("/sys/bus/mdev/devices")
# QEMU device -> ((vendor, device), how many tests/vm/harness.py attaches)
EMULATED = {
    "edu": (("0x1234", "0x11e8"), 1),
    "pci-testdev": (("0x1b36", "0x0005"), 1),
    "e1000e": (("0x8086", "0x10d3"), 2),
    "ivshmem-plain": (("0x1af4", "0x1110"), 1),
}
VFIO_GET_API_VERSION = 0x3B64  # _IO(';', 100)
VFIO_CHECK_EXTENSION = 0x3B65
VFIO_TYPE1V2_IOMMU = 3


def _pci_ids(device: Path) -> tuple[str, str]:
    return (device / "vendor").read_text().strip(), (device / "device").read_text().strip()


def _emulated() -> list[Path]:
    ids = {pci_id for pci_id, _ in EMULATED.values()}
    return sorted(d for d in PCI_DEVICES.iterdir() if _pci_ids(d) in ids)


def _group(device: Path) -> str:
    return (device / "iommu_group").resolve().name


def test_container_speaks_vfio() -> None:
    fd = os.open("/dev/vfio/vfio", os.O_RDWR)
    try:
        assert fcntl.ioctl(fd, VFIO_GET_API_VERSION) == 0  # VFIO_API_VERSION
        assert fcntl.ioctl(fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1V2_IOMMU) == 1
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", sorted(EMULATED))
def test_emulated_device_bound_to_vfio_pci(name: str) -> None:
    pci_id, count = EMULATED[name]
    devices = [d for d in PCI_DEVICES.iterdir() if _pci_ids(d) == pci_id]
    assert len(devices) == count, f"{name} ({':'.join(pci_id)}): {devices}"
    for device in devices:
        assert (device / "driver").resolve().name == "vfio-pci", device
        assert Path("/dev/vfio", _group(device)).is_char_device(), device


def test_every_test_device_has_a_group_of_its_own() -> None:
    devices = [*_emulated(), *MDEV_DEVICES.iterdir()]
    groups = [_group(d) for d in devices]
    assert len(set(groups)) == len(devices), dict(zip(devices, groups, strict=True))
    for device in devices:
        members = list((device / "iommu_group" / "devices").iterdir())
        assert [m.name for m in members] == [device.name]


def test_two_mtty_mdevs() -> None:
    mdevs = sorted(MDEV_DEVICES.iterdir())
    assert len(mdevs) == 2, mdevs
    for mdev in mdevs:
        assert (mdev / "mdev_type").resolve().name == "mtty-2", mdev
        assert (mdev / "driver").resolve().name == "mtty", mdev
        assert Path("/dev/vfio", _group(mdev)).is_char_device(), mdev
