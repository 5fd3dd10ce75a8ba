"""Vendor and device names from the system's pci.ids database, as lspci reads it."""

from __future__ import annotations

from functools import cache
from pathlib import Path

PCI_IDS = (
    Path("/usr/share/misc/pci.ids"),
    Path("/usr/share/hwdata/pci.ids"),
    Path("/usr/share/pci.ids"),
)
MAX_PCI_IDS = 8 << 20


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
