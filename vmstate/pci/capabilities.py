"""Standard capability bodies (offsets 0x40-0xff): their values and their decoders.

Each decoder gets the whole config and the capability offset and returns the body,
or None (with a problem) when it does not fit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from vmstate.pci.names import EXPRESS_PORT_TYPES
from vmstate.pci.problems import Problems
from vmstate.pci.registers import CAP_EXP, CAP_MSI, CAP_MSIX, CAP_PM, CAP_VNDR, u16, u32


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
    pme_status: bool


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
class Express:
    """PCI Express capability: the port type decides which registers exist."""

    version: int
    port_type: int
    port_type_name: str
    slot_implemented: bool
    interrupt_message_number: int
    max_payload_supported: int  # bytes
    link_max_speed: int  # Link Capabilities encoding: 1 = 2.5 GT/s, 2 = 5 GT/s, ...
    link_max_width: int
    link_speed: int
    link_width: int
    size: int  # bytes of the capability structure


@attrs.frozen
class VendorSpecific:
    length: int
    body: bytes  # bytes after the length byte, as far as the length says


CapabilityBody = PowerManagement | Msi | MsiX | Express | VendorSpecific


def _fits(data: bytes, offset: int, size: int, what: str, problems: Problems) -> bool:
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


def _decode_pm(data: bytes, where: int, problems: Problems) -> PowerManagement | None:
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
        pme_status=bool(csr & 0x8000),
    )


def _decode_msi(data: bytes, where: int, problems: Problems) -> Msi | None:
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


def _decode_msix(data: bytes, where: int, problems: Problems) -> MsiX | None:
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


def _express_size(flags: int) -> int:
    """Bytes QEMU gives a PCIe capability: version 1 ends after Link Status, 2 after Slot Status 2."""
    return 0x14 if flags & 0xF == 1 else 0x3C


def _decode_express(data: bytes, where: int, problems: Problems) -> Express | None:
    if not _fits(data, where, 4, "PCI Express", problems):
        return None
    flags = u16(data, where + 2)
    size = _express_size(flags)
    # Link registers end at 0x14; that much is enough to decode what we keep.
    if not _fits(data, where, min(size, 0x14), "PCI Express", problems):
        return None
    port_type = (flags >> 4) & 0xF
    devcap = u32(data, where + 4)
    lnkcap = u32(data, where + 0x0C)
    lnksta = u16(data, where + 0x12)
    return Express(
        version=flags & 0xF,
        port_type=port_type,
        port_type_name=EXPRESS_PORT_TYPES.get(port_type, f"Unknown type {port_type}"),
        slot_implemented=bool(flags & 0x0100),
        interrupt_message_number=(flags >> 9) & 0x1F,
        max_payload_supported=128 << (devcap & 0x7),
        link_max_speed=lnkcap & 0xF,
        link_max_width=(lnkcap >> 4) & 0x3F,
        link_speed=lnksta & 0xF,
        link_width=(lnksta >> 4) & 0x3F,
        size=size,
    )


def _decode_vendor(data: bytes, where: int, problems: Problems) -> VendorSpecific | None:
    if not _fits(data, where, 3, "Vendor Specific", problems):
        return None
    length = data[where + 2]
    if length < 3:
        problems.add("cap-length", where + 2, f"Vendor Specific capability length {length} < 3")
        return None
    if not _fits(data, where, length, "Vendor Specific", problems):
        return None
    return VendorSpecific(length=length, body=data[where + 3 : where + length])


CAPABILITY_DECODERS: Mapping[int, Callable[[bytes, int, Problems], CapabilityBody | None]] = {
    CAP_PM: _decode_pm,
    CAP_MSI: _decode_msi,
    CAP_MSIX: _decode_msix,
    CAP_EXP: _decode_express,
    CAP_VNDR: _decode_vendor,
}
