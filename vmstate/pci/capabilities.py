"""Standard capability bodies (offsets 0x40-0xff): their values and their decoders.

Each decoder gets the whole config and the capability offset and returns the body,
or None (with a problem) when it does not fit.  The PCI Express capability has its
own module (:mod:`vmstate.pci.express`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from vmstate.pci.express import Express, decode_express
from vmstate.pci.flags import Flags, flags
from vmstate.pci.problems import ConfigProblems
from vmstate.pci.registers import (
    CAP_AF,
    CAP_AGP,
    CAP_DEBUG_PORT,
    CAP_EA,
    CAP_EXP,
    CAP_HT,
    CAP_MSI,
    CAP_MSIX,
    CAP_PCIX,
    CAP_PM,
    CAP_SATA,
    CAP_SLOTID,
    CAP_SSVID,
    CAP_VNDR,
    DEVICE_ID,
    HEADER_TYPE,
    VENDOR_ID,
    u16,
    u32,
)

VIRTIO_VENDOR = 0x1AF4
VIRTIO_DEVICES = range(0x1000, 0x1080)
#: virtio's cfg_type names (virtio 1.x, 4.1.4), as lspci prints them
VIRTIO_CFG_TYPES = {1: "CommonCfg", 2: "Notify", 3: "ISR", 4: "DeviceCfg"}


@attrs.frozen
class PowerManagement:
    version: int
    pme_clock: bool
    dsi: bool
    aux_current_ma: int
    d1: bool
    d2: bool
    pme_support: int  # bit per state: D0, D1, D2, D3hot, D3cold
    power_state: int  # D0..D3hot
    no_soft_reset: bool
    pme_enable: bool
    data_select: int
    data_scale: int
    pme_status: bool
    bridge_extensions: int  # PMCSR_BSE: B2/B3 support (0x40) and bus power/clock control (0x80)


@attrs.frozen
class Msi:
    """MSI: vector counts, 64-bit addressing, per-vector masking (offsets are into config)."""

    enabled: bool
    vectors: int  # Multiple Message Capable
    vectors_enabled: int  # Multiple Message Enable
    is_64bit: bool
    per_vector_masking: bool
    address: int
    data: int
    mask_offset: int | None
    pending_offset: int | None
    mask_bits: int | None
    pending_bits: int | None
    size: int  # bytes of the capability structure


@attrs.frozen
class MsiX:
    """MSI-X: table and PBA live in BARs (BIR + offset), the entries count is table_size."""

    enabled: bool
    function_mask: bool
    table_size: int
    table_bir: int
    table_offset: int
    pba_bir: int
    pba_offset: int


@attrs.frozen
class Virtio:
    """A virtio 1.x vendor capability: which configuration structure, and where in which BAR."""

    cfg_type: int
    type_name: str  # CommonCfg, Notify, ISR, DeviceCfg or <unknown>
    bar: int
    offset: int
    length: int
    notify_off_multiplier: int | None  # Notify only


@attrs.frozen
class VendorSpecific:
    length: int
    body: bytes  # bytes after the length byte, as far as the length says
    virtio: Virtio | None  # the layout of a virtio device's capability (vendor 1af4)


@attrs.frozen
class SlotId:
    expansion_slots: int
    first_in_chassis: bool
    chassis: int


@attrs.frozen
class SubsystemId:
    """A bridge's subsystem ids: type-1 headers have no subsystem registers of their own."""

    vendor_id: int
    device_id: int


@attrs.frozen
class SataHba:
    major: int
    minor: int
    bar_location: int  # 4-9: BAR0-5, 15: in config space
    bar_offset: int


@attrs.frozen
class AdvancedFeatures:
    capabilities: Flags  # TP, FLR
    control: Flags  # FLR
    status: Flags  # TP


@attrs.frozen
class DebugPort:
    bar: int
    offset: int


@attrs.frozen
class Agp:
    major: int
    minor: int
    status: int
    command: int


@attrs.frozen
class PciX:
    """PCI-X: a device's command and status, or a bridge's status and split transaction control."""

    bridge: bool
    command: int  # secondary status, for a bridge
    status: int
    upstream_split_control: int | None
    downstream_split_control: int | None


@attrs.frozen
class HyperTransport:
    command: int  # the capability's type lives in its upper bits
    msi_mapping_address: int | None  # MSI mapping capabilities that are not fixed
    #: a primary or secondary interface's registers from the capability's start (28 or
    #: 24 bytes), empty for other types or past the end of the config space
    interface: bytes


@attrs.frozen
class EaEntry:
    enabled: bool
    writable: bool
    entry_size: int
    bar_equivalent: int
    primary_properties: int
    secondary_properties: int
    base: int
    max_offset: int
    base_is_64bit: bool  # the entry has an upper base dword (lspci prints it, even 0)
    max_offset_is_64bit: bool


@attrs.frozen
class EnhancedAllocation:
    num_entries: int
    entries: tuple[EaEntry, ...]
    fixed_secondary_bus: int | None  # bridges only
    fixed_subordinate_bus: int | None
    unreadable: bool  # an entry ran past the end of the config space


CapabilityBody = (
    PowerManagement | Msi | MsiX | Express | VendorSpecific | SlotId | SubsystemId | SataHba
    | AdvancedFeatures | DebugPort | Agp | PciX | HyperTransport | EnhancedAllocation
)  # fmt: skip


def _fits(data: bytes, offset: int, size: int, what: str, problems: ConfigProblems) -> bool:
    if offset + size <= len(data):
        return True
    problems.add(
        "cap-truncated",
        offset,
        f"{what} capability needs {size} bytes at {offset:#x}, past the end of the {len(data)}-byte config space",
    )
    return False


def _msi_size(flags: int) -> int:
    """Bytes of an MSI capability with *flags* (QEMU's msi_cap_sizeof)."""
    is_64 = bool(flags & 0x0080)
    masking = bool(flags & 0x0100)
    return {(False, False): 0x0A, (True, False): 0x0E, (False, True): 0x14, (True, True): 0x18}[
        (is_64, masking)
    ]


def _decode_pm(data: bytes, where: int, problems: ConfigProblems) -> PowerManagement | None:
    if not _fits(data, where, 8, "Power Management", problems):
        return None
    pmc = u16(data, where + 2)
    csr = u16(data, where + 4)
    return PowerManagement(
        version=pmc & 0x7,
        pme_clock=bool(pmc & 0x8),
        dsi=bool(pmc & 0x20),
        aux_current_ma=(0, 55, 100, 160, 220, 270, 320, 375)[(pmc >> 6) & 0x7],
        d1=bool(pmc & 0x200),
        d2=bool(pmc & 0x400),
        pme_support=pmc >> 11,
        power_state=csr & 0x3,
        no_soft_reset=bool(csr & 0x8),
        pme_enable=bool(csr & 0x100),
        data_select=(csr >> 9) & 0xF,
        data_scale=(csr >> 13) & 0x3,
        pme_status=bool(csr & 0x8000),
        bridge_extensions=data[where + 6],
    )


def _decode_msi(data: bytes, where: int, problems: ConfigProblems) -> Msi | None:
    if not _fits(data, where, 4, "MSI", problems):
        return None
    flags = u16(data, where + 2)
    size = _msi_size(flags)
    if not _fits(data, where, size, "MSI", problems):
        return None
    is_64 = bool(flags & 0x0080)
    masking = bool(flags & 0x0100)
    capable = (flags >> 1) & 0x7
    enabled = (flags >> 4) & 0x7
    if capable > 5:
        problems.add("msi-count", where + 2, f"MSI Multiple Message Capable {capable} is reserved")
    if enabled > capable:
        problems.add(
            "msi-count",
            where + 2,
            f"MSI enables {1 << enabled} vectors but is capable of {1 << capable}",
        )
    data_at = where + (0x0C if is_64 else 0x08)
    mask_at = where + (0x10 if is_64 else 0x0C)
    return Msi(
        enabled=bool(flags & 0x1),
        vectors=1 << capable,
        vectors_enabled=1 << enabled,
        is_64bit=is_64,
        per_vector_masking=masking,
        address=(u32(data, where + 8) << 32 if is_64 else 0) | u32(data, where + 4),
        data=u16(data, data_at),
        mask_offset=mask_at if masking else None,
        pending_offset=mask_at + 4 if masking else None,
        mask_bits=u32(data, mask_at) if masking else None,
        pending_bits=u32(data, mask_at + 4) if masking else None,
        size=size,
    )


def _decode_msix(data: bytes, where: int, problems: ConfigProblems) -> MsiX | None:
    if not _fits(data, where, 12, "MSI-X", problems):
        return None
    control = u16(data, where + 2)
    table = u32(data, where + 4)
    pba = u32(data, where + 8)
    return MsiX(
        enabled=bool(control & 0x8000),
        function_mask=bool(control & 0x4000),
        table_size=(control & 0x7FF) + 1,
        table_bir=table & 0x7,
        table_offset=table & ~0x7,
        pba_bir=pba & 0x7,
        pba_offset=pba & ~0x7,
    )


def _decode_vendor(data: bytes, where: int, problems: ConfigProblems) -> VendorSpecific | None:
    if not _fits(data, where, 3, "Vendor Specific", problems):
        return None
    length = data[where + 2]
    if length < 3:
        problems.add("cap-length", where + 2, f"Vendor Specific capability length {length} < 3")
        return VendorSpecific(length=length, body=b"", virtio=None)
    if not _fits(data, where, length, "Vendor Specific", problems):
        return None
    virtio = None
    if (
        u16(data, VENDOR_ID) == VIRTIO_VENDOR
        and u16(data, DEVICE_ID) in VIRTIO_DEVICES
        and length >= 16
    ):
        cfg_type = data[where + 3]
        virtio = Virtio(
            cfg_type=cfg_type,
            type_name=VIRTIO_CFG_TYPES.get(cfg_type, "<unknown>"),
            bar=data[where + 4],
            offset=u32(data, where + 8),
            length=u32(data, where + 12),
            notify_off_multiplier=u32(data, where + 16) if cfg_type == 2 and length >= 20 else None,
        )
    return VendorSpecific(length=length, body=data[where + 3 : where + length], virtio=virtio)


def _decode_slot_id(data: bytes, where: int, problems: ConfigProblems) -> SlotId | None:
    if not _fits(data, where, 4, "Slot Identification", problems):
        return None
    esr = data[where + 2]
    return SlotId(esr & 0x1F, bool(esr & 0x20), data[where + 3])


def _decode_ssvid(data: bytes, where: int, problems: ConfigProblems) -> SubsystemId | None:
    if not _fits(data, where, 8, "Bridge Subsystem Vendor ID", problems):
        return None
    return SubsystemId(u16(data, where + 4), u16(data, where + 6))


def _decode_sata(data: bytes, where: int, problems: ConfigProblems) -> SataHba | None:
    if not _fits(data, where, 8, "SATA", problems):
        return None
    revision = data[where + 2]
    bars = u32(data, where + 4)
    return SataHba(revision >> 4, revision & 0xF, bars & 0xF, (bars >> 4) & 0xFFFFF)


def _decode_af(data: bytes, where: int, problems: ConfigProblems) -> AdvancedFeatures | None:
    if not _fits(data, where, 6, "Advanced Features", problems):
        return None
    return AdvancedFeatures(
        flags(data[where + 3], (("TP", 0x1), ("FLR", 0x2))),
        flags(data[where + 4], (("FLR", 0x1),)),
        flags(data[where + 5], (("TP", 0x1),)),
    )


def _decode_debug_port(data: bytes, where: int, problems: ConfigProblems) -> DebugPort | None:
    if not _fits(data, where, 4, "Debug Port", problems):
        return None
    word = u16(data, where + 2)
    return DebugPort(word >> 13, word & 0x1FFF)


def _decode_agp(data: bytes, where: int, problems: ConfigProblems) -> Agp | None:
    if not _fits(data, where, 12, "AGP", problems):
        return None
    version = data[where + 2]
    return Agp(version >> 4, version & 0xF, u32(data, where + 4), u32(data, where + 8))


def _decode_pcix(data: bytes, where: int, problems: ConfigProblems) -> PciX | None:
    bridge = data[HEADER_TYPE] & 0x7F == 1
    if not _fits(data, where, 16 if bridge else 8, "PCI-X", problems):
        return None
    if bridge:
        return PciX(
            True, u16(data, where + 2), u32(data, where + 4),
            u32(data, where + 8), u32(data, where + 12),
        )  # fmt: skip
    return PciX(False, u16(data, where + 2), u32(data, where + 4), None, None)


def _decode_ht(data: bytes, where: int, problems: ConfigProblems) -> HyperTransport | None:
    if not _fits(data, where, 4, "HyperTransport", problems):
        return None
    command = u16(data, where + 2)
    address = None
    if command & 0xF800 == 0xA800 and not command & 0x2 and where + 12 <= len(data):
        address = u32(data, where + 8) << 32 | (u32(data, where + 4) & ~0xFFFFF)
    size = {0x0000: 28, 0x2000: 24}.get(command & 0xE000, 0)
    interface = data[where : where + size] if size and where + size <= len(data) else b""
    return HyperTransport(command, address, interface)


#: Enhanced Allocation entries lspci walks at most: the 6-bit Num Entries field
_MAX_EA_ENTRIES = 63


def _decode_ea(data: bytes, where: int, problems: ConfigProblems) -> EnhancedAllocation | None:
    if not _fits(data, where, 4, "Enhanced Allocation", problems):
        return None
    count = data[where + 2] & 0x3F
    bridge = data[HEADER_TYPE] & 0x7F == 1
    entry_at = where + (8 if bridge else 4)
    secondary = subordinate = None
    if bridge:
        if where + 6 > len(data):
            return EnhancedAllocation(count, (), None, None, True)
        secondary, subordinate = data[where + 4], data[where + 5]
    entries: list[EaEntry] = []
    for _ in range(min(count, _MAX_EA_ENTRIES)):
        if entry_at + 4 > len(data):
            return EnhancedAllocation(count, tuple(entries), secondary, subordinate, True)
        header = u32(data, entry_at)
        size = header & 0x7
        if entry_at + 4 + 4 * size > len(data):
            return EnhancedAllocation(count, tuple(entries), secondary, subordinate, True)
        base = u32(data, entry_at + 4)
        max_offset = u32(data, entry_at + 8)
        high_at = entry_at + 12
        full_base = base & ~0x3
        if base & 0x2:
            full_base |= u32(data, high_at) << 32
            high_at += 4
        full_max = max_offset | 0x3
        if max_offset & 0x2:
            full_max |= u32(data, high_at) << 32
        entries.append(
            EaEntry(
                enabled=bool(header & 0x80000000),
                writable=bool(header & 0x40000000),
                entry_size=size,
                bar_equivalent=(header >> 4) & 0xF,
                primary_properties=(header >> 8) & 0xFF,
                secondary_properties=(header >> 16) & 0xFF,
                base=full_base,
                max_offset=full_max,
                base_is_64bit=bool(base & 0x2),
                max_offset_is_64bit=bool(max_offset & 0x2),
            )
        )
        entry_at += 4 + 4 * size
    return EnhancedAllocation(count, tuple(entries), secondary, subordinate, False)


CAPABILITY_DECODERS: Mapping[int, Callable[[bytes, int, ConfigProblems], CapabilityBody | None]] = {
    CAP_PM: _decode_pm,
    CAP_AGP: _decode_agp,
    CAP_SLOTID: _decode_slot_id,
    CAP_MSI: _decode_msi,
    CAP_PCIX: _decode_pcix,
    CAP_HT: _decode_ht,
    CAP_VNDR: _decode_vendor,
    CAP_DEBUG_PORT: _decode_debug_port,
    CAP_SSVID: _decode_ssvid,
    CAP_EXP: decode_express,
    CAP_MSIX: _decode_msix,
    CAP_SATA: _decode_sata,
    CAP_AF: _decode_af,
    CAP_EA: _decode_ea,
}
