"""PCI Express extended capabilities as ``lspci -vvv`` prints them (pciutils' ls-ecaps.c).

:func:`render_extended` gives the text after ``Capabilities: [xxx vN]`` and the
lines lspci indents under it.
"""

from __future__ import annotations

from vmstate.pci.extended import (
    Acs,
    Aer,
    Ari,
    Ats,
    DesignatedVendor,
    Dpc,
    Pasid,
    Pri,
    SerialNumber,
    SrIov,
    VendorExtended,
)
from vmstate.pci.extended_link import (
    Doe,
    L1PmSubstates,
    Ltr,
    Multicast,
    Ptm,
    RcecAssociation,
    RcLink,
    ResizableBar,
    SecondaryExpress,
    Tph,
    VirtualChannel,
)
from vmstate.pci.flags import sign
from vmstate.pci.model import ConfigSpace, ExtendedCapability
from vmstate.pci.registers import (
    EXT_DOE,
    EXT_DVSEC,
    EXT_L1PM,
    EXT_PTM,
    EXT_VNDR,
)

#: what lspci prints for capabilities it names, with the name it uses
TITLES = {
    0x00: "Null", 0x01: "Advanced Error Reporting", 0x02: "Virtual Channel",
    0x04: "Power Budgeting <?>", 0x05: "Root Complex Link",
    0x06: "Root Complex Internal Link <?>",
    0x07: "Root Complex Event Collector Endpoint Association",
    0x08: "Multi-Function Virtual Channel <?>", 0x09: "Virtual Channel",
    0x0A: "Root Complex Register Block <?>", 0x0D: "Access Control Services",
    0x0E: "Alternative Routing-ID Interpretation (ARI)", 0x0F: "Address Translation Service (ATS)",
    0x10: "Single Root I/O Virtualization (SR-IOV)", 0x11: "Multi-Root I/O Virtualization <?>",
    0x12: "Multicast", 0x13: "Page Request Interface (PRI)", 0x15: "Physical Resizable BAR",
    0x16: "Dynamic Power Allocation <?>", 0x17: "Transaction Processing Hints",
    0x18: "Latency Tolerance Reporting", 0x19: "Secondary PCI Express",
    0x1A: "Protocol Multiplexing <?>", 0x1B: "Process Address Space ID (PASID)",
    0x1C: "LN Requester <?>", 0x1D: "Downstream Port Containment", 0x1E: "L1 PM Substates",
    0x1F: "Precision Time Measurement", 0x20: "PCI Express over M_PHY <?>",
    0x21: "FRS Queueing <?>", 0x22: "Readiness Time Reporting <?>",
    0x24: "Virtual Resizable BAR", 0x25: "Data Link Feature <?>",
    0x26: "Physical Layer 16.0 GT/s <?>", 0x27: "Lane Margining at the Receiver <?>",
    0x28: "Hierarchy ID <?>", 0x29: "Native PCIe Enclosure Management <?>",
    0x2E: "Data Object Exchange",
}  # fmt: skip
_VC_ARBITRATION = ("Fixed", "WRR32", "WRR64", "WRR128", "??4", "??5", "??6", "??7")
_VC_RESOURCE_ARBITRATION = ("Fixed", "WRR32", "WRR64", "WRR128", "TWRR128", "WRR256", "??6", "??7")
_TPH_TABLE = (
    "No steering table available",
    "Steering table in TPH capability structure",
    "Steering table in MSI-X table",
    "Reserved steering table location",
)


def render_extended(ext: ExtendedCapability, space: ConfigSpace) -> list[str]:
    """The summary after ``[xxx vN]``, then the detail lines."""
    body = ext.body
    if isinstance(body, SerialNumber):
        serial = "-".join(f"{b:02x}" for b in body.serial.to_bytes(8, "big"))
        return [f"Device Serial Number {serial}"]
    if isinstance(body, VendorExtended):
        return [
            f"Vendor Specific Information: ID={body.vsec_id:04x} Rev={body.revision} "
            f"Len={body.length:03x} <?>"
        ]
    if isinstance(body, DesignatedVendor):  # header only: lspci decodes CXL (vendor 1e98) further
        return [
            f"Designated Vendor-Specific: Vendor={body.vendor_id:04x} ID={body.dvsec_id:04x} "
            f"Rev={body.revision} Len={body.length} <?>"
        ]
    if ext.id == EXT_VNDR:
        return ["Vendor Specific Information: <unreadable>"]
    if ext.id == EXT_DVSEC:
        return ["Designated Vendor-Specific: <unreadable>"]
    title = TITLES.get(ext.id, f"Extended Capability ID {ext.id:#x}")
    details = _details(body, space, ext.offset)
    if body is None and ext.id in (EXT_L1PM, EXT_PTM, EXT_DOE):
        details = ["\t\t<unreadable>"]
    return [title, *details]


def _details(body: object, space: ConfigSpace, where: int) -> list[str]:
    if isinstance(body, Aer):
        return _aer(body)
    if isinstance(body, Dpc):
        return [
            f"\t\tDpcCap:\tINT Msg #{body.interrupt_message_number}, "
            f"{body.capabilities.text('RPExt', 'PoisonedTLP', 'SwTrigger')} "
            f"RP PIO Log {body.rp_pio_log_size}, {body.capabilities.text('DL_ActiveErr')}",
            f"\t\tDpcCtl:\tTrigger:{body.trigger_enable:x} {body.control.text()}",
            f"\t\tDpcSta:\t{body.status.text('Trigger')} Reason:{body.trigger_reason:02x} "
            f"{body.status.text('INT', 'RPBusy')} TriggerExt:{body.trigger_reason_extension:02x} "
            f"RP PIO ErrPtr:{body.rp_pio_first_error_pointer:02x}",
            f"\t\tSource:\t{body.source_id:04x}",
        ]
    if isinstance(body, Acs):
        return [f"\t\tACSCap:\t{body.capabilities.text()}", f"\t\tACSCtl:\t{body.control.text()}"]
    if isinstance(body, Ari):
        return [
            f"\t\tARICap:\t{body.capabilities.text()}, Next Function: {body.next_function}",
            f"\t\tARICtl:\t{body.control.text()}, Function Group: {body.function_group}",
        ]
    if isinstance(body, Ats):
        return [
            f"\t\tATSCap:\tInvalidate Queue Depth: {body.invalidate_queue_depth:02x}",
            f"\t\tATSCtl:\tEnable{sign(body.enabled)}, Smallest Translation Unit: "
            f"{body.smallest_translation_unit:02x}",
        ]
    if isinstance(body, Pri):
        return [
            f"\t\tPRICtl: {body.control.text()}",
            f"\t\tPRISta: {body.status.text()}",
            f"\t\tPage Request Capacity: {body.capacity:08x}, "
            f"Page Request Allocation: {body.allocation:08x}",
        ]
    if isinstance(body, Pasid):
        return [
            f"\t\tPASIDCap: {body.capabilities.text()}, Max PASID Width: {body.max_width:02x}",
            f"\t\tPASIDCtl: {body.control.text()}",
        ]
    if isinstance(body, SrIov):
        return _sriov(body)
    if isinstance(body, Ltr):
        return [
            f"\t\tMax snoop latency: {body.max_snoop_latency_ns}ns",
            f"\t\tMax no snoop latency: {body.max_no_snoop_latency_ns}ns",
        ]
    return _link_details(body, space, where)


def _link_details(body: object, space: ConfigSpace, where: int) -> list[str]:
    if isinstance(body, L1PmSubstates):
        return _l1pm(body)
    if isinstance(body, Ptm):
        return [
            f"\t\tPTMCap: Requester:{sign(body.capabilities['Requester'])} "
            f"Responder:{sign(body.capabilities['Responder'])} Root:{sign(body.capabilities['Root'])}",
            f"\t\tPTMClockGranularity: {_granularity(body.clock_granularity_ns, 'Unimplemented')}",
            f"\t\tPTMControl: Enabled:{sign(body.control['Enabled'])} "
            f"RootSelected:{sign(body.control['RootSelected'])}",
            f"\t\tPTMEffectiveGranularity: {_granularity(body.effective_granularity_ns, 'Unknown')}",
        ]
    if isinstance(body, SecondaryExpress):
        lanes = [str(i) for i in range(16) if body.lane_error_status & (1 << i)]
        errors = "LaneErr at lane: " + " ".join(lanes) if lanes else "0"
        return [f"\t\tLnkCtl3: {body.link_control3.text()}", f"\t\tLaneErrStat: {errors}"]
    if isinstance(body, Tph):
        lines = [
            f"\t\t{text}"
            for name, text in (
                ("IntVec", "Interrupt vector mode supported"),
                ("DevSpec", "Device specific mode supported"),
                ("ExtReq", "Extended requester support"),
            )
            if body.capabilities[name]
        ]
        return [*lines, f"\t\t{_TPH_TABLE[body.steering_table_location]}"]
    if isinstance(body, ResizableBar):
        return _rebar(body)
    if isinstance(body, Doe):
        lines = [f"\t\tDOECap: {body.capabilities.text()}"]
        if body.capabilities["IntSup"]:
            lines.append(f"\t\t\tInterrupt Message Number {body.interrupt_message_number:03x}")
        return [*lines, f"\t\tDOECtl: {body.control.text()}", f"\t\tDOESta: {body.status.text()}"]
    if isinstance(body, VirtualChannel):
        return _vc(body, where)
    if isinstance(body, RcLink):
        return _rclink(body)
    if isinstance(body, RcecAssociation):
        return _rcec(body)
    if isinstance(body, Multicast):
        return _multicast(body, space)
    return []


def _aer(aer: Aer) -> list[str]:
    c = aer.capabilities
    lines = [
        f"\t\tUESta:\t{aer.uncorrectable_status.text()}",
        f"\t\tUEMsk:\t{aer.uncorrectable_mask.text()}",
        f"\t\tUESvrt:\t{aer.uncorrectable_severity.text()}",
        f"\t\tCESta:\t{aer.correctable_status.text()}",
        f"\t\tCEMsk:\t{aer.correctable_mask.text()}",
        f"\t\tAERCap:\tFirst Error Pointer: {aer.first_error_pointer:02x}, "
        + c.text("ECRCGenCap", "ECRCGenEn", "ECRCChkCap", "ECRCChkEn"),
        "\t\t\t" + c.text("MultHdrRecCap", "MultHdrRecEn", "TLPPfxPres", "HdrLogCap"),
        "\t\tHeaderLog: " + " ".join(f"{dword:08x}" for dword in aer.header_log),
    ]
    root = aer.root
    if root is not None:
        s = root.status
        lines += [
            f"\t\tRootCmd: {root.command.text()}",
            "\t\tRootSta: " + s.text("CERcvd", "MultCERcvd", "UERcvd", "MultUERcvd"),
            "\t\t\t "
            + s.text("FirstFatal", "NonFatalMsg", "FatalMsg")
            + f" IntMsg {root.interrupt_message_number}",
            f"\t\tErrorSrc: ERR_COR: {root.correctable_source:04x} "
            f"ERR_FATAL/NONFATAL: {root.uncorrectable_source:04x}",
        ]
    return lines


def _sriov(s: SrIov) -> list[str]:
    lines = [
        f"\t\tIOVCap:\t{s.capabilities.text()} Interrupt Message Number: "
        f"{s.migration_interrupt_message_number:03x}",
        f"\t\tIOVCtl:\t{s.control.text()}",
        f"\t\tIOVSta:\t{s.status.text()}",
        f"\t\tInitial VFs: {s.initial_vfs}, Total VFs: {s.total_vfs}, Number of VFs: {s.num_vfs}, "
        f"Function Dependency Link: {s.function_dependency_link:02x}",
        f"\t\tVF offset: {s.first_vf_offset}, stride: {s.vf_stride}, Device ID: {s.vf_device_id:04x}",
        f"\t\tSupported Page Size: {s.supported_page_sizes:08x}, "
        f"System Page Size: {s.system_page_size:08x}",
    ]
    migration = s.migration_state_offset | s.migration_state_bir
    index = 0
    while index < len(s.vf_bars):
        raw = s.vf_bars[index]
        if raw in (0, 0xFFFFFFFF):
            index += 1
            continue
        is_64 = raw & 0x6 == 0x4
        at = f"{raw & ~0xF & 0xFFFFFFFF:08x}"
        if is_64:
            index += 1
            # past VF BAR5 lspci reads the next register, the migration state array offset
            high = s.vf_bars[index] if index < len(s.vf_bars) else migration
            at = f"{high:08x}{at}"
        lines.append(
            f"\t\tRegion {index - is_64}: Memory at {at} ({'32' if not raw & 0x6 else '64'}-bit, "
            f"{'' if raw & 0x8 else 'non-'}prefetchable)"
        )
        index += 1
    lines.append(
        f"\t\tVF Migration: offset: {s.migration_state_offset:08x}, BIR: {s.migration_state_bir:x}"
    )
    return lines


def _l1pm(b: L1PmSubstates) -> list[str]:
    lines = [f"\t\tL1SubCap: {b.capabilities.text()}"]
    l12 = b.capabilities["PCI-PM_L1.2"] or b.capabilities["ASPM_L1.2"]
    if l12:
        on = f"{b.port_t_power_on_us}us" if b.port_t_power_on_us is not None else "<error>"
        lines.append(
            f"\t\t\t  PortCommonModeRestoreTime={b.port_common_mode_restore_time_us}us "
            f"PortTPowerOnTime={on}"
        )
    lines.append(f"\t\tL1SubCtl1: {b.control1.text()}")
    if l12:
        line = f"\t\t\t   T_CommonMode={b.t_common_mode_us}us"
        if b.capabilities["ASPM_L1.2"]:
            threshold = b.ltr_l12_threshold_ns
            line += (
                f" LTR1.2_Threshold={threshold}ns"
                if threshold is not None
                else " LTR1.2_Threshold=<error>"
            )
        lines.append(line)
    control2 = "\t\tL1SubCtl2:"
    if l12:
        control2 += (
            f" T_PwrOn={b.t_power_on_us}us" if b.t_power_on_us is not None else " T_PwrOn=<error>"
        )
    return [*lines, control2]


def _granularity(ns: int, zero: str) -> str:
    if ns == 0:
        return zero
    return "Greater than 254ns" if ns == 0xFF else f"{ns}ns"


def _rebar_size(log2_mb: int) -> str:
    """A resizable BAR size (log2 of MB) in lspci's units, up to 2**63 bytes."""
    for low, unit in ((0, "MB"), (10, "GB"), (20, "TB"), (30, "PB"), (40, "EB")):
        if log2_mb < low + 10 and log2_mb < 44:
            return f" {1 << (log2_mb - low)}{unit}"
    return " <unknown>"


def _rebar(b: ResizableBar) -> list[str]:
    if not 1 <= b.bar_count <= 6:
        return [f"\t\t<error in resizable BAR: num_bars={b.bar_count} is out of specification>"]
    lines = []
    for e in b.entries:
        line = f"\t\tBAR {e.bar}: current size:{_rebar_size(e.current_size)}"
        if e.supported_sizes:
            line += ", supported:" + "".join(_rebar_size(s) for s in e.supported_sizes)
        lines.append(line)
    if b.unreadable:
        lines.append("\t\t<unreadable>")
    return lines


def _arbitration(table: tuple[str, ...], supported: int, first: str) -> str:
    items = [
        f"{first if i == 0 else ' '}{name}{sign(supported & (1 << i))}"
        for i, name in enumerate(table)
        if not name.startswith("?") or supported & (1 << i)
    ]
    return "".join(items)


def _vc(vc: VirtualChannel, where: int) -> list[str]:
    clock = "100ns" if vc.reference_clock == 0 else f"??{vc.reference_clock}"
    lines = [
        f"\t\tCaps:\tLPEVC={vc.low_priority_extended_vcs} RefClk={clock} "
        f"PATEntryBits={vc.port_arbitration_table_entry_bits}",
        "\t\tArb:" + _arbitration(_VC_ARBITRATION, vc.arbitration_capabilities, "\t"),
        f"\t\tCtrl:\tArbSelect={_VC_ARBITRATION[vc.arbitration_select]}",
        f"\t\tStatus:\tInProgress{sign(vc.arbitration_in_progress)}",
    ]
    if vc.arbitration_table_offset:
        lines.append(
            f"\t\tPort Arbitration Table [{where + 16 * vc.arbitration_table_offset:x}] <?>"
        )
    for i, r in enumerate(vc.resources):
        if r is None:
            lines.append(f"\t\tVC{i}:\t<unreadable>")
            continue
        lines += [
            f"\t\tVC{i}:\tCaps:\tPATOffset={r.arbitration_table_offset:02x} "
            f"MaxTimeSlots={r.max_time_slots} RejSnoopTrans{sign(r.reject_snoop_transactions)}",
            "\t\t\tArb:" + _arbitration(_VC_RESOURCE_ARBITRATION, r.arbitration_capabilities, "\t"),
            f"\t\t\tCtrl:\tEnable{sign(r.enabled)} ID={r.vc_id} "
            f"ArbSelect={_VC_RESOURCE_ARBITRATION[r.arbitration_select]} TC/VC={r.tc_vc_map:02x}",
            f"\t\t\tStatus:\tNegoPending{sign(r.negotiation_pending)} "
            f"InProgress{sign(r.arbitration_in_progress)}",
        ]
        if r.arbitration_table_offset:
            lines.append("\t\t\tPort Arbitration Table <?>")
    return lines


def _rclink(link: RcLink) -> list[str]:
    kinds = ("Config", "Egress", "Internal")
    kind = kinds[link.element_type] if link.element_type < 3 else f"??{link.element_type}"
    lines = [
        f"\t\tDesc:\tPortNumber={link.port_number:02x} ComponentID={link.component_id:02x} "
        f"EltType={kind}"
    ]
    for i, e in enumerate(link.links):
        lines.append(
            f"\t\tLink{i}:\tDesc:\tTargetPort={e.target_port:02x} "
            f"TargetComponent={e.target_component:02x} AssocRCRB{sign(e.associated_rcrb)} "
            f"LinkType={'Config' if e.config_space else 'MemMapped'} LinkValid{sign(e.valid)}"
        )
        low, high = e.address & 0xFFFFFFFF, e.address >> 32
        if e.config_space:
            bus_bits = low & 0x7 or 8
            bus = (low >> 20) & ((1 << bus_bits) - 1)
            lines.append(
                f"\t\t\tAddr:\t{bus:02x}:{(low >> 15) & 0x1F:02x}.{(low >> 12) & 0x7}  "
                f"CfgSpace={high:08x}{low:08x}"
            )
        else:
            lines.append(f"\t\t\tAddr:\t{high:08x}{low:08x}")
    if link.unreadable:
        lines.append(f"\t\tLink{len(link.links)}:\t<unreadable>")
    return lines


def _rcec(r: RcecAssociation) -> list[str]:
    if r.rciep_bitmap:
        groups: list[str] = []
        device = 0
        while device < 32:
            if r.rciep_bitmap & (1 << device):
                last = device
                while last + 1 < 32 and r.rciep_bitmap & (1 << (last + 1)):
                    last += 1
                # lspci closes a run only at a clear bit: one reaching device 31 shows its start
                groups.append(f"{device}-{last}" if device < last < 31 else f"{device}")
                device = last + 1
            else:
                device += 1
        lines = ["\t\tRCiEPBitmap: RCiEP at Device(s): " + ", ".join(groups)]
    else:
        lines = ["\t\tRCiEPBitmap: 00000000 [none]"]
    if r.bus_numbers is not None:
        nxt, last = r.bus_numbers
        buses = "ff-00 [none]" if (last, nxt) == (0x00, 0xFF) else f"{nxt:02x}-{last:02x}"
        lines.append(f"\t\tAssociatedBusNumbers: {buses}")
    return lines


def _multicast(m: Multicast, space: ConfigSpace) -> list[str]:
    t = space.port_type
    endpoint, port = t in (0x0, 0x9), t in (0x4, 0x5, 0x6)
    first = f"\t\tMcastCap: MaxGroups {m.max_groups}"
    if endpoint:
        first += f", WindowSz {m.window_size} ({1 << m.window_size} bytes)"
    control = f"\t\tMcastCtl: NumGroups {m.num_groups}, Enable{sign(m.enabled)}"
    if port:
        lines = [f"{first}, ECRCRegen{sign(m.ecrc_regeneration)}", control]
    else:
        lines = [first + control]  # lspci ends the first line only after ECRCRegen
    lines += [
        f"\t\tMcastBAR: IndexPos {m.base_address & 0x3F}, "
        f"BaseAddr {m.base_address & ~0xFFF & (1 << 64) - 1:016x}",
        f"\t\tMcastReceiveVec:      {m.receive:016x}",
        f"\t\tMcastBlockAllVec:     {m.block_all:016x}",
        f"\t\tMcastBlockUntransVec: {m.block_untranslated:016x}",
    ]
    if endpoint:
        return lines
    size = m.overlay & 0x3F
    shown = f"({1 << size} bytes)" if size >= 6 else "(disabled)"
    lines.append(
        f"\t\tMcastOverlayBAR: OverlaySize {size} {shown}, "
        f"BaseAddr {m.overlay & ~0x3F & (1 << 64) - 1:016x}"
    )
    return lines
