"""The host's PCI devices as sysfs shows them, and opening one the best way there is.

Read-only and bounded: it lists ``/sys/bus/pci/devices``, reads small
attribute files, and names devices from the pci.ids database when installed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import attrs

from vmstate.device_regions import Device, SysfsPciDevice, VfioDevice
from vmstate.errors import UsageError
from vmstate.pci.ids import pci_ids

SYSFS_PCI = Path("/sys/bus/pci/devices")
SYSFS_MDEV = Path("/sys/bus/mdev/devices")
_BDF = re.compile(r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def normalize_bdf(text: str) -> str | None:
    """``00:02.0`` or ``0000:00:02.0`` as ``0000:00:02.0``; None if *text* is no BDF."""
    m = _BDF.match(text)
    if m is None:
        return None
    domain, bus, slot, function = m.groups()
    return f"{(domain or '0000').lower()}:{bus.lower()}:{slot.lower()}.{function}"


@attrs.frozen
class HostDevice:
    """One PCI function of this host."""

    bdf: str
    vendor_id: int
    device_id: int
    class_code: int
    driver: str | None
    iommu_group: int | None
    vendor_name: str | None
    device_name: str | None

    @property
    def vfio_status(self) -> str:
        """``ready`` (bound to vfio-pci, group node present), ``bound``, or ``no``."""
        if self.driver != "vfio-pci":
            return "no"
        group = Path(f"/dev/vfio/{self.iommu_group}")
        return "ready" if self.iommu_group is not None and group.exists() else "bound"

    @property
    def name(self) -> str:
        vendor = self.vendor_name or f"vendor {self.vendor_id:04x}"
        device = self.device_name or f"device {self.device_id:04x}"
        return f"{vendor} {device}"


def _read_hex(path: Path) -> int:
    return int(path.read_text().strip(), 16)


def _link_name(path: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def host_device(bdf: str, sysfs: Path = SYSFS_PCI) -> HostDevice:
    """The sysfs view of *bdf*; UsageError when this host has no such device."""
    path = sysfs / bdf
    if not path.is_dir():
        raise UsageError(f"no PCI device {bdf} on this host (see vmstate devices)")
    vendor, device = _read_hex(path / "vendor"), _read_hex(path / "device")
    group = _link_name(path / "iommu_group")
    names = pci_ids()
    return HostDevice(
        bdf,
        vendor,
        device,
        _read_hex(path / "class"),
        _link_name(path / "driver"),
        int(group) if group is not None and group.isdigit() else None,
        names.vendors.get(vendor),
        names.devices.get((vendor, device)),
    )


def host_devices(sysfs: Path = SYSFS_PCI) -> Iterator[HostDevice]:
    """Every PCI function of this host, in address order."""
    if not sysfs.is_dir():
        return
    for entry in sorted(sysfs.iterdir()):
        if normalize_bdf(entry.name) == entry.name:
            yield host_device(entry.name, sysfs)


def normalize_name(text: str) -> str:
    """A PCI address (any accepted spelling) or a mediated device's UUID, as sysfs names it."""
    bdf = normalize_bdf(text)
    if bdf is not None:
        return bdf
    if _UUID.match(text.lower()):
        return text.lower()
    raise UsageError(f"{text!r} is neither a PCI address like 0000:00:02.0 nor an mdev UUID")


def is_mdev(name: str) -> bool:
    return _UUID.match(name) is not None


@attrs.frozen
class MediatedDevice:
    """A mediated device: its UUID, its type (e.g. ``mtty-2``) and parent driver."""

    uuid: str
    type_name: str

    @property
    def driver(self) -> str:
        """mdev types are named "<parent driver>-<type>"."""
        return self.type_name.rsplit("-", 1)[0]


def mediated_device(uuid: str, sysfs: Path = SYSFS_MDEV) -> MediatedDevice:
    path = sysfs / uuid
    if not path.is_dir():
        raise UsageError(f"no mediated device {uuid} on this host")
    return MediatedDevice(uuid, _link_name(path / "mdev_type") or "unknown")


def mediated_devices(sysfs: Path = SYSFS_MDEV) -> Iterator[MediatedDevice]:
    if sysfs.is_dir():
        for entry in sorted(sysfs.iterdir()):
            yield mediated_device(entry.name, sysfs)


def title(name: str) -> str:
    """What a device is, for messages: vendor and device names, or the mdev type."""
    return f"mdev {mediated_device(name).type_name}" if is_mdev(name) else host_device(name).name


def driver_of(name: str) -> str | None:
    """The driver whose migration data a device carries: an mdev's parent driver,
    a PCI function's bound driver."""
    return mediated_device(name).driver if is_mdev(name) else host_device(name).driver


def open_device(name: str) -> tuple[Device, str]:
    """Open a PCI function through VFIO when it is bound to vfio-pci, else read-only
    from sysfs; a mediated device always through VFIO.  Returns the device and how
    it was opened, for messages."""
    if is_mdev(name):
        mdev = mediated_device(name)
        return VfioDevice.open(name), f"through VFIO (mediated device {mdev.type_name})"
    host = host_device(name)
    if host.driver == "vfio-pci":
        return VfioDevice.open(name), "through VFIO"
    how = f"read-only from sysfs (driver {host.driver})" if host.driver else "read-only from sysfs"
    return SysfsPciDevice.open(name), how


def open_for_writing(name: str) -> Device:
    """Open a device through VFIO; a PCI function another driver owns is not ours to write."""
    if is_mdev(name):
        mediated_device(name)
        return VfioDevice.open(name)
    host = host_device(name)
    if host.driver != "vfio-pci":
        owner = host.driver or "no driver"
        raise UsageError(f"{name} is bound to {owner}, not vfio-pci: loads go through VFIO only")
    return VfioDevice.open(name)
