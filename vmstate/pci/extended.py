"""PCI Express extended capabilities for errors, identity and virtualization:
AER, DPC, serial number, ACS, ARI, ATS, PRI, PASID, SR-IOV and the vendor-specific ones.

Each decoder gets the config, the capability offset and the function's PCIe port
type (some registers exist only on root ports); it runs only where the registers
it reads lie inside the config space (the size in :data:`EXTENDED_DECODERS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from vmstate.pci.express import ROOT_COMPLEX_EVENT_COLLECTOR, ROOT_PORT
from vmstate.pci.flags import Flags, flags
from vmstate.pci.registers import (
    EXT_ACS,
    EXT_AER,
    EXT_ARI,
    EXT_ATS,
    EXT_DPC,
    EXT_DSN,
    EXT_DVSEC,
    EXT_PASID,
    EXT_PRI,
    EXT_SRIOV,
    EXT_VNDR,
    u16,
    u32,
    u64,
)

#: the uncorrectable error bits lspci shows, for status, mask and severity alike
UNCORRECTABLE_ERRORS = (
    ("DLP", 0x10), ("SDES", 0x20), ("TLP", 0x1000), ("FCP", 0x2000), ("CmpltTO", 0x4000),
    ("CmpltAbrt", 0x8000), ("UnxCmplt", 0x10000), ("RxOF", 0x20000), ("MalfTLP", 0x40000),
    ("ECRC", 0x80000), ("UnsupReq", 0x100000), ("ACSViol", 0x200000),
)  # fmt: skip
CORRECTABLE_ERRORS = (
    ("RxErr", 0x1), ("BadTLP", 0x40), ("BadDLLP", 0x80), ("Rollover", 0x100),
    ("Timeout", 0x1000), ("AdvNonFatalErr", 0x2000),
)  # fmt: skip
_AER_CAP = (
    ("ECRCGenCap", 0x20), ("ECRCGenEn", 0x40), ("ECRCChkCap", 0x80), ("ECRCChkEn", 0x100),
    ("MultHdrRecCap", 0x200), ("MultHdrRecEn", 0x400), ("TLPPfxPres", 0x800),
    ("HdrLogCap", 0x1000),
)  # fmt: skip
_AER_ROOT_CMD = (("CERptEn", 0x1), ("NFERptEn", 0x2), ("FERptEn", 0x4))
_AER_ROOT_STA = (
    ("CERcvd", 0x1), ("MultCERcvd", 0x2), ("UERcvd", 0x4), ("MultUERcvd", 0x8),
    ("FirstFatal", 0x10), ("NonFatalMsg", 0x20), ("FatalMsg", 0x40),
)  # fmt: skip
#: ACS capability and control bits (the control register enables what the capability offers)
ACS_FEATURES = (
    ("SrcValid", 0x1), ("TransBlk", 0x2), ("ReqRedir", 0x4), ("CmpltRedir", 0x8),
    ("UpstreamFwd", 0x10), ("EgressCtrl", 0x20), ("DirectTrans", 0x40),
)  # fmt: skip
_DPC_CAP = (("RPExt", 0x20), ("PoisonedTLP", 0x40), ("SwTrigger", 0x80), ("DL_ActiveErr", 0x1000))
_DPC_CTL = (
    ("Cmpl", 0x4), ("INT", 0x8), ("ErrCor", 0x10), ("PoisonedTLP", 0x20), ("SwTrigger", 0x40),
    ("DL_ActiveErr", 0x80),
)  # fmt: skip
_DPC_STA = (("Trigger", 0x1), ("INT", 0x8), ("RPBusy", 0x10))
_IOV_CTL = (
    ("Enable", 0x1), ("Migration", 0x2), ("Interrupt", 0x4), ("MSE", 0x8),
    ("ARIHierarchy", 0x10), ("10BitTagReq", 0x20),
)  # fmt: skip


@attrs.frozen
class AerRoot:
    """Root Error Command, Status and Error Source (root ports and event collectors)."""

    command: Flags
    status: Flags
    interrupt_message_number: int
    correctable_source: int
    uncorrectable_source: int


@attrs.frozen
class Aer:
    uncorrectable_status: Flags
    uncorrectable_mask: Flags
    uncorrectable_severity: Flags
    correctable_status: Flags
    correctable_mask: Flags
    first_error_pointer: int
    capabilities: Flags  # Advanced Error Capabilities and Control
    header_log: tuple[int, int, int, int]
    root: AerRoot | None


@attrs.frozen
class Dpc:
    interrupt_message_number: int
    rp_pio_log_size: int
    capabilities: Flags
    trigger_enable: int
    control: Flags
    trigger_reason: int
    trigger_reason_extension: int
    rp_pio_first_error_pointer: int
    status: Flags
    source_id: int


@attrs.frozen
class SerialNumber:
    serial: int


@attrs.frozen
class Acs:
    capabilities: Flags
    egress_vector_size: int
    control: Flags


@attrs.frozen
class Ari:
    capabilities: Flags  # MFVC, ACS function groups
    next_function: int
    control: Flags
    function_group: int


@attrs.frozen
class Ats:
    invalidate_queue_depth: int
    enabled: bool
    smallest_translation_unit: int


@attrs.frozen
class Pri:
    control: Flags
    status: Flags
    capacity: int  # outstanding page requests supported
    allocation: int  # outstanding page requests allowed


@attrs.frozen
class Pasid:
    capabilities: Flags  # Exec, Priv
    max_width: int
    control: Flags  # Enable, Exec, Priv


@attrs.frozen
class SrIov:
    """SR-IOV: how many VFs the PF can have and where they appear."""

    capabilities: Flags  # Migration, 10BitTagReq
    migration_interrupt_message_number: int
    control: Flags
    status: Flags
    initial_vfs: int
    total_vfs: int
    num_vfs: int
    function_dependency_link: int
    first_vf_offset: int
    vf_stride: int
    vf_device_id: int
    supported_page_sizes: int
    system_page_size: int
    vf_bars: tuple[int, ...]  # the six raw VF BAR registers
    migration_state_offset: int
    migration_state_bir: int


@attrs.frozen
class VendorExtended:
    """Vendor-Specific Extended Capability: the vendor's id, revision and length of it."""

    vsec_id: int
    revision: int
    length: int


@attrs.frozen
class DesignatedVendor:
    """Designated Vendor-Specific: a structure another body (CXL, ...) defines, by vendor id."""

    vendor_id: int
    revision: int
    length: int
    dvsec_id: int


def _decode_aer(data: bytes, where: int, port_type: int | None) -> Aer:
    cap = u32(data, where + 0x18)
    root = None
    if port_type in (ROOT_PORT, ROOT_COMPLEX_EVENT_COLLECTOR) and where + 0x38 <= len(data):
        status = u32(data, where + 0x30)
        root = AerRoot(
            command=flags(u32(data, where + 0x2C), _AER_ROOT_CMD),
            status=flags(status, _AER_ROOT_STA),
            interrupt_message_number=(status >> 27) & 0x1F,
            correctable_source=u16(data, where + 0x34),
            uncorrectable_source=u16(data, where + 0x36),
        )
    log = where + 0x1C
    return Aer(
        uncorrectable_status=flags(u32(data, where + 0x04), UNCORRECTABLE_ERRORS),
        uncorrectable_mask=flags(u32(data, where + 0x08), UNCORRECTABLE_ERRORS),
        uncorrectable_severity=flags(u32(data, where + 0x0C), UNCORRECTABLE_ERRORS),
        correctable_status=flags(u32(data, where + 0x10), CORRECTABLE_ERRORS),
        correctable_mask=flags(u32(data, where + 0x14), CORRECTABLE_ERRORS),
        first_error_pointer=cap & 0x1F,
        capabilities=flags(cap, _AER_CAP),
        header_log=(u32(data, log), u32(data, log + 4), u32(data, log + 8), u32(data, log + 12)),
        root=root,
    )


def _decode_dpc(data: bytes, where: int, port_type: int | None) -> Dpc:
    cap, ctl, sta = u16(data, where + 4), u16(data, where + 6), u16(data, where + 8)
    return Dpc(
        interrupt_message_number=cap & 0x1F,
        rp_pio_log_size=(cap >> 8) & 0xF,
        capabilities=flags(cap, _DPC_CAP),
        trigger_enable=ctl & 0x3,
        control=flags(ctl, _DPC_CTL),
        trigger_reason=(sta >> 1) & 0x3,
        trigger_reason_extension=(sta >> 5) & 0x3,
        rp_pio_first_error_pointer=(sta >> 8) & 0x1F,
        status=flags(sta, _DPC_STA),
        source_id=u16(data, where + 10),
    )


def _decode_dsn(data: bytes, where: int, port_type: int | None) -> SerialNumber:
    return SerialNumber(serial=u64(data, where + 4))


def _decode_acs(data: bytes, where: int, port_type: int | None) -> Acs:
    cap = u16(data, where + 4)
    return Acs(flags(cap, ACS_FEATURES), cap >> 8, flags(u16(data, where + 6), ACS_FEATURES))


def _decode_ari(data: bytes, where: int, port_type: int | None) -> Ari:
    cap, ctl = u16(data, where + 4), u16(data, where + 6)
    groups = (("MFVC", 0x1), ("ACS", 0x2))
    return Ari(flags(cap, groups), cap >> 8, flags(ctl, groups), (ctl >> 4) & 0x7)


def _decode_ats(data: bytes, where: int, port_type: int | None) -> Ats:
    cap, ctl = u16(data, where + 4), u16(data, where + 6)
    return Ats(cap & 0x1F, bool(ctl & 0x8000), ctl & 0x1F)


def _decode_pri(data: bytes, where: int, port_type: int | None) -> Pri:
    return Pri(
        control=flags(u16(data, where + 4), (("Enable", 0x1), ("Reset", 0x2))),
        status=flags(u16(data, where + 6), (("RF", 0x1), ("UPRGI", 0x2), ("Stopped", 0x100))),
        capacity=u32(data, where + 8),
        allocation=u32(data, where + 12),
    )


def _decode_pasid(data: bytes, where: int, port_type: int | None) -> Pasid:
    cap = u16(data, where + 4)
    return Pasid(
        capabilities=flags(cap, (("Exec", 0x2), ("Priv", 0x4))),
        max_width=(cap >> 8) & 0x1F,
        control=flags(u16(data, where + 6), (("Enable", 0x1), ("Exec", 0x2), ("Priv", 0x4))),
    )


def _decode_sriov(data: bytes, where: int, port_type: int | None) -> SrIov:
    cap = u32(data, where + 0x04)
    state = u32(data, where + 0x3C)
    return SrIov(
        capabilities=flags(cap, (("Migration", 0x1), ("10BitTagReq", 0x4))),
        migration_interrupt_message_number=cap >> 21,
        control=flags(u16(data, where + 0x08), _IOV_CTL),
        status=flags(u16(data, where + 0x0A), (("Migration", 0x1),)),
        initial_vfs=u16(data, where + 0x0C),
        total_vfs=u16(data, where + 0x0E),
        num_vfs=u16(data, where + 0x10),
        function_dependency_link=data[where + 0x12],
        first_vf_offset=u16(data, where + 0x14),
        vf_stride=u16(data, where + 0x16),
        vf_device_id=u16(data, where + 0x1A),
        supported_page_sizes=u32(data, where + 0x1C),
        system_page_size=u32(data, where + 0x20),
        vf_bars=tuple(u32(data, where + 0x24 + 4 * i) for i in range(6)),
        migration_state_offset=state & ~0x7,
        migration_state_bir=state & 0x7,
    )


def _decode_vendor(data: bytes, where: int, port_type: int | None) -> VendorExtended:
    header = u32(data, where + 4)
    return VendorExtended(header & 0xFFFF, (header >> 16) & 0xF, header >> 20)


def _decode_dvsec(data: bytes, where: int, port_type: int | None) -> DesignatedVendor:
    header = u32(data, where + 4)
    return DesignatedVendor(
        header & 0xFFFF, (header >> 16) & 0xF, header >> 20, u16(data, where + 8)
    )


ExtendedDecoder = Callable[[bytes, int, int | None], object]

#: decoder and the bytes from the capability's start it reads (lspci's reach)
EXTENDED_DECODERS: Mapping[int, tuple[ExtendedDecoder, int]] = {
    EXT_AER: (_decode_aer, 0x2C),
    EXT_DPC: (_decode_dpc, 0x0C),
    EXT_DSN: (_decode_dsn, 0x0C),
    EXT_ACS: (_decode_acs, 0x08),
    EXT_ARI: (_decode_ari, 0x08),
    EXT_ATS: (_decode_ats, 0x08),
    EXT_PRI: (_decode_pri, 0x10),
    EXT_PASID: (_decode_pasid, 0x08),
    EXT_SRIOV: (_decode_sriov, 0x40),
    EXT_VNDR: (_decode_vendor, 0x08),
    EXT_DVSEC: (_decode_dvsec, 0x0C),
}
