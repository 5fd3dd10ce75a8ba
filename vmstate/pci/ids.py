"""Names for PCI ids from the system's pci.ids database, composed as lspci composes them.

Vendors, devices, subsystems, classes, subclasses and programming interfaces; where
the database has no name (or is not installed) the result falls back to numbers
the way lspci's ``pci_lookup_name`` does, so our text reads like its.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import attrs

PCI_IDS = (
    Path("/usr/share/misc/pci.ids"),
    Path("/usr/share/hwdata/pci.ids"),
    Path("/usr/share/pci.ids"),
)
MAX_PCI_IDS = 8 << 20


@attrs.frozen
class PciIds:
    """The parsed database: one mapping per kind of id."""

    vendors: dict[int, str] = attrs.field(factory=dict)
    devices: dict[tuple[int, int], str] = attrs.field(factory=dict)
    #: (vendor, device, subsystem vendor, subsystem device)
    subsystems: dict[tuple[int, int, int, int], str] = attrs.field(factory=dict)
    #: "S" blocks: subsystems a vendor names for any device (subsystem vendor, subsystem device)
    generic_subsystems: dict[tuple[int, int], str] = attrs.field(factory=dict)
    classes: dict[int, str] = attrs.field(factory=dict)
    subclasses: dict[tuple[int, int], str] = attrs.field(factory=dict)
    prog_ifs: dict[tuple[int, int, int], str] = attrs.field(factory=dict)

    def device_name(self, vendor: int, device: int) -> str:
        """``Vendor Device``, as lspci's first line names a function."""
        return _pair(self.vendors.get(vendor), self.devices.get((vendor, device)), vendor, device)

    def subsystem_name(self, vendor: int, device: int, sub_vendor: int, sub_device: int) -> str:
        """The subsystem's vendor and name: per device, else generic, else the device's own
        name when the subsystem ids repeat the device ids."""
        name = self.subsystems.get((vendor, device, sub_vendor, sub_device))
        name = name or self.generic_subsystems.get((sub_vendor, sub_device))
        if name is None and (vendor, device) == (sub_vendor, sub_device):
            name = self.devices.get((vendor, device))
        return _pair(self.vendors.get(sub_vendor), name, sub_vendor, sub_device)

    def class_name(self, base: int, sub: int) -> str:
        """The subclass name; else the class name with the number; else ``Class bbss``."""
        name = self.subclasses.get((base, sub))
        if name is not None:
            return name
        name = self.classes.get(base)
        return f"{name} [{base:02x}{sub:02x}]" if name else f"Class {base:02x}{sub:02x}"

    def prog_if_name(self, base: int, sub: int, prog_if: int) -> str | None:
        """The programming interface's name; IDE controllers' is made from their mode bits."""
        name = self.prog_ifs.get((base, sub, prog_if))
        if name is None and (base, sub) == (0x01, 0x01) and not prog_if & 0x70:
            modes = (
                (0x80, "Master"),
                (0x08, "SecP"),
                (0x04, "SecO"),
                (0x02, "PriP"),
                (0x01, "PriO"),
            )
            parts = [text for bit, text in modes if prog_if & bit]
            name = " ".join(parts)
        return name


def _pair(vendor: str | None, device: str | None, vendor_id: int, device_id: int) -> str:
    if vendor and device:
        return f"{vendor} {device}"
    if not vendor:
        return f"Device {vendor_id:04x}:{device_id:04x}"
    return f"{vendor} Device {device_id:04x}"


@cache
def pci_ids() -> PciIds:
    """The system's pci.ids, parsed once; empty when none is installed (or it is too big)."""
    for path in PCI_IDS:
        if path.is_file() and path.stat().st_size <= MAX_PCI_IDS:
            return parse_pci_ids(path.read_text(errors="replace"))
    return PciIds()


def _hex(text: str, digits: int) -> int | None:
    if len(text) < digits + 1 or text[digits] not in " \t":
        return None
    try:
        return int(text[:digits], 16)
    except ValueError:
        return None


def parse_pci_ids(text: str) -> PciIds:
    """pci.ids as lspci reads it: vendor blocks, ``S`` generic-subsystem blocks, ``C`` class
    blocks; a tab per nesting level; lines it cannot parse are skipped, not fatal."""
    ids = PciIds()
    block = ""  # "vendor", "subsystem", "class" or "" (a block to skip)
    top = second = -1
    for raw in text.splitlines():
        line = raw.rstrip(" \t\r")
        if not line.lstrip(" \t") or line.lstrip(" \t").startswith("#"):
            continue
        nest = len(line) - len(line.lstrip("\t"))
        body = line[nest:]
        if nest == 0:
            block, top = _top_level(ids, body)
            second = -1
        elif nest == 1 and block in ("vendor", "subsystem"):
            code = _hex(body, 4)
            second = -1 if code is None else code
            if code is not None:
                table = ids.devices if block == "vendor" else ids.generic_subsystems
                _put(table, (top, code), body[5:])
        elif nest == 1 and block == "class":
            code = _hex(body, 2)
            second = -1 if code is None else code
            if code is not None:
                _put(ids.subclasses, (top, code), body[3:])
        elif nest == 2 and block == "vendor" and second >= 0:
            sub_vendor, sub_device = _hex(body, 4), _hex(body[5:], 4)
            if sub_vendor is not None and sub_device is not None:
                _put(ids.subsystems, (top, second, sub_vendor, sub_device), body[10:])
        elif nest == 2 and block == "class" and second >= 0:
            prog_if = _hex(body, 2)
            if prog_if is not None:
                _put(ids.prog_ifs, (top, second, prog_if), body[3:])
    return ids


def _top_level(ids: PciIds, body: str) -> tuple[str, int]:
    if body.startswith("C "):
        code = _hex(body[2:], 2)
        if code is None:
            return "", -1
        _put(ids.classes, code, body[5:])
        return "class", code
    if body.startswith("S "):
        code = _hex(body[2:] + " ", 4)
        return ("subsystem", code) if code is not None else ("", -1)
    if len(body) > 1 and body[0].isupper() and body[1] == " ":
        return "", -1  # a block lspci does not know (reserved for future use)
    code = _hex(body, 4)
    if code is None:
        return "", -1
    _put(ids.vendors, code, body[5:])
    return "vendor", code


def _put(table: dict, key: object, name: str) -> None:
    name = name.strip(" \t")
    if name:
        table.setdefault(key, name)
