"""Standard capabilities as ``lspci -vvv`` prints them (pciutils' ls-caps.c).

:func:`render_capability` gives the text after ``Capabilities: [xx]`` and the
lines lspci indents under it; the PCI Express capability has its own module.
"""

from __future__ import annotations

from vmstate.pci.capabilities import (
    AdvancedFeatures,
    Agp,
    DebugPort,
    EnhancedAllocation,
    HyperTransport,
    Msi,
    MsiX,
    PciX,
    PowerManagement,
    SataHba,
    SlotId,
    SubsystemId,
    VendorSpecific,
)
from vmstate.pci.express import Express
from vmstate.pci.flags import sign
from vmstate.pci.ids import PciIds
from vmstate.pci.model import Capability, ConfigSpace, PciAddress
from vmstate.pci.registers import CAP_VPD
from vmstate.pci.render_express import render_express
from vmstate.pci.render_ht import render_ht

#: capabilities lspci names without decoding them
FIXED_TEXT = {
    0x00: "Null",
    0x06: "CompactPCI hot-swap <?>",
    0x0B: "CompactPCI central resource control <?>",
    0x0C: "Hot-plug capable",
    0x0E: "AGP3 <?>",
    0x0F: "Secure device <?>",
}
_EA_BEI = {
    **{i: f"BAR {i}" for i in range(6)}, 6: "resource behind function", 7: "not indicated",
    8: "expansion ROM", **{i: f"VF-BAR {i - 9}" for i in range(9, 15)},
}  # fmt: skip
_EA_PROPERTIES = {
    0x00: "memory space, non-prefetchable", 0x01: "memory space, prefetchable",
    0x02: "I/O space", 0x03: "VF memory space, prefetchable",
    0x04: "VF memory space, non-prefetchable",
    0x05: "allocation behind bridge, non-prefetchable memory",
    0x06: "allocation behind bridge, prefetchable memory",
    0x07: "allocation behind bridge, I/O space",
    0xFD: "memory space resource unavailable for use",
    0xFE: "I/O space resource unavailable for use",
}  # fmt: skip
_PCIX_OUTSTANDING = (1, 2, 3, 4, 8, 12, 16, 32)


def render_capability(
    cap: Capability, space: ConfigSpace, address: PciAddress | None, names: PciIds
) -> list[str]:
    """The summary after ``[xx]``, then the detail lines."""
    body = cap.body
    if isinstance(body, PowerManagement):
        return _pm(body)
    if isinstance(body, Msi):
        return _msi(body)
    if isinstance(body, MsiX):
        return [
            f"MSI-X: Enable{sign(body.enabled)} Count={body.table_size} Masked{sign(body.function_mask)}",
            f"\t\tVector table: BAR={body.table_bir} offset={body.table_offset:08x}",
            f"\t\tPBA: BAR={body.pba_bir} offset={body.pba_offset:08x}",
        ]
    if isinstance(body, Express):
        return render_express(body, space, address)
    if isinstance(body, VendorSpecific):
        return _vendor(body)
    if isinstance(body, SlotId):
        return [
            f"Slot ID: {body.expansion_slots} slots, First{sign(body.first_in_chassis)}, "
            f"chassis {body.chassis:02x}"
        ]
    if isinstance(body, SubsystemId):
        h = space.header
        return [
            f"Subsystem: {names.subsystem_name(h.vendor_id, h.device_id, body.vendor_id, body.device_id)}"
        ]
    if isinstance(body, SataHba):
        return [f"SATA HBA v{body.major}.{body.minor}{_sata_bar(body)}"]
    if isinstance(body, AdvancedFeatures):
        return [
            "PCI Advanced Features",
            f"\t\tAFCap: {body.capabilities.text()}",
            f"\t\tAFCtrl: {body.control.text()}",
            f"\t\tAFStatus: {body.status.text()}",
        ]
    if isinstance(body, DebugPort):
        return [f"Debug port: BAR={body.bar} offset={body.offset:04x}"]
    if isinstance(body, Agp):
        return _agp(body)
    if isinstance(body, PciX):
        return _pcix(body)
    if isinstance(body, HyperTransport):
        return render_ht(body)
    if isinstance(body, EnhancedAllocation):
        return _ea(body)
    if body is None and cap.id in _FROM_WORD:
        return _FROM_WORD[cap.id](cap.word)
    if cap.id == CAP_VPD:
        return ["Vital Product Data", "\t\tNot readable"]  # VPD is read through the device
    if cap.id in FIXED_TEXT:
        return [FIXED_TEXT[cap.id]]
    return [f"Capability ID {cap.id:#x} [{cap.word:04x}]"]


def _pm_flags(pmc: int) -> list[str]:
    """PM's version and flags: what lspci shows from the capability's first dword alone."""
    pme = ",".join(
        f"{state}{sign(pmc & (0x800 << i))}"
        for i, state in enumerate(("D0", "D1", "D2", "D3hot", "D3cold"))
    )
    aux = (0, 55, 100, 160, 220, 270, 320, 375)[(pmc >> 6) & 0x7]
    return [
        f"Power Management version {pmc & 0x7}",
        f"\t\tFlags: PMEClk{sign(pmc & 0x8)} DSI{sign(pmc & 0x20)} D1{sign(pmc & 0x200)} "
        f"D2{sign(pmc & 0x400)} AuxCurrent={aux}mA PME({pme})",
    ]


#: what lspci prints for a capability whose registers run past the end of config space:
#: the summary its first dword gives (the decoder reported a cap-truncated problem)
_FROM_WORD = {
    0x01: _pm_flags,
    0x05: lambda w: [
        f"MSI: Enable{sign(w & 0x1)} Count={1 << ((w >> 4) & 0x7)}/{1 << ((w >> 1) & 0x7)} "
        f"Maskable{sign(w & 0x100)} 64bit{sign(w & 0x80)}"
    ],
    0x09: lambda w: [f"Vendor Specific Information: Len={w & 0xFF:02x} <?>"],
    0x11: lambda w: [
        f"MSI-X: Enable{sign(w & 0x8000)} Count={(w & 0x7FF) + 1} Masked{sign(w & 0x4000)}"
    ],
}


def _pm(pm: PowerManagement) -> list[str]:
    pme = ",".join(
        f"{state}{sign(pm.pme_support & (1 << i))}"
        for i, state in enumerate(("D0", "D1", "D2", "D3hot", "D3cold"))
    )
    lines = [
        f"Power Management version {pm.version}",
        f"\t\tFlags: PMEClk{sign(pm.pme_clock)} DSI{sign(pm.dsi)} D1{sign(pm.d1)} D2{sign(pm.d2)} "
        f"AuxCurrent={pm.aux_current_ma}mA PME({pme})",
        f"\t\tStatus: D{pm.power_state} NoSoftRst{sign(pm.no_soft_reset)} "
        f"PME-Enable{sign(pm.pme_enable)} DSel={pm.data_select} DScale={pm.data_scale} "
        f"PME{sign(pm.pme_status)}",
    ]
    if pm.bridge_extensions:
        b = pm.bridge_extensions
        lines.append(f"\t\tBridge: PM{sign(b & 0x80)} B3{sign(not b & 0x40)}")
    return lines


def _msi(msi: Msi) -> list[str]:
    lines = [
        f"MSI: Enable{sign(msi.enabled)} Count={msi.vectors_enabled}/{msi.vectors} "
        f"Maskable{sign(msi.per_vector_masking)} 64bit{sign(msi.is_64bit)}",
        f"\t\tAddress: {msi.address:0{16 if msi.is_64bit else 8}x}  Data: {msi.data:04x}",
    ]
    if msi.mask_bits is not None:
        lines.append(f"\t\tMasking: {msi.mask_bits:08x}  Pending: {msi.pending_bits:08x}")
    return lines


def _vendor(body: VendorSpecific) -> list[str]:
    virtio = body.virtio
    if virtio is None:
        return [f"Vendor Specific Information: Len={body.length:02x} <?>"]
    where = f"\t\tBAR={virtio.bar} offset={virtio.offset:08x} size={virtio.length:08x}"
    if virtio.notify_off_multiplier is not None:
        where += f" multiplier={virtio.notify_off_multiplier:08x}"
    return [f"Vendor Specific Information: VirtIO: {virtio.type_name}", where]


def _sata_bar(body: SataHba) -> str:
    if 4 <= body.bar_location <= 9:
        return f" BAR{body.bar_location - 4} Offset={body.bar_offset:08x}"
    if body.bar_location == 15:
        return " InCfgSpace"
    return f" BAR??{body.bar_location}"


def _agp_rate(rate: int, agp3: bool) -> str:
    rates = [f"x{1 << (i + 2 * agp3)}" for i in range(3) if rate & (1 << i)]
    return ",".join(rates) or "<none>"


def _agp(agp: Agp) -> list[str]:
    st, cmd = agp.status, agp.command
    agp3 = agp.major >= 3 and bool(st & 0x8)
    return [
        f"AGP version {agp.major:x}.{agp.minor:x}",
        f"\t\tStatus: RQ={(st >> 24) + 1} Iso{sign(st & 0x10000)} ArqSz={(st >> 13) & 0x7} "
        f"Cal={(st >> 10) & 0x7} SBA{sign(st & 0x200)} ITACoh{sign(st & 0x100)} "
        f"GART64{sign(st & 0x80)} HTrans{sign(st & 0x40)} 64bit{sign(st & 0x20)} "
        f"FW{sign(st & 0x10)} AGP3{sign(st & 0x8)} Rate={_agp_rate(st & 7, agp3)}",
        f"\t\tCommand: RQ={(cmd >> 24) + 1} ArqSz={(cmd >> 13) & 0x7} Cal={(cmd >> 10) & 0x7} "
        f"SBA{sign(cmd & 0x200)} AGP{sign(cmd & 0x100)} GART64{sign(cmd & 0x80)} "
        f"64bit{sign(cmd & 0x20)} FW{sign(cmd & 0x10)} Rate={_agp_rate(cmd & 7, agp3)}",
    ]


def _pcix(p: PciX) -> list[str]:
    st = p.status
    dev = f"Dev={(st >> 8) & 0xFF:02x}:{(st >> 3) & 0x1F:02x}.{st & 0x7}"
    common = (
        f"64bit{sign(st & 0x10000)} 133MHz{sign(st & 0x20000)} SCD{sign(st & 0x40000)} "
        f"USC{sign(st & 0x80000)}"
    )
    if not p.bridge:
        cmd = p.command
        return [
            "PCI-X non-bridge device",
            f"\t\tCommand: DPERE{sign(cmd & 0x1)} ERO{sign(cmd & 0x2)} "
            f"RBC={1 << (9 + ((cmd >> 2) & 0x3))} OST={_PCIX_OUTSTANDING[(cmd >> 4) & 0x7]}",
            f"\t\tStatus: {dev} {common} DC={'bridge' if st & 0x100000 else 'simple'} "
            f"DMMRBC={1 << (9 + ((st >> 21) & 0x3))} DMOST={_PCIX_OUTSTANDING[(st >> 23) & 0x7]} "
            f"DMCRS={1 << (3 + ((st >> 26) & 0x7))} RSCEM{sign(st & 0x20000000)} "
            f"266MHz{sign(st & 0x40000000)} 533MHz{sign(st & 0x80000000)}",
        ]
    sec = p.command
    freq = ("conv", "66MHz", "100MHz", "133MHz", "?4", "?5", "?6", "?7")[(sec >> 6) & 0x7]
    up, down = p.upstream_split_control or 0, p.downstream_split_control or 0
    return [
        "PCI-X bridge device",
        f"\t\tSecondary Status: 64bit{sign(sec & 0x1)} 133MHz{sign(sec & 0x2)} SCD{sign(sec & 0x4)} "
        f"USC{sign(sec & 0x8)} SCO{sign(sec & 0x10)} SRD{sign(sec & 0x20)} Freq={freq}",
        f"\t\tStatus: {dev} {common} SCO{sign(st & 0x100000)} SRD{sign(st & 0x200000)}",
        f"\t\tUpstream: Capacity={up & 0xFFFF} CommitmentLimit={up >> 16}",
        f"\t\tDownstream: Capacity={down & 0xFFFF} CommitmentLimit={down >> 16}",
    ]


def _ea(ea: EnhancedAllocation) -> list[str]:
    first = f"Enhanced Allocation (EA): NumEntries={ea.num_entries}"
    if ea.fixed_secondary_bus is not None:
        first += f", secondary={ea.fixed_secondary_bus}, subordinate={ea.fixed_subordinate_bus}"
    lines = [first]
    for i, e in enumerate(ea.entries):
        base = f"{e.base >> 32:x}{e.base & 0xFFFFFFFF:08x}" if e.base_is_64bit else f"{e.base:08x}"
        high = e.max_offset >> 32
        top = (
            f"{high:x}{e.max_offset & 0xFFFFFFFF:08x}"
            if e.max_offset_is_64bit
            else f"{e.max_offset:08x}"
        )
        lines += [
            f"\t\tEntry {i}: Enable{sign(e.enabled)} Writable{sign(e.writable)} EntrySize={e.entry_size}",
            f"\t\t\t BAR Equivalent Indicator: {_EA_BEI.get(e.bar_equivalent, 'reserved')}",
            f"\t\t\t PrimaryProperties: {_ea_property(e.primary_properties, False)}",
            f"\t\t\t SecondaryProperties: {_ea_property(e.secondary_properties, True)}",
            f"\t\t\t Base: {base}",
            f"\t\t\t MaxOffset: {top}",
        ]
    return lines


def _ea_property(code: int, secondary: bool) -> str:
    if code == 0xFF:
        return (
            "entry unavailable for use, PrimaryProperties should be used"
            if secondary
            else "entry unavailable for use"
        )
    return _EA_PROPERTIES.get(code, f"[{code:02x}]")
