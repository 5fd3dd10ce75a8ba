"""The host's PCI devices as sysfs shows them, and opening one the best way there is.

Read-only and bounded: it lists ``/sys/bus/pci/devices``, reads small
attribute files, and names devices from the pci.ids database when installed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import attrs

from vmstate.device_regions import Device, SysfsPciDevice, VfioDevice
from vmstate.errors import UsageError

SYSFS_PCI = Path("/sys/bus/pci/devices")
PCI_IDS = (
    Path("/usr/share/misc/pci.ids"),
    Path("/usr/share/hwdata/pci.ids"),
    Path("/usr/share/pci.ids"),
)
MAX_PCI_IDS = 8 << 20
_BDF = re.compile(r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")


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
    names = pci_names()
    return HostDevice(
        bdf,
        vendor,
        device,
        _read_hex(path / "class"),
        _link_name(path / "driver"),
        int(group) if group is not None and group.isdigit() else None,
        names.get((vendor, None)),
        names.get((vendor, device)),
    )


def host_devices(sysfs: Path = SYSFS_PCI) -> Iterator[HostDevice]:
    """Every PCI function of this host, in address order."""
    if not sysfs.is_dir():
        return
    for entry in sorted(sysfs.iterdir()):
        if normalize_bdf(entry.name) == entry.name:
            yield host_device(entry.name, sysfs)


@cache
def pci_names() -> dict[tuple[int, int | None], str]:
    """Vendor and device names from pci.ids: (vendor, None) and (vendor, device) keys."""
    for path in PCI_IDS:
        if path.is_file() and path.stat().st_size <= MAX_PCI_IDS:
            return _parse_pci_ids(path.read_text(errors="replace"))
    return {}


def _parse_pci_ids(text: str) -> dict[tuple[int, int | None], str]:
    names: dict[tuple[int, int | None], str] = {}
    vendor: int | None = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("C "):
            break  # the class list follows the vendors
        if not line.startswith("\t"):
            code, _, name = line.partition("  ")
            vendor = int(code, 16) if _is_hex4(code) else None
            if vendor is not None:
                names[(vendor, None)] = name.strip()
        elif vendor is not None and not line.startswith("\t\t"):
            code, _, name = line[1:].partition("  ")
            if _is_hex4(code):
                names[(vendor, int(code, 16))] = name.strip()
    return names


def _is_hex4(code: str) -> bool:
    return len(code) == 4 and all(c in "0123456789abcdefABCDEF" for c in code)


def open_device(bdf: str) -> tuple[Device, str]:
    """Open *bdf* through VFIO when it is bound to vfio-pci, else read-only from sysfs.

    Returns the device and how it was opened, for messages."""
    host = host_device(bdf)
    if host.driver == "vfio-pci":
        return VfioDevice.open(bdf), "through VFIO"
    how = f"read-only from sysfs (driver {host.driver})" if host.driver else "read-only from sysfs"
    return SysfsPciDevice.open(bdf), how


def open_for_writing(bdf: str) -> Device:
    """Open *bdf* through VFIO; a device another driver owns is not ours to write."""
    host = host_device(bdf)
    if host.driver != "vfio-pci":
        owner = host.driver or "no driver"
        raise UsageError(f"{bdf} is bound to {owner}, not vfio-pci: loads go through VFIO only")
    return VfioDevice.open(bdf)
