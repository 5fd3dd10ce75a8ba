"""The PCI Express capability (id 0x10): every register lspci decodes, as values.

Which registers a function has depends on its port type (a Root Port has slot and
root registers, an integrated endpoint no link) and on the capability version
(version 2 adds the "2" registers).  A register group that would lie past the end
of the config space is left out (None), as lspci leaves it out.
"""

from __future__ import annotations

import attrs

from vmstate.pci.flags import Flags, flags
from vmstate.pci.problems import ConfigProblems
from vmstate.pci.registers import u16, u32

# Port types (PCI_EXP_TYPE_*).
ENDPOINT = 0x0
LEGACY_ENDPOINT = 0x1
ROOT_PORT = 0x4
UPSTREAM_PORT = 0x5
DOWNSTREAM_PORT = 0x6
PCIE_TO_PCI_BRIDGE = 0x7
PCI_TO_PCIE_BRIDGE = 0x8
ROOT_COMPLEX_ENDPOINT = 0x9
ROOT_COMPLEX_EVENT_COLLECTOR = 0xA

PORT_TYPES = {
    ENDPOINT: "Endpoint",
    LEGACY_ENDPOINT: "Legacy Endpoint",
    ROOT_PORT: "Root Port",
    UPSTREAM_PORT: "Upstream Port",
    DOWNSTREAM_PORT: "Downstream Port",
    PCIE_TO_PCI_BRIDGE: "PCI-Express to PCI/PCI-X Bridge",
    PCI_TO_PCIE_BRIDGE: "PCI/PCI-X to PCI-Express Bridge",
    ROOT_COMPLEX_ENDPOINT: "Root Complex Integrated Endpoint",
    ROOT_COMPLEX_EVENT_COLLECTOR: "Root Complex Event Collector",
}
#: port types whose capability may say a slot is implemented
SLOT_PORT_TYPES = (ROOT_PORT, DOWNSTREAM_PORT, PCI_TO_PCIE_BRIDGE)

L0S_LATENCIES = ("<64ns", "<128ns", "<256ns", "<512ns", "<1us", "<2us", "<4us", "unlimited")
L1_LATENCIES = ("<1us", "<2us", "<4us", "<8us", "<16us", "<32us", "<64us", "unlimited")
LINK_SPEEDS = {1: "2.5GT/s", 2: "5GT/s", 3: "8GT/s", 4: "16GT/s", 5: "32GT/s", 6: "64GT/s"}
ASPM_SUPPORT = ("not supported", "L0s", "L1", "L0s L1")
ASPM_CONTROL = ("Disabled", "L0s Enabled", "L1 Enabled", "L0s L1 Enabled")
INDICATORS = ("Unknown", "On", "Blink", "Off")
TIMEOUT_RANGES = {
    0: "Not Supported", 1: "Range A", 2: "Range B", 3: "Range AB", 6: "Range BC",
    7: "Range ABC", 14: "Range BCD", 15: "Range ABCD",
}  # fmt: skip
TIMEOUT_VALUES = {
    0: "50us to 50ms", 1: "50us to 100us", 2: "1ms to 10ms", 5: "16ms to 55ms",
    6: "65ms to 210ms", 9: "260ms to 900ms", 10: "1s to 3.5s", 13: "4s to 13s",
    14: "17s to 64s",
}  # fmt: skip
OBFF_SUPPORT = ("Not Supported", "Via message", "Via WAKE#", "Via message/WAKE#")
OBFF_CONTROL = ("Disabled", "Via message A", "Via message B", "Via WAKE#")
EMERGENCY_POWER_REDUCTION = (
    "Not Supported",
    "Dev Specific",
    "Form Factor Dev Specific",
    "Reserved",
)
LN_SYSTEM_CLS = ("Not Supported", "64byte cachelines", "128byte cachelines", "Reserved")
DEEMPHASIS = ("-6dB", "-3.5dB")
TRANSMIT_MARGINS = {
    0: "Normal Operating Range",
    1: "800-1200mV(full-swing)/400-700mV(half-swing)",
    **dict.fromkeys(range(2, 6), "200-400mV(full-swing)/100-200mV(half-swing)"),
}
COMPLIANCE_PRESETS = (
    "-6dB de-emphasis, 0dB preshoot", "-3.5dB de-emphasis, 0dB preshoot",
    "-4.4dB de-emphasis, 0dB preshoot", "-2.5dB de-emphasis, 0dB preshoot",
    "0dB de-emphasis, 0dB preshoot", "0dB de-emphasis, 1.9dB preshoot",
    "0dB de-emphasis, 2.5dB preshoot", "-6.0dB de-emphasis, 3.5dB preshoot",
    "-3.5dB de-emphasis, 3.5dB preshoot", "0dB de-emphasis, 3.5dB preshoot",
)  # fmt: skip
CROSSLINK_RESOLUTIONS = ("unsupported", "Upstream Port", "Downstream Port", "incomplete")
DOWNSTREAM_COMPONENTS = {
    0: "Link Down - Not Determined", 1: "Link Down - Not Present", 2: "Link Down - Present",
    4: "Link Up - Present", 5: "Link Up - Present and DRS Received",
}  # fmt: skip

_DEVCAP = (("ExtTag", 0x20), ("AttnBtn", 0x1000), ("AttnInd", 0x2000), ("PwrInd", 0x4000),
           ("RBE", 0x8000), ("FLReset", 0x10000000))  # fmt: skip
_DEVCTL = (("CorrErr", 0x1), ("NonFatalErr", 0x2), ("FatalErr", 0x4), ("UnsupReq", 0x8),
           ("RlxdOrd", 0x10), ("ExtTag", 0x100), ("PhantFunc", 0x200), ("AuxPwr", 0x400),
           ("NoSnoop", 0x800), ("BrConfRtry", 0x8000), ("FLReset", 0x8000))  # fmt: skip
_DEVSTA = (("CorrErr", 0x1), ("NonFatalErr", 0x2), ("FatalErr", 0x4), ("UnsupReq", 0x8),
           ("AuxPwr", 0x10), ("TransPend", 0x20))  # fmt: skip
_LNKCAP = (("ClockPM", 0x40000), ("Surprise", 0x80000), ("LLActRep", 0x100000),
           ("BwNot", 0x200000), ("ASPMOptComp", 0x400000))  # fmt: skip
_LNKCTL = (("Disabled", 0x10), ("Retrain", 0x20), ("CommClk", 0x40), ("ExtSynch", 0x80),
           ("ClockPM", 0x100), ("AutWidDis", 0x200), ("BWInt", 0x400), ("AutBWInt", 0x800))  # fmt: skip
_LNKSTA = (("TrErr", 0x400), ("Train", 0x800), ("SlotClk", 0x1000), ("DLActive", 0x2000),
           ("BWMgmt", 0x4000), ("ABWMgmt", 0x8000))  # fmt: skip
_SLTCAP = (("AttnBtn", 0x1), ("PwrCtrl", 0x2), ("MRL", 0x4), ("AttnInd", 0x8), ("PwrInd", 0x10),
           ("HotPlug", 0x40), ("Surprise", 0x20), ("Interlock", 0x20000), ("NoCompl", 0x40000))  # fmt: skip
_SLTCTL = (("AttnBtn", 0x1), ("PwrFlt", 0x2), ("MRL", 0x4), ("PresDet", 0x8), ("CmdCplt", 0x10),
           ("HPIrq", 0x20), ("LinkChg", 0x1000), ("Power", 0x400), ("Interlock", 0x800))  # fmt: skip
_SLTSTA = (("AttnBtn", 0x1), ("PowerFlt", 0x2), ("MRL", 0x20), ("CmdCplt", 0x10),
           ("PresDet", 0x40), ("Interlock", 0x80))  # fmt: skip
_SLTSTA_CHANGED = (("MRL", 0x4), ("PresDet", 0x8), ("LinkState", 0x100))
_RTCTL = (("ErrCorrectable", 0x1), ("ErrNon-Fatal", 0x2), ("ErrFatal", 0x4), ("PMEIntEna", 0x8),
          ("CRSVisible", 0x10))  # fmt: skip
_DEVCAP2 = (("TimeoutDis", 0x10), ("ARIFwd", 0x20), ("Routing", 0x40), ("32bit", 0x80),
            ("64bit", 0x100), ("128bitCAS", 0x200), ("NROPrPrP", 0x400), ("LTR", 0x800),
            ("TPHComp", 0x1000), ("ExtTPHComp", 0x2000), ("10BitTagComp", 0x10000),
            ("10BitTagReq", 0x20000), ("ExtFmt", 0x100000), ("EETLPPrefix", 0x200000),
            ("EmergencyPowerReductionInit", 0x4000000), ("FRS", 0x80000000))  # fmt: skip
_DEVCTL2 = (("TimeoutDis", 0x10), ("ARIFwd", 0x20), ("ReqEn", 0x40), ("EgressBlck", 0x80),
            ("LTR", 0x400), ("10BitTagReq", 0x1000))  # fmt: skip
_LNKCAP2 = (("Crosslink", 0x100), ("Retimer", 0x800000), ("2Retimers", 0x1000000),
            ("DRS", 0x80000000))  # fmt: skip
_LNKCTL2 = (("EnterCompliance", 0x10), ("SpeedDis", 0x20), ("EnterModifiedCompliance", 0x400),
            ("ComplianceSOS", 0x800))  # fmt: skip
_LNKSTA2 = (("EqualizationComplete", 0x2), ("EqualizationPhase1", 0x4),
            ("EqualizationPhase2", 0x8), ("EqualizationPhase3", 0x10),
            ("LinkEqualizationRequest", 0x20), ("Retimer", 0x40), ("2Retimers", 0x80),
            ("DRS", 0x8000))  # fmt: skip


def power_limit(value: int, scale: int) -> str:
    """A slot power limit as lspci prints it: watts, or ">600W"."""
    if scale == 0 and value == 0xFF:
        return ">600W"
    if scale == 0 and 0xF0 <= value <= 0xFE:
        value = 250 + 25 * (value - 0xF0)
    return f"{value * (1.0, 0.1, 0.01, 0.001)[scale]:g}W"


def link_speed(code: int) -> str:
    return LINK_SPEEDS.get(code, "unknown")


@attrs.frozen
class DeviceCapabilities:
    max_payload: int  # bytes
    phantom_functions: int
    l0s_acceptable_latency: str
    l1_acceptable_latency: str
    slot_power_limit: str
    flags: Flags


@attrs.frozen
class DeviceControl:
    max_payload: int  # bytes
    max_read_request: int  # bytes
    flags: Flags


@attrs.frozen
class DeviceRegisters:
    """Device Capabilities, Control and Status (offsets 0x04-0x0b)."""

    capabilities: DeviceCapabilities
    control: DeviceControl
    status: Flags


@attrs.frozen
class LinkCapabilities:
    port_number: int
    max_speed_code: int
    max_speed: str
    max_width: int
    aspm_support: str
    l0s_exit_latency: str | None  # None where ASPM L0s is not supported
    l1_exit_latency: str | None
    flags: Flags


@attrs.frozen
class LinkControl:
    aspm: str
    read_completion_boundary: int  # bytes
    flags: Flags


@attrs.frozen
class LinkStatus:
    speed_code: int
    speed: str
    width: int
    flags: Flags


@attrs.frozen
class LinkRegisters:
    """Link Capabilities, Control and Status (offsets 0x0c-0x13)."""

    capabilities: LinkCapabilities
    control: LinkControl
    status: LinkStatus


@attrs.frozen
class SlotCapabilities:
    slot_number: int
    power_limit: str
    flags: Flags


@attrs.frozen
class SlotControl:
    attention_indicator: str
    power_indicator: str
    flags: Flags


@attrs.frozen
class SlotStatus:
    status: Flags
    changed: Flags


@attrs.frozen
class SlotRegisters:
    """Slot Capabilities, Control and Status (offsets 0x14-0x1b), where a slot is implemented."""

    capabilities: SlotCapabilities
    control: SlotControl
    status: SlotStatus


@attrs.frozen
class RootRegisters:
    """Root Control, Capabilities and Status (offsets 0x1c-0x23) of root ports and event collectors."""

    capabilities: Flags
    control: Flags
    pme_requester_id: int
    status: Flags


@attrs.frozen
class DeviceCapabilities2:
    completion_timeout_ranges: str
    obff: str
    max_end_end_tlp_prefixes: int
    emergency_power_reduction: str
    ln_system_cls: str
    flags: Flags


@attrs.frozen
class DeviceControl2:
    completion_timeout: str
    obff: str
    flags: Flags


@attrs.frozen
class LinkCapabilities2:
    value: int  # lspci prints the register only when it is not zero (it was reserved before r3.0)
    supported_speeds: str
    flags: Flags


@attrs.frozen
class LinkControl2:
    target_speed: str
    selectable_deemphasis: str
    transmit_margin: str
    compliance_preset: str
    flags: Flags


@attrs.frozen
class LinkStatus2:
    deemphasis: str
    crosslink_resolution: str
    downstream_component: str
    flags: Flags


@attrs.frozen
class Express2Registers:
    """The version-2 registers (offsets 0x24-0x3b); link ones only where there is a link."""

    device_capabilities: DeviceCapabilities2
    device_control: DeviceControl2
    link_capabilities: LinkCapabilities2 | None
    link_control: LinkControl2 | None
    link_status: LinkStatus2 | None


@attrs.frozen
class Express:
    """PCI Express capability: the port type decides which registers exist."""

    version: int
    port_type: int
    port_type_name: str
    slot_implemented: bool
    interrupt_message_number: int
    size: int  # bytes of the capability structure, as QEMU sizes it
    device: DeviceRegisters | None
    link: LinkRegisters | None
    slot: SlotRegisters | None
    root: RootRegisters | None
    version2: Express2Registers | None

    @property
    def has_link(self) -> bool:
        return self.port_type not in (ROOT_COMPLEX_ENDPOINT, ROOT_COMPLEX_EVENT_COLLECTOR)

    @property
    def has_slot(self) -> bool:
        return self.slot_implemented and self.port_type in SLOT_PORT_TYPES

    @property
    def has_root(self) -> bool:
        return self.port_type in (ROOT_PORT, ROOT_COMPLEX_EVENT_COLLECTOR)


def express_size(flags: int) -> int:
    """Bytes QEMU gives a PCIe capability: version 1 ends after Link Status, 2 after Slot Status 2."""
    return 0x14 if flags & 0xF == 1 else 0x3C


def decode_express(data: bytes, where: int, problems: ConfigProblems) -> Express | None:
    if where + 4 > len(data):
        problems.add(
            "cap-truncated", where, f"PCI Express capability at {where:#x} past the end of config"
        )
        return None
    cap = u16(data, where + 2)
    port_type = (cap >> 4) & 0xF
    space = Express(
        version=cap & 0xF,
        port_type=port_type,
        port_type_name=PORT_TYPES.get(port_type, f"Unknown type {port_type}"),
        slot_implemented=bool(cap & 0x0100),
        interrupt_message_number=(cap >> 9) & 0x1F,
        size=express_size(cap),
        device=None,
        link=None,
        slot=None,
        root=None,
        version2=None,
    )
    # lspci's reach: the first registers up to Slot Status or Root Status, then the "2" ones
    first = 0x20 if space.has_root else 0x18 if space.has_slot else 0x10
    if where + 4 + first > len(data):
        problems.add(
            "cap-truncated",
            where,
            f"PCI Express capability registers at {where:#x} end past the {len(data)}-byte config space",
        )
        return space
    space = attrs.evolve(
        space,
        device=_device(data, where),
        link=_link(data, where) if space.has_link else None,
        slot=_slot(data, where) if space.has_slot else None,
        root=_root(data, where) if space.has_root else None,
    )
    if space.version < 2:
        return space
    second = 0x18 if space.has_slot else 0x10
    if where + 0x24 + second > len(data):
        problems.add(
            "cap-truncated",
            where,
            f"PCI Express version 2 registers at {where + 0x24:#x} end past the {len(data)}-byte config space",
        )
        return space
    return attrs.evolve(space, version2=_version2(data, where, space.has_link))


def _device(data: bytes, where: int) -> DeviceRegisters:
    cap = u32(data, where + 0x04)
    ctl = u16(data, where + 0x08)
    return DeviceRegisters(
        DeviceCapabilities(
            max_payload=128 << (cap & 0x7),
            phantom_functions=(1 << ((cap >> 3) & 0x3)) - 1,
            l0s_acceptable_latency=L0S_LATENCIES[(cap >> 6) & 0x7],
            l1_acceptable_latency=L1_LATENCIES[(cap >> 9) & 0x7],
            slot_power_limit=power_limit((cap >> 18) & 0xFF, (cap >> 26) & 0x3),
            flags=flags(cap, _DEVCAP),
        ),
        DeviceControl(
            max_payload=128 << ((ctl >> 5) & 0x7),
            max_read_request=128 << ((ctl >> 12) & 0x7),
            flags=flags(ctl, _DEVCTL),
        ),
        flags(u16(data, where + 0x0A), _DEVSTA),
    )


def _link(data: bytes, where: int) -> LinkRegisters:
    cap = u32(data, where + 0x0C)
    ctl = u16(data, where + 0x10)
    sta = u16(data, where + 0x12)
    aspm = (cap >> 10) & 0x3
    return LinkRegisters(
        LinkCapabilities(
            port_number=cap >> 24,
            max_speed_code=cap & 0xF,
            max_speed=link_speed(cap & 0xF),
            max_width=(cap >> 4) & 0x3F,
            aspm_support=ASPM_SUPPORT[aspm],
            l0s_exit_latency=L0S_LATENCIES[(cap >> 12) & 0x7] if aspm & 1 else None,
            l1_exit_latency=L1_LATENCIES[(cap >> 15) & 0x7] if aspm & 2 else None,
            flags=flags(cap, _LNKCAP),
        ),
        LinkControl(
            aspm=ASPM_CONTROL[ctl & 0x3],
            read_completion_boundary=128 if ctl & 0x8 else 64,
            flags=flags(ctl, _LNKCTL),
        ),
        LinkStatus(
            speed_code=sta & 0xF,
            speed=link_speed(sta & 0xF),
            width=(sta >> 4) & 0x3F,
            flags=flags(sta, _LNKSTA),
        ),
    )


def _slot(data: bytes, where: int) -> SlotRegisters:
    cap = u32(data, where + 0x14)
    ctl = u16(data, where + 0x18)
    sta = u16(data, where + 0x1A)
    return SlotRegisters(
        SlotCapabilities(
            slot_number=cap >> 19,
            power_limit=power_limit((cap >> 7) & 0xFF, (cap >> 15) & 0x3),
            flags=flags(cap, _SLTCAP),
        ),
        SlotControl(
            attention_indicator=INDICATORS[(ctl >> 6) & 0x3],
            power_indicator=INDICATORS[(ctl >> 8) & 0x3],
            flags=flags(ctl, _SLTCTL),
        ),
        SlotStatus(flags(sta, _SLTSTA), flags(sta, _SLTSTA_CHANGED)),
    )


def _root(data: bytes, where: int) -> RootRegisters:
    sta = u32(data, where + 0x20)
    return RootRegisters(
        capabilities=flags(u16(data, where + 0x1E), (("CRSVisible", 0x1),)),
        control=flags(u16(data, where + 0x1C), _RTCTL),
        pme_requester_id=sta & 0xFFFF,
        status=flags(sta, (("PMEStatus", 0x10000), ("PMEPending", 0x20000))),
    )


def _supported_speeds(vector: int) -> str:
    """Link Capabilities 2's speed vector: a device supports every rate up to its highest."""
    if vector & 0x60:
        return "RsvdP"
    for bit, text in ((0x10, "2.5-32GT/s"), (0x08, "2.5-16GT/s"), (0x04, "2.5-8GT/s"),
                      (0x02, "2.5-5GT/s"), (0x01, "2.5GT/s")):  # fmt: skip
        if vector & bit:
            return text
    return "Unknown"


def _version2(data: bytes, where: int, has_link: bool) -> Express2Registers:
    cap = u32(data, where + 0x24)
    ctl = u16(data, where + 0x28)
    prefixes = (cap >> 22) & 0x3
    regs = Express2Registers(
        DeviceCapabilities2(
            completion_timeout_ranges=TIMEOUT_RANGES.get(cap & 0xF, "Unknown"),
            obff=OBFF_SUPPORT[(cap >> 18) & 0x3],
            max_end_end_tlp_prefixes=prefixes or 4,
            emergency_power_reduction=EMERGENCY_POWER_REDUCTION[(cap >> 24) & 0x3],
            ln_system_cls=LN_SYSTEM_CLS[(cap >> 14) & 0x3],
            flags=flags(cap, _DEVCAP2),
        ),
        DeviceControl2(
            completion_timeout=TIMEOUT_VALUES.get(ctl & 0xF, "Unknown"),
            obff=OBFF_CONTROL[(ctl >> 13) & 0x3],
            flags=flags(ctl, _DEVCTL2),
        ),
        None,
        None,
        None,
    )
    if not has_link:
        return regs
    lnkcap2 = u32(data, where + 0x2C)
    lnkctl2 = u16(data, where + 0x30)
    lnksta2 = u16(data, where + 0x32)
    return attrs.evolve(
        regs,
        link_capabilities=LinkCapabilities2(
            value=lnkcap2,
            supported_speeds=_supported_speeds((lnkcap2 >> 1) & 0x7F),
            flags=flags(lnkcap2, _LNKCAP2),
        ),
        link_control=LinkControl2(
            target_speed=LINK_SPEEDS.get(lnkctl2 & 0xF, "Unknown") if lnkctl2 & 0xF else "2.5GT/s",
            selectable_deemphasis=DEEMPHASIS[(lnkctl2 >> 6) & 0x1],
            transmit_margin=TRANSMIT_MARGINS.get((lnkctl2 >> 7) & 0x7, "Unknown"),
            compliance_preset=(
                COMPLIANCE_PRESETS[p] if (p := (lnkctl2 >> 12) & 0xF) < 10 else "Unknown"
            ),
            flags=flags(lnkctl2, _LNKCTL2),
        ),
        link_status=LinkStatus2(
            deemphasis=DEEMPHASIS[lnksta2 & 0x1],
            crosslink_resolution=CROSSLINK_RESOLUTIONS[(lnksta2 >> 8) & 0x3],
            downstream_component=DOWNSTREAM_COMPONENTS.get((lnksta2 >> 12) & 0x7, "Reserved"),
            flags=flags(lnksta2, _LNKSTA2),
        ),
    )
