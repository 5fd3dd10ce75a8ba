"""PCI Express extended capabilities for links, power, timing and topology:
LTR, L1 PM Substates, PTM, Secondary PCIe, TPH, Resizable BAR, DOE, Virtual Channel,
Root Complex Link, RCEC association and Multicast.

Same contract as :mod:`vmstate.pci.extended`: each decoder reads only inside the
size :data:`LINK_DECODERS` gives it, or walks its own entries with a bound.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from vmstate.pci.extended import ExtendedDecoder
from vmstate.pci.flags import Flags, flags
from vmstate.pci.registers import (
    EXT_DOE,
    EXT_L1PM,
    EXT_LTR,
    EXT_MCAST,
    EXT_PTM,
    EXT_RCEC,
    EXT_RCLINK,
    EXT_REBAR,
    EXT_SECPCI,
    EXT_TPH,
    EXT_VC,
    EXT_VC2,
    EXT_VF_REBAR,
    u16,
    u32,
    u64,
)

_L1PM_CAP = (
    ("PCI-PM_L1.2", 0x1), ("PCI-PM_L1.1", 0x2), ("ASPM_L1.2", 0x4), ("ASPM_L1.1", 0x8),
    ("L1_PM_Substates", 0x10),
)  # fmt: skip
_L1PM_CTL1 = (("PCI-PM_L1.2", 0x1), ("PCI-PM_L1.1", 0x2), ("ASPM_L1.2", 0x4), ("ASPM_L1.1", 0x8))
#: DOE status bits; the spec puts Error at bit 2 (lspci 3.9 tests 0x3, a slip)
_DOE_STA = (("Busy", 0x1), ("IntSta", 0x2), ("Error", 0x4), ("ObjectReady", 0x80000000))


def ltr_ns(value: int) -> int:
    """A 10-bit latency value scaled by 32**scale nanoseconds (LTR and L1 PM thresholds)."""
    return (value & 0x3FF) * (1 << (5 * ((value >> 10) & 0x7)))


def _power_on_us(scale: int, value: int) -> int | None:
    """T_POWER_ON: scale 0, 1, 2 = 2, 10, 100 us units; 3 is reserved (None)."""
    return value * (2, 10, 100)[scale] if scale < 3 else None


@attrs.frozen
class Ltr:
    max_snoop_latency_ns: int
    max_no_snoop_latency_ns: int


@attrs.frozen
class L1PmSubstates:
    capabilities: Flags
    port_common_mode_restore_time_us: int
    port_t_power_on_us: int | None  # None: reserved scale
    control1: Flags
    t_common_mode_us: int
    ltr_l12_threshold_ns: int | None  # None: reserved scale
    t_power_on_us: int | None


@attrs.frozen
class Ptm:
    capabilities: Flags  # Requester, Responder, Root
    clock_granularity_ns: int  # 0 unimplemented, 255 greater than 254 ns
    control: Flags  # Enabled, RootSelected
    effective_granularity_ns: int  # 0 unknown, 255 greater than 254 ns


@attrs.frozen
class SecondaryExpress:
    link_control3: Flags
    lane_error_status: int  # a bit per lane


@attrs.frozen
class Tph:
    capabilities: Flags  # interrupt vector mode, device specific mode, extended requester
    steering_table_location: int  # 0 none, 1 in this capability, 2 in the MSI-X table


@attrs.frozen
class ResizableBarEntry:
    bar: int
    current_size: int  # log2 of the size in MB
    supported_sizes: tuple[int, ...]  # log2 of each supported size in MB


@attrs.frozen
class ResizableBar:
    entries: tuple[ResizableBarEntry, ...]
    bar_count: int  # from the first control register; lspci stops if not 1-6
    unreadable: bool  # an entry ran past the end of the config space


@attrs.frozen
class Doe:
    capabilities: Flags  # IntSup
    interrupt_message_number: int
    control: Flags  # IntEn
    status: Flags


@attrs.frozen
class VcResource:
    arbitration_table_offset: int
    max_time_slots: int
    reject_snoop_transactions: bool
    arbitration_capabilities: int  # bit per arbitration scheme
    enabled: bool
    vc_id: int
    arbitration_select: int
    tc_vc_map: int
    negotiation_pending: bool
    arbitration_in_progress: bool


@attrs.frozen
class VirtualChannel:
    low_priority_extended_vcs: int
    reference_clock: int
    port_arbitration_table_entry_bits: int
    arbitration_capabilities: int
    arbitration_table_offset: int
    arbitration_select: int
    arbitration_in_progress: bool
    resources: tuple[VcResource | None, ...]  # None: past the end of the config space


@attrs.frozen
class RcLinkEntry:
    target_port: int
    target_component: int
    associated_rcrb: bool
    config_space: bool  # the address is a configuration-space address, not memory
    valid: bool
    address: int


@attrs.frozen
class RcLink:
    port_number: int
    component_id: int
    element_type: int
    links: tuple[RcLinkEntry, ...]
    unreadable: bool


@attrs.frozen
class RcecAssociation:
    rciep_bitmap: int  # bit per device number on the collector's bus
    bus_numbers: tuple[int, int] | None  # next, last; version 2 and later


@attrs.frozen
class Multicast:
    max_groups: int
    window_size: int
    ecrc_regeneration: bool
    num_groups: int
    enabled: bool
    base_address: int  # the BAR with its index position in the low 6 bits
    receive: int
    block_all: int
    block_untranslated: int
    overlay: int  # overlay BAR with its size in the low 6 bits


def _decode_ltr(data: bytes, where: int, port_type: int | None) -> Ltr:
    return Ltr(ltr_ns(u16(data, where + 4)), ltr_ns(u16(data, where + 6)))


def _decode_l1pm(data: bytes, where: int, port_type: int | None) -> L1PmSubstates:
    cap, ctl1, ctl2 = u32(data, where + 4), u32(data, where + 8), u32(data, where + 12)
    scale = (ctl1 >> 29) & 0x7
    return L1PmSubstates(
        capabilities=flags(cap, _L1PM_CAP),
        port_common_mode_restore_time_us=(cap >> 8) & 0xFF,
        port_t_power_on_us=_power_on_us((cap >> 16) & 0x3, (cap >> 19) & 0x1F),
        control1=flags(ctl1, _L1PM_CTL1),
        t_common_mode_us=(ctl1 >> 8) & 0xFF,
        ltr_l12_threshold_ns=((ctl1 >> 16) & 0x3FF) * (1 << (5 * scale)) if scale <= 5 else None,
        t_power_on_us=_power_on_us(ctl2 & 0x3, (ctl2 >> 3) & 0x1F),
    )


def _decode_ptm(data: bytes, where: int, port_type: int | None) -> Ptm:
    cap, ctl = u32(data, where + 4), u32(data, where + 8)
    return Ptm(
        capabilities=flags(cap, (("Requester", 0x1), ("Responder", 0x2), ("Root", 0x4))),
        clock_granularity_ns=(cap >> 8) & 0xFF,
        control=flags(ctl, (("Enabled", 0x1), ("RootSelected", 0x2))),
        effective_granularity_ns=(ctl >> 8) & 0xFF,
    )


def _decode_secondary(data: bytes, where: int, port_type: int | None) -> SecondaryExpress:
    control = u16(data, where + 4)
    table = (("LnkEquIntrruptEn", 0x2), ("PerformEqu", 0x1))
    return SecondaryExpress(flags(control, table), u16(data, where + 8))


def _decode_tph(data: bytes, where: int, port_type: int | None) -> Tph:
    cap = u32(data, where + 4)
    table = (("IntVec", 0x2), ("DevSpec", 0x4), ("ExtReq", 0x100))
    return Tph(flags(cap, table), (cap >> 9) & 0x3)


def _decode_rebar(data: bytes, where: int, port_type: int | None) -> ResizableBar:
    entries: list[ResizableBarEntry] = []
    count = 1
    at = where + 4
    while len(entries) < count:
        if at + 8 > len(data):
            return ResizableBar(tuple(entries), count, True)
        sizes, control = u32(data, at) >> 4, u32(data, at + 4)
        if not entries:
            count = (control >> 5) & 0x7
            if not 1 <= count <= 6:
                return ResizableBar((), count, False)
        supported = [i for i in range(28) if sizes & (1 << i)]
        supported += [i + 28 for i in range(16) if (control >> 16) & (1 << i)]
        entries.append(ResizableBarEntry(control & 0x7, (control >> 8) & 0x3F, tuple(supported)))
        at += 8
    return ResizableBar(tuple(entries), count, False)


def _decode_doe(data: bytes, where: int, port_type: int | None) -> Doe:
    cap = u32(data, where + 4)
    return Doe(
        capabilities=flags(cap, (("IntSup", 0x1),)),
        interrupt_message_number=(cap >> 1) & 0x7FF,
        control=flags(u32(data, where + 8), (("IntEn", 0x2),)),
        status=flags(u32(data, where + 12), _DOE_STA),
    )


def _decode_vc(data: bytes, where: int, port_type: int | None) -> VirtualChannel:
    cr1, cr2 = u32(data, where + 4), u32(data, where + 8)
    control, status = u16(data, where + 12), u16(data, where + 14)
    resources: list[VcResource | None] = []
    for i in range((cr1 & 0x7) + 1):
        at = where + 16 + 12 * i
        if at + 12 > len(data):
            resources.append(None)
            continue
        rcap, rctrl, rstatus = u32(data, at), u32(data, at + 4), u16(data, at + 10)
        resources.append(
            VcResource(
                arbitration_table_offset=rcap >> 24,
                max_time_slots=((rcap >> 16) & 0x7F) + 1,
                reject_snoop_transactions=bool(rcap & 0x8000),
                arbitration_capabilities=rcap & 0xFF,
                enabled=bool(rctrl & 0x80000000),
                vc_id=(rctrl >> 24) & 0x7,
                arbitration_select=(rctrl >> 17) & 0x7,
                tc_vc_map=rctrl & 0xFF,
                negotiation_pending=bool(rstatus & 0x2),
                arbitration_in_progress=bool(rstatus & 0x1),
            )
        )
    return VirtualChannel(
        low_priority_extended_vcs=(cr1 >> 4) & 0x7,
        reference_clock=(cr1 >> 8) & 0x3,
        port_arbitration_table_entry_bits=1 << ((cr1 >> 10) & 0x3),
        arbitration_capabilities=cr2 & 0xFF,
        arbitration_table_offset=cr2 >> 24,
        arbitration_select=(control >> 1) & 0x7,
        arbitration_in_progress=bool(status & 0x1),
        resources=tuple(resources),
    )


def _decode_rclink(data: bytes, where: int, port_type: int | None) -> RcLink:
    esd = u32(data, where + 4)
    links: list[RcLinkEntry] = []
    for i in range((esd >> 8) & 0xFF):
        at = where + 16 + 16 * i
        if at + 16 > len(data):
            return RcLink(esd >> 24, (esd >> 16) & 0xFF, esd & 0xFF, tuple(links), True)
        desc = u32(data, at)
        links.append(
            RcLinkEntry(
                target_port=desc >> 24,
                target_component=(desc >> 16) & 0xFF,
                associated_rcrb=bool(desc & 0x4),
                config_space=bool(desc & 0x2),
                valid=bool(desc & 0x1),
                address=u64(data, at + 8),
            )
        )
    return RcLink(esd >> 24, (esd >> 16) & 0xFF, esd & 0xFF, tuple(links), False)


def _decode_rcec(data: bytes, where: int, port_type: int | None) -> RcecAssociation:
    version = (u32(data, where) >> 16) & 0xF
    busn = u32(data, where + 8)
    buses = ((busn >> 8) & 0xFF, (busn >> 16) & 0xFF) if version >= 2 else None
    return RcecAssociation(u32(data, where + 4), buses)


def _decode_multicast(data: bytes, where: int, port_type: int | None) -> Multicast:
    cap, ctl = u16(data, where + 4), u16(data, where + 6)
    return Multicast(
        max_groups=(cap & 0x3F) + 1,
        window_size=(cap >> 8) & 0x3F,
        ecrc_regeneration=bool(cap & 0x8000),
        num_groups=(ctl & 0x3F) + 1,
        enabled=bool(ctl & 0x8000),
        base_address=u64(data, where + 0x08),
        receive=u64(data, where + 0x10),
        block_all=u64(data, where + 0x18),
        block_untranslated=u64(data, where + 0x20),
        overlay=u64(data, where + 0x28),
    )


#: decoder and the bytes from the capability's start it reads (lspci's reach)
LINK_DECODERS: Mapping[int, tuple[ExtendedDecoder, int]] = {
    EXT_LTR: (_decode_ltr, 0x08),
    EXT_L1PM: (_decode_l1pm, 0x10),
    EXT_PTM: (_decode_ptm, 0x0C),
    EXT_SECPCI: (_decode_secondary, 0x10),
    EXT_TPH: (_decode_tph, 0x08),
    EXT_REBAR: (_decode_rebar, 0x04),
    EXT_VF_REBAR: (_decode_rebar, 0x04),
    EXT_DOE: (_decode_doe, 0x18),
    EXT_VC: (_decode_vc, 0x1C),
    EXT_VC2: (_decode_vc, 0x1C),
    EXT_RCLINK: (_decode_rclink, 0x10),
    EXT_RCEC: (_decode_rcec, 0x0C),
    EXT_MCAST: (_decode_multicast, 0x34),
}
