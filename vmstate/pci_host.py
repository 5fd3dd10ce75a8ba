"""The host's PCI devices as sysfs shows them, and opening one the way a command needs.

Read-only and bounded: it lists ``/sys/bus/pci/devices``, reads small
attribute files, and names devices from the pci.ids database when installed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from vmstate._lowlevel.vfio import VFIO_PCI_CONFIG_REGION_INDEX
from vmstate.errors import DeviceError, UsageError
from vmstate.pci.ids import pci_ids

if TYPE_CHECKING:
    from vmstate.device_regions import Device

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
    """The sysfs view of *bdf*; DeviceError when this host has no such device."""
    path = sysfs / bdf
    if not path.is_dir():
        raise DeviceError(f"no PCI device {bdf} on this host (see vmstate devices)")
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
        raise DeviceError(f"no mediated device {uuid} on this host")
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


def open_for_reading(name: str) -> tuple[Device, str]:
    """Open a device so that reading it changes nothing; also how, for messages.

    vfio-pci resets a PCI function when it is opened and restores the config it saved
    when it is closed, so a function is read through sysfs, which does neither.  Only
    where sysfs cannot give its whole config space (it gives non-root users 64 bytes)
    is a function bound to vfio-pci opened through VFIO, and *how* says it was reset.
    A mediated device is opened through VFIO: opening it resets nothing."""
    from vmstate.device_regions import SysfsPciDevice, VfioDevice

    if is_mdev(name):
        mdev = mediated_device(name)
        return VfioDevice.open(name), f"through VFIO (mediated device {mdev.type_name})"
    host = host_device(name)
    device = SysfsPciDevice.open(name)
    vfio_pci = host.driver == "vfio-pci"
    if not vfio_pci or _whole_config_readable(device):
        if vfio_pci:
            return device, "read-only from sysfs (bound to vfio-pci, not opened: that resets it)"
        bound = f"driver {host.driver}" if host.driver else "no driver"
        return device, f"read-only from sysfs ({bound})"
    device.close()
    how = "through VFIO, which reset it (sysfs gives non-root users 64 bytes of config)"
    return VfioDevice.open(name), how


def _whole_config_readable(device: Device) -> bool:
    config = VFIO_PCI_CONFIG_REGION_INDEX
    try:
        device.read(config, 0, min(256, device.region(config).size))
    except DeviceError:
        return False
    return True


def open_for_writing(name: str) -> Device:
    """Open a device through VFIO; a PCI function another driver owns is not ours to write.

    Closing it ends what was written for a PCI function (vfio-pci restores the config
    it saved when it was opened); a mediated device keeps it."""
    from vmstate.device_regions import VfioDevice

    if is_mdev(name):
        mediated_device(name)
        return VfioDevice.open(name)
    host = host_device(name)
    if host.driver != "vfio-pci":
        owner = host.driver or "no driver"
        raise DeviceError(f"{name} is bound to {owner}, not vfio-pci: loads go through VFIO only")
    return VfioDevice.open(name)
