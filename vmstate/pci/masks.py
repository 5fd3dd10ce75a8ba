"""QEMU's per-byte config masks (cmask, wmask, w1cmask), rebuilt from config bytes."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from vmstate.pci.capabilities import Express, Msi, MsiX, PowerManagement
from vmstate.pci.decode import decode_config
from vmstate.pci.model import Bar, Capability, ExpansionRom, ExtendedCapability
from vmstate.pci.problems import ConfigProblem, Difference
from vmstate.pci.registers import (
    CACHE_LINE_SIZE,
    CAP_SLOTID,
    CAP_SSVID,
    CAPABILITY_LIST,
    CLASS_DEVICE,
    CLASS_PROG,
    COMMAND,
    DEVICE_ID,
    EXT_ACS,
    EXT_ARI,
    EXT_ATS,
    EXT_DSN,
    EXT_SRIOV,
    HEADER_SIZE,
    HEADER_TYPE,
    INTERRUPT_LINE,
    REVISION_ID,
    STATUS,
    STATUS_CAP_LIST,
    VENDOR_ID,
)


@attrs.frozen
class ConfigMasks:
    """QEMU's per-byte masks for one device's config space (``hw/pci/pci.c``).

    ``cmask`` marks bytes a migration must bring unchanged, ``wmask`` bits the guest
    may write, ``w1cmask`` write-1-to-clear bits.  QEMU's ``get_pci_config_device``
    rejects incoming config where ``(incoming ^ current) & cmask & ~wmask & ~w1cmask``
    is non-zero; :meth:`mismatches` applies the same rule.
    """

    cmask: bytes
    wmask: bytes
    w1cmask: bytes

    @property
    def checked(self) -> bytes:
        """Bits that must match: ``cmask & ~wmask & ~w1cmask``."""
        return bytes(
            c & ~w & ~x & 0xFF for c, w, x in zip(self.cmask, self.wmask, self.w1cmask, strict=True)
        )

    def mismatches(self, incoming: bytes, current: bytes) -> tuple[ConfigProblem, ...]:
        """Where *incoming* config differs from *current* in checked bits, QEMU's way."""
        size = len(self.cmask)
        if len(incoming) != size or len(current) != size:
            return (
                Difference(
                    "config-size",
                    0,
                    f"config sizes differ: incoming {len(incoming)}, device {len(current)}, masks {size}",
                    f"{len(incoming)} bytes",
                    f"{len(current)} bytes",
                ),
            )
        checked = self.checked
        return tuple(
            Difference(
                "config-byte",
                i,
                f"byte {i:#05x}: incoming {incoming[i]:02x}, device {current[i]:02x}, "
                f"checked bits {checked[i]:02x}",
                f"{incoming[i]:#04x}",
                f"{current[i]:#04x}",
            )
            for i in range(size)
            if (incoming[i] ^ current[i]) & checked[i]
        )


class _MaskBuilder:
    def __init__(self, size: int) -> None:
        self.cmask = bytearray(size)
        self.wmask = bytearray(size)
        self.w1cmask = bytearray(size)

    def set(self, mask: bytearray, offset: int, value: int, width: int) -> None:
        """Set the bits of *value* (little-endian, *width* bytes) at *offset*, inside the space."""
        for i, byte in enumerate(value.to_bytes(width, "little")):
            if offset + i < len(mask):
                mask[offset + i] |= byte

    def clear(self, mask: bytearray, offset: int, width: int) -> None:
        end = min(offset + width, len(mask))
        mask[offset:end] = bytes(max(0, end - offset))

    def capability(self, offset: int, size: int) -> None:
        """What pci_add_capability/pcie_add_capability do: checked, read-only, not W1C."""
        self.set(self.cmask, offset, (1 << (8 * size)) - 1, size)
        self.clear(self.wmask, offset, size)
        self.clear(self.w1cmask, offset, size)

    def writable(self, offset: int, value: int, width: int) -> None:
        self.set(self.wmask, offset, value, width)

    def write_1_to_clear(self, offset: int, value: int, width: int) -> None:
        self.set(self.w1cmask, offset, value, width)

    def done(self) -> ConfigMasks:
        return ConfigMasks(bytes(self.cmask), bytes(self.wmask), bytes(self.w1cmask))


def build_masks(config: bytes, bar_sizes: Mapping[int, int] | None = None) -> ConfigMasks:
    """QEMU's masks for a device whose config space reads *config*.

    QEMU builds its masks while it creates the device model; from bytes we rebuild
    them as ``hw/pci/{pci,msi,msix,pcie,pcie_aer,pcie_sriov}.c`` set them for the
    header, BARs, bridges, MSI, MSI-X, PCI Express and the extended capabilities QEMU
    implements.  Where a device model may widen ``wmask`` (power management, PCIe
    control registers) every register the spec makes writable is taken as writable,
    and capabilities whose body layout QEMU leaves to the device model (or whose size
    vfio-pci takes from the gap to the next one) are checked by their header only.
    The aim: every bit checked here QEMU checks too, so a loader using these masks
    refuses no config QEMU would take.  tests/test_pci_decode.py holds QEMU to that,
    bit by bit, on real migration streams.
    """
    space = decode_config(config, bar_sizes)
    data = bytes(config)
    m = _MaskBuilder(len(data))
    # pci_init_cmask / pci_init_wmask / pci_init_w1cmask
    m.set(m.cmask, VENDOR_ID, 0xFFFF, 2)
    m.set(m.cmask, DEVICE_ID, 0xFFFF, 2)
    m.set(m.cmask, STATUS, STATUS_CAP_LIST, 1)
    m.set(m.cmask, REVISION_ID, 0xFF, 1)
    m.set(m.cmask, CLASS_PROG, 0xFF, 1)
    m.set(m.cmask, CLASS_DEVICE, 0xFFFF, 2)
    m.set(m.cmask, HEADER_TYPE, 0xFF, 1)
    m.set(m.cmask, CAPABILITY_LIST, 0xFF, 1)
    m.writable(CACHE_LINE_SIZE, 0xFF, 1)
    m.writable(INTERRUPT_LINE, 0xFF, 1)
    m.writable(COMMAND, 0x0507, 2)  # I/O, memory, bus master, SERR, INTx disable
    m.writable(HEADER_SIZE, (1 << (8 * (len(data) - HEADER_SIZE))) - 1, len(data) - HEADER_SIZE)
    m.write_1_to_clear(STATUS, 0xF900, 2)  # parity, target/master aborts, SERR
    if space.header.header_type == 1:
        _bridge_masks(m)
    for bar in space.bars:
        _bar_masks(m, bar)
    if space.expansion_rom is not None:
        _rom_masks(m, space.expansion_rom)
    for cap in space.capabilities:
        _capability_masks(m, cap)
    for ext in space.extended_capabilities:
        _extended_masks(m, ext)
    return m.done()


def _bridge_masks(m: _MaskBuilder) -> None:
    """pci_init_mask_bridge."""
    m.writable(0x18, 0xFFFFFFFF, 4)  # bus numbers, secondary latency timer
    m.writable(0x1C, 0xF0, 1)
    m.writable(0x1D, 0xF0, 1)
    m.writable(0x20, 0xFFF0FFF0, 4)  # memory base/limit
    m.writable(0x24, 0xFFF0FFF0, 4)  # prefetchable base/limit
    m.writable(0x28, (1 << 64) - 1, 8)  # prefetchable upper 32 bits
    m.writable(0x3E, 0x0BFF, 2)  # bridge control
    m.write_1_to_clear(0x3E, 0x0400, 2)  # discard timer status
    m.set(m.cmask, 0x1C, 0x0F, 1)  # I/O decode type
    m.set(m.cmask, 0x1D, 0x0F, 1)
    m.set(m.cmask, 0x24, 0x000F, 2)  # prefetchable decode type
    m.set(m.cmask, 0x26, 0x000F, 2)


def _bar_masks(m: _MaskBuilder, bar: Bar) -> None:
    """pci_register_bar: all of the BAR checked, address bits above the size writable.

    Without a size only the type bits are checked (they sit below any valid size)."""
    width = 8 if bar.is_64bit else 4
    all_bits = (1 << (8 * width)) - 1
    if bar.size is None:
        m.set(m.cmask, bar.offset, 0x3 if bar.kind == "io" else 0xF, 1)
        return
    m.set(m.cmask, bar.offset, all_bits, width)
    m.writable(bar.offset, ~(bar.size - 1) & all_bits, width)


def _rom_masks(m: _MaskBuilder, rom: ExpansionRom) -> None:
    if rom.size is None:
        m.set(m.cmask, rom.offset, 0x7FE, 2)  # reserved bits 1-10, below any ROM size
        return
    m.set(m.cmask, rom.offset, 0xFFFFFFFF, 4)
    m.writable(rom.offset, (~(rom.size - 1) & 0xFFFFFFFF) | 0x1, 4)


def _capability_masks(m: _MaskBuilder, cap: Capability) -> None:
    at = cap.offset
    body = cap.body
    if isinstance(body, Msi):
        # msi_init
        m.capability(at, body.size)
        m.writable(at + 2, 0x0071, 2)  # Multiple Message Enable, MSI Enable
        m.writable(at + 4, 0xFFFFFFFC, 4)
        if body.is_64bit:
            m.writable(at + 8, 0xFFFFFFFF, 4)
        m.writable(at + (0x0C if body.is_64bit else 0x08), 0xFFFF, 2)
        if body.mask_offset is not None:
            m.writable(body.mask_offset, (1 << min(body.vectors, 32)) - 1, 4)
    elif isinstance(body, MsiX):
        # msix_init
        m.capability(at, 12)
        m.writable(at + 3, 0xC0, 1)  # MSI-X Enable, Function Mask
    elif isinstance(body, Express):
        # pcie_cap_init / pcie_cap_v1_init; control registers writable as the spec allows
        m.capability(at, body.size)
        m.clear(m.cmask, at + 0x12, 2)  # Link Status: QEMU does not check it
        m.writable(at + 0x08, 0xFFFF, 2)  # Device Control
        m.write_1_to_clear(at + 0x0A, 0x000F, 2)  # Device Status error bits
        m.writable(at + 0x10, 0xFFFF, 2)  # Link Control
        if body.size > 0x14:
            m.writable(at + 0x18, 0xFFFF, 2)  # Slot Control
            m.write_1_to_clear(at + 0x1A, 0x011F, 2)  # Slot Status change bits
            m.writable(at + 0x1C, 0xFFFF, 2)  # Root Control
            m.write_1_to_clear(at + 0x20, 0x00010000, 4)  # Root Status PME status
            m.writable(at + 0x28, 0xFFFF, 2)  # Device Control 2
            m.writable(at + 0x30, 0xFFFF, 2)  # Link Control 2
            m.write_1_to_clear(at + 0x32, 0x0020, 2)  # Link Status 2 equalization request
            m.writable(at + 0x38, 0xFFFF, 2)  # Slot Control 2
    elif isinstance(body, PowerManagement):
        m.capability(at, 8)
        m.writable(at + 4, 0x7F0B, 2)  # power state, no-soft-reset, PME enable, data select
        m.write_1_to_clear(at + 4, 0x8000, 2)  # PME status
    elif cap.id == CAP_SSVID:
        m.capability(at, 8)  # pci_bridge_ssvid_init: read-only
    elif cap.id == CAP_SLOTID:
        m.capability(at, 4)  # slotid_cap_init: chassis number writable
        m.writable(at + 3, 0xFF, 1)
    else:
        m.capability(at, 2)  # id and next: the layout itself


def _extended_masks(m: _MaskBuilder, cap: ExtendedCapability) -> None:
    at = cap.offset
    if cap.id == EXT_DSN:
        m.capability(at, 12)
    elif cap.id in (EXT_ARI, EXT_ACS, EXT_ATS):
        m.capability(at, 8)  # capability word read-only, control word writable
        m.writable(at + 6, 0xFFFF, 2)
    elif cap.id == EXT_SRIOV:
        # pcie_sriov_pf_init: control, NumVFs, page size and VF BARs writable
        m.capability(at, 0x40)
        m.writable(at + 0x08, 0xFFFF, 2)
        m.write_1_to_clear(at + 0x0A, 0xFFFF, 2)
        m.writable(at + 0x10, 0xFFFF, 2)
        m.writable(at + 0x20, 0xFFFFFFFF, 4)
        m.writable(at + 0x24, (1 << (8 * 24)) - 1, 24)
    else:
        m.capability(at, 4)  # the header: id, version, next
