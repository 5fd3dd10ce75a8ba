"""The PCI Express capability as ``lspci -vvv`` prints it (ls-caps.c, cap_express).

Which lines and which flags appear depends on the port type, as in lspci; so do
two things only the function's address and BARs tell: Link Capabilities/Control 2
of an endpoint that is not function 0 of device 0 (lspci skips them, they were
reserved before PCIe 3.0), and the AtomicOps completer bits (shown when the
function has a memory BAR).
"""

from __future__ import annotations

from vmstate.pci.express import (
    DOWNSTREAM_PORT,
    ENDPOINT,
    LEGACY_ENDPOINT,
    PCI_TO_PCIE_BRIDGE,
    PCIE_TO_PCI_BRIDGE,
    ROOT_COMPLEX_ENDPOINT,
    ROOT_PORT,
    UPSTREAM_PORT,
    Express,
    Express2Registers,
    LinkRegisters,
)
from vmstate.pci.model import ConfigSpace, PciAddress

_TPH_COMPLETER = ("TPHComp- ExtTPHComp-", "TPHComp+ ExtTPHComp-", "", "TPHComp+ ExtTPHComp+")


def render_express(exp: Express, space: ConfigSpace, address: PciAddress | None) -> list[str]:
    t = exp.port_type
    name = exp.port_type_name
    if t in (ROOT_PORT, DOWNSTREAM_PORT, PCI_TO_PCIE_BRIDGE):
        name += f" (Slot{'+' if exp.slot_implemented else '-'})"
    lines = [f"Express (v{exp.version}) {name}, MSI {exp.interrupt_message_number:02x}"]
    if exp.device is not None:
        lines += _device(exp)
    if exp.link is not None:
        lines += _link(exp.link, t)
    if exp.slot is not None:
        lines += _slot(exp)
    if exp.root is not None:
        r = exp.root
        lines += [
            f"\t\tRootCap: {r.capabilities.text()}",
            f"\t\tRootCtl: {r.control.text()}",
            f"\t\tRootSta: PME ReqID {r.pme_requester_id:04x}, {r.status.text()}",
        ]
    if exp.version2 is not None:
        # as lspci counts them: a 64-bit BAR in the last register has no address at all
        has_memory_bar = any(
            bar.kind == "memory" and (bar.is_64bit or bar.memory_type != 2) for bar in space.bars
        )
        lines += _device2(exp.version2, t, has_memory_bar)
        lines += _link2(exp, exp.version2, address)
    return lines


def _device(exp: Express) -> list[str]:
    assert exp.device is not None
    t = exp.port_type
    cap, ctl, sta = exp.device.capabilities, exp.device.control, exp.device.status
    first = f"\t\tDevCap:\tMaxPayload {cap.max_payload} bytes, PhantFunc {cap.phantom_functions}"
    if t in (ENDPOINT, LEGACY_ENDPOINT):
        first += f", Latency L0s {cap.l0s_acceptable_latency}, L1 {cap.l1_acceptable_latency}"
    second = "\t\t\t" + cap.flags.text("ExtTag")
    if t in (ENDPOINT, LEGACY_ENDPOINT, UPSTREAM_PORT, PCIE_TO_PCI_BRIDGE):
        second += " " + cap.flags.text("AttnBtn", "AttnInd", "PwrInd")
    second += " " + cap.flags.text("RBE")
    function_reset = t in (ENDPOINT, LEGACY_ENDPOINT, ROOT_COMPLEX_ENDPOINT)
    if function_reset:
        second += " " + cap.flags.text("FLReset")
    if t in (ENDPOINT, UPSTREAM_PORT, PCIE_TO_PCI_BRIDGE):
        second += f" SlotPowerLimit {cap.slot_power_limit}"
    control = "\t\t\t" + ctl.flags.text("RlxdOrd", "ExtTag", "PhantFunc", "AuxPwr", "NoSnoop")
    if t == PCIE_TO_PCI_BRIDGE:
        control += " " + ctl.flags.text("BrConfRtry")
    if function_reset and cap.flags["FLReset"]:
        control += " " + ctl.flags.text("FLReset")
    return [
        first,
        second,
        "\t\tDevCtl:\t" + ctl.flags.text("CorrErr", "NonFatalErr", "FatalErr", "UnsupReq"),
        control,
        f"\t\t\tMaxPayload {ctl.max_payload} bytes, MaxReadReq {ctl.max_read_request} bytes",
        "\t\tDevSta:\t" + sta.text(),
    ]


def _compare(port_type: int, status: int, capability: int) -> str:
    """lspci's note on a link running below (or above) what it is capable of."""
    if status > capability:
        return " (overdriven)"
    if status == capability or port_type in (ROOT_PORT, DOWNSTREAM_PORT, PCI_TO_PCIE_BRIDGE):
        return ""
    return " (downgraded)"


def _link(link: LinkRegisters, t: int) -> list[str]:
    cap, ctl, sta = link.capabilities, link.control, link.status
    first = (
        f"\t\tLnkCap:\tPort #{cap.port_number}, Speed {cap.max_speed}, Width x{cap.max_width}, "
        f"ASPM {cap.aspm_support}"
    )
    exits = [f"L0s {cap.l0s_exit_latency}"] if cap.l0s_exit_latency is not None else []
    exits += [f"L1 {cap.l1_exit_latency}"] if cap.l1_exit_latency is not None else []
    if exits:
        first += ", Exit Latency " + ", ".join(exits)
    control = f"\t\tLnkCtl:\tASPM {ctl.aspm};"
    if t in (ROOT_PORT, ENDPOINT, LEGACY_ENDPOINT, PCIE_TO_PCI_BRIDGE):
        control += f" RCB {ctl.read_completion_boundary} bytes,"
    return [
        first,
        "\t\t\t" + cap.flags.text(),
        control + " " + ctl.flags.text("Disabled", "CommClk"),
        "\t\t\t" + ctl.flags.text("ExtSynch", "ClockPM", "AutWidDis", "BWInt", "AutBWInt"),
        f"\t\tLnkSta:\tSpeed {sta.speed}{_compare(t, sta.speed_code, cap.max_speed_code)}, "
        f"Width x{sta.width}{_compare(t, sta.width, cap.max_width)}",
        "\t\t\t" + sta.flags.text(),
    ]


def _slot(exp: Express) -> list[str]:
    assert exp.slot is not None
    cap, ctl, sta = exp.slot.capabilities, exp.slot.control, exp.slot.status
    return [
        "\t\tSltCap:\t"
        + cap.flags.text("AttnBtn", "PwrCtrl", "MRL", "AttnInd", "PwrInd", "HotPlug", "Surprise"),
        f"\t\t\tSlot #{cap.slot_number}, PowerLimit {cap.power_limit}; "
        + cap.flags.text("Interlock", "NoCompl"),
        "\t\tSltCtl:\tEnable: "
        + ctl.flags.text("AttnBtn", "PwrFlt", "MRL", "PresDet", "CmdCplt", "HPIrq", "LinkChg"),
        f"\t\t\tControl: AttnInd {ctl.attention_indicator}, PwrInd {ctl.power_indicator}, "
        + ctl.flags.text("Power", "Interlock"),
        "\t\tSltSta:\tStatus: " + sta.status.text(),
        "\t\t\tChanged: " + sta.changed.text(),
    ]


def _device2(regs: Express2Registers, t: int, has_memory_bar: bool) -> list[str]:
    cap, ctl = regs.device_capabilities, regs.device_control
    f = cap.flags
    line = f"\t\t\t {f.text('10BitTagComp', '10BitTagReq')} OBFF {cap.obff}, " + f.text(
        "ExtFmt", "EETLPPrefix"
    )
    if f["EETLPPrefix"]:
        line += f", MaxEETLPPrefixes {cap.max_end_end_tlp_prefixes}"
    frs = "\t\t\t " + f.text("FRS")
    if t == ROOT_PORT:
        frs += f" LN System CLS {cap.ln_system_cls},"
    if t in (ROOT_PORT, ENDPOINT):
        frs += " " + _TPH_COMPLETER[f["TPHComp"] | f["ExtTPHComp"] << 1]
    if t in (ROOT_PORT, DOWNSTREAM_PORT):
        frs += " " + f.text("ARIFwd")
    lines = [
        f"\t\tDevCap2: Completion Timeout: {cap.completion_timeout_ranges}, "
        + f.text("TimeoutDis", "NROPrPrP", "LTR"),
        line,
        f"\t\t\t EmergencyPowerReduction {cap.emergency_power_reduction}, "
        + f.text("EmergencyPowerReductionInit"),
        frs,
    ]
    ports = (ROOT_PORT, UPSTREAM_PORT, DOWNSTREAM_PORT)
    if t in ports or has_memory_bar:
        atomics = "\t\t\t AtomicOpsCap:"
        if t in ports:
            atomics += " " + f.text("Routing")
        if t == ROOT_PORT or has_memory_bar:
            atomics += " " + f.text("32bit", "64bit", "128bitCAS")
        lines.append(atomics)
    c = ctl.flags
    control = (
        f"\t\tDevCtl2: Completion Timeout: {ctl.completion_timeout}, "
        f"{c.text('TimeoutDis', 'LTR', '10BitTagReq')} OBFF {ctl.obff},"
    )
    if t in (ROOT_PORT, DOWNSTREAM_PORT):
        control += " " + c.text("ARIFwd")
    lines.append(control)
    requesters = (ROOT_PORT, ENDPOINT, ROOT_COMPLEX_ENDPOINT, LEGACY_ENDPOINT)
    if t in requesters or t in ports:
        atomics = "\t\t\t AtomicOpsCtl:"
        if t in requesters:
            atomics += " " + c.text("ReqEn")
        if t in ports:
            atomics += " " + c.text("EgressBlck")
        lines.append(atomics)
    return lines


def _link2(exp: Express, regs: Express2Registers, address: PciAddress | None) -> list[str]:
    lines: list[str] = []
    cap, ctl, sta = regs.link_capabilities, regs.link_control, regs.link_status
    if cap is None or ctl is None or sta is None:
        return lines
    t = exp.port_type
    other_function = address is not None and (address.device, address.function) != (0, 0)
    if not (t in (ENDPOINT, LEGACY_ENDPOINT) and other_function):
        if cap.value:
            lines.append(
                f"\t\tLnkCap2: Supported Link Speeds: {cap.supported_speeds}, "
                + cap.flags.text("Crosslink", "Retimer", "2Retimers", "DRS")
            )
        target = f"\t\tLnkCtl2: Target Link Speed: {ctl.target_speed}, " + ctl.flags.text(
            "EnterCompliance", "SpeedDis"
        )
        if t == DOWNSTREAM_PORT:
            target += f", Selectable De-emphasis: {ctl.selectable_deemphasis}"
        lines += [
            target,
            f"\t\t\t Transmit Margin: {ctl.transmit_margin}, "
            + ctl.flags.text("EnterModifiedCompliance", "ComplianceSOS"),
            f"\t\t\t Compliance Preset/De-emphasis: {ctl.compliance_preset}",
        ]
    f = sta.flags
    status = [
        f"\t\tLnkSta2: Current De-emphasis Level: {sta.deemphasis}, "
        + f.text("EqualizationComplete", "EqualizationPhase1"),
        "\t\t\t " + f.text("EqualizationPhase2", "EqualizationPhase3", "LinkEqualizationRequest"),
        f"\t\t\t {f.text('Retimer', '2Retimers')} CrosslinkRes: {sta.crosslink_resolution}",
    ]
    if t in (ROOT_PORT, DOWNSTREAM_PORT, PCI_TO_PCIE_BRIDGE) and cap.flags["DRS"]:
        status[-1] += ", " + f.text("DRS")
        status.append(f"\t\t\t DownstreamComp: {sta.downstream_component}")
    return lines + status
