"""Config-space layout from the PCI and PCI Express specifications: sizes, header
register offsets, capability ids, and little-endian register reads.

Plain numbers shared by the decoder, QEMU's masks and the compatibility check.
"""

from __future__ import annotations

HEADER_SIZE = 64
CONVENTIONAL_SIZE = 256
EXPRESS_SIZE = 4096
CONFIG_SIZES = (HEADER_SIZE, CONVENTIONAL_SIZE, EXPRESS_SIZE)

#: at most this many standard capabilities ((256 - 64) / 4 dwords, Linux's PCI_FIND_CAP_TTL)
MAX_CAPABILITIES = 48
#: at most this many extended capabilities (one per dword of the extended space)
MAX_EXTENDED_CAPABILITIES = (EXPRESS_SIZE - CONVENTIONAL_SIZE) // 4

ROM_INDEX = 6  #: ``bar_sizes`` key of the expansion ROM (QEMU's PCI_ROM_SLOT, VFIO's ROM region)

# Header registers.
VENDOR_ID = 0x00
DEVICE_ID = 0x02
COMMAND = 0x04
STATUS = 0x06
REVISION_ID = 0x08
CLASS_PROG = 0x09
CLASS_DEVICE = 0x0A
CACHE_LINE_SIZE = 0x0C
LATENCY_TIMER = 0x0D
HEADER_TYPE = 0x0E
BIST = 0x0F
BAR0 = 0x10
CAPABILITY_LIST = 0x34
INTERRUPT_LINE = 0x3C
INTERRUPT_PIN = 0x3D
STATUS_CAP_LIST = 0x10
HEADER_TYPE_MULTI_FUNCTION = 0x80

# Capability ids (PCI_CAP_ID_*) this package decodes; render_caps names the others.
CAP_PM = 0x01
CAP_AGP = 0x02
CAP_VPD = 0x03
CAP_SLOTID = 0x04
CAP_MSI = 0x05
CAP_PCIX = 0x07
CAP_HT = 0x08
CAP_VNDR = 0x09
CAP_DEBUG_PORT = 0x0A
CAP_SSVID = 0x0D
CAP_EXP = 0x10
CAP_MSIX = 0x11
CAP_SATA = 0x12
CAP_AF = 0x13
CAP_EA = 0x14

# Extended capability ids (PCI_EXT_CAP_ID_*) decoded; render_extended names the others.
EXT_AER = 0x0001
EXT_VC = 0x0002
EXT_DSN = 0x0003
EXT_RCLINK = 0x0005
EXT_RCEC = 0x0007
EXT_VC2 = 0x0009
EXT_VNDR = 0x000B
EXT_ACS = 0x000D
EXT_ARI = 0x000E
EXT_ATS = 0x000F
EXT_SRIOV = 0x0010
EXT_MCAST = 0x0012
EXT_PRI = 0x0013
EXT_REBAR = 0x0015
EXT_TPH = 0x0017
EXT_LTR = 0x0018
EXT_SECPCI = 0x0019
EXT_PASID = 0x001B
EXT_DPC = 0x001D
EXT_L1PM = 0x001E
EXT_PTM = 0x001F
EXT_DVSEC = 0x0023
EXT_VF_REBAR = 0x0024
EXT_DOE = 0x002E


def bar_count(header_type: int) -> int:
    """BAR registers of a type-0 (six) or type-1 (two) header."""
    return 6 if header_type == 0 else 2


def rom_offset(header_type: int) -> int:
    return 0x30 if header_type == 0 else 0x38


def u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "little")


def u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def u64(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 8], "little")
