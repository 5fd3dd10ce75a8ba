"""HyperTransport capabilities as ``lspci -vvv`` prints them (ls-caps.c, cap_ht).

The primary and secondary interface blocks are kept as bytes in the model (the bus
is long obsolete) and read here register by register, as lspci reads them.
"""

from __future__ import annotations

from vmstate.pci.capabilities import HyperTransport
from vmstate.pci.flags import sign

_TYPES = {
    0x4000: "Switch", 0x8000: "Interrupt Discovery and Configuration",
    0x9000: "UnitID Clumping", 0x9800: "Extended Configuration Space Access",
    0xA000: "Address Mapping", 0xB000: "DirectRoute", 0xB800: "VCSet", 0xC000: "Retry Mode",
    0xC800: "X86 (reserved)",
}  # fmt: skip
_WIDTHS = ("8bit", "16bit", "[2]", "32bit", "2bit", "4bit", "[6]", "N/C")
_FREQUENCIES = (
    "200MHz", "300MHz", "400MHz", "500MHz", "600MHz", "800MHz", "1.0GHz", "1.2GHz",
    "1.4GHz", "1.6GHz", "[a]", "[b]", "[c]", "[d]", "[e]", "Vend",
)  # fmt: skip
_FREQUENCY_BITS = (
    "200MHz", "300MHz", "400MHz", "500MHz", "600MHz", "800MHz", "1.0GHz", "1.2GHz",
    "1.4GHz", "1.6GHz",
)  # fmt: skip
_ERROR_HANDLING = (
    "PFlE", "OFlE", "PFE", "OFE", "EOCFE", "RFE", "CRCFE", "SERRFE", "CF", "RE", "PNFE",
    "ONFE", "EOCNFE", "RNFE", "CRCNFE", "SERRNFE",
)  # fmt: skip


def render_ht(ht: HyperTransport) -> list[str]:
    """The summary line, then the interface registers lspci decodes."""
    cmd = ht.command
    if cmd & 0xE000 == 0x0000:
        return ["HyperTransport: Slave or Primary Interface", *_primary(cmd, ht.interface)]
    if cmd & 0xE000 == 0x2000:
        return ["HyperTransport: Host or Secondary Interface", *_secondary(cmd, ht.interface)]
    kind = cmd & 0xF800
    if kind == 0x8800:
        return [f"HyperTransport: Revision ID: {(cmd >> 5) & 0x7}.{cmd & 0x1F:02}"]
    if kind == 0xA800:
        first = f"HyperTransport: MSI Mapping Enable{sign(cmd & 0x1)} Fixed{sign(cmd & 0x2)}"
        if ht.msi_mapping_address is None:
            return [first]
        return [first, f"\t\tMapping Address Base: {ht.msi_mapping_address:016x}"]
    if kind in _TYPES:
        return [f"HyperTransport: {_TYPES[kind]}"]
    return [f"HyperTransport: #{kind >> 11:02x}"]


def _word(regs: bytes, at: int) -> int:
    return int.from_bytes(regs[at : at + 2], "little")


def _link_control(title: str, value: int, new: bool) -> str:
    line = (
        f"\t\t{title}: CFlE{sign(value & 0x2)} CST{sign(value & 0x4)} CFE{sign(value & 0x8)} "
        f"<LkFail{sign(value & 0x10)} Init{sign(value & 0x20)} EOC{sign(value & 0x40)} "
        f"TXO{sign(value & 0x80)} <CRCErr={(value >> 8) & 0xF:x}"
    )
    if new:
        line += (
            f" IsocEn{sign(value & 0x1000)} LSEn{sign(value & 0x2000)} "
            f"ExtCTL{sign(value & 0x4000)} 64b{sign(value & 0x8000)}"
        )
    return line


def _link_config(title: str, value: int, new: bool) -> str:
    widths = [_WIDTHS[(value >> shift) & 0x7] for shift in (0, 4, 8, 12)]
    if not new:
        return f"\t\t{title}: MLWI={widths[0]} MLWO={widths[1]} LWI={widths[2]} LWO={widths[3]}"
    return (
        f"\t\t{title}: MLWI={widths[0]} DwFcIn{sign(value & 0x8)} MLWO={widths[1]} "
        f"DwFcOut{sign(value & 0x80)} LWI={widths[2]} DwFcInEn{sign(value & 0x800)} "
        f"LWO={widths[3]} DwFcOutEn{sign(value & 0x8000)}"
    )


def _frequency_lines(suffix: str, error: int, capability: int) -> list[str]:
    # lspci reads the 16-bit frequency capability register as a byte: 1.4 GHz and up show '-'
    capability &= 0xFF
    caps = " ".join(f"{f}{sign(capability & (1 << i))}" for i, f in enumerate(_FREQUENCY_BITS))
    return [
        f"\t\tLink Frequency{suffix}: {_FREQUENCIES[error & 0xF]}",
        f"\t\tLink Error{suffix}: <Prot{sign(error & 0x10)} <Ovfl{sign(error & 0x20)} "
        f"<EOC{sign(error & 0x40)} CTLTm{sign(error & 0x80)}",
        f"\t\tLink Frequency Capability{suffix}: {caps} Vend-",
    ]


def _features(value: int) -> str:
    return (
        f"\t\tFeature Capability: IsocFC{sign(value & 0x1)} LDTSTOP{sign(value & 0x2)} "
        f"CRCTM{sign(value & 0x4)} ECTLT{sign(value & 0x8)} 64bA{sign(value & 0x10)} "
        f"UIDRD{sign(value & 0x20)}"
    )


def _errors(value: int) -> str:
    bits = " ".join(f"{n}{sign(value & (1 << i))}" for i, n in enumerate(_ERROR_HANDLING))
    return f"\t\tError Handling: {bits}"


def _revision(rid: int) -> list[str]:
    return [f"\t\tRevision ID: {(rid >> 5) & 0x7}.{rid & 0x1F:02}"]


def _primary(cmd: int, regs: bytes) -> list[str]:
    if not regs:
        return []
    rid = regs[12]
    new = rid >= 0x22
    lines = ["\t\t!!! Possibly incomplete decoding"] if 0x11 < rid < 0x22 else []
    command = (
        f"\t\tCommand: BaseUnitID={cmd & 0x1F} UnitCnt={(cmd >> 5) & 0x1F} "
        f"MastHost{sign(cmd & 0x400)} DefDir{sign(cmd & 0x800)}"
    )
    lines.append(command + (f" DUL{sign(cmd & 0x1000)}" if new else ""))
    lines += [
        _link_control("Link Control 0", _word(regs, 4), new),
        _link_config("Link Config 0", _word(regs, 6), new),
        _link_control("Link Control 1", _word(regs, 8), new),
        _link_config("Link Config 1", _word(regs, 10), new),
        *_revision(rid),
    ]
    if not new:
        return lines
    return [
        *lines,
        *_frequency_lines(" 0", regs[13], regs[14]),
        _features(regs[16]),
        *_frequency_lines(" 1", regs[17], regs[18]),
        _errors(_word(regs, 22)),
        f"\t\tPrefetchable memory behind bridge Upper: {regs[24]:02x}-{regs[25]:02x}",
        f"\t\tBus Number: {regs[26]:02x}",
    ]


def _secondary(cmd: int, regs: bytes) -> list[str]:
    if not regs:
        return []
    rid = regs[8]
    new = rid >= 0x22
    lines = ["\t\t!!! Possibly incomplete decoding"] if 0x11 < rid < 0x22 else []
    command = f"\t\tCommand: WarmRst{sign(cmd & 0x1)} DblEnd{sign(cmd & 0x2)}"
    if new:
        command += (
            f" DevNum={(cmd >> 2) & 0x1F} ChainSide{sign(cmd & 0x80)} HostHide{sign(cmd & 0x100)} "
            f"Slave{sign(cmd & 0x400)} <EOCErr{sign(cmd & 0x800)} DUL{sign(cmd & 0x1000)}"
        )
    lines += [
        command,
        _link_control("Link Control", _word(regs, 4), new),
        _link_config("Link Config", _word(regs, 6), new),
        *_revision(rid),
    ]
    if not new:
        return lines
    features = _word(regs, 12)
    lines += [
        *_frequency_lines("", regs[9], regs[10]),
        _features(features) + f" ExtRS{sign(features & 0x100)} UCnfE{sign(features & 0x200)}",
    ]
    if features & 0x100:
        lines += [
            _errors(_word(regs, 18)),
            f"\t\tPrefetchable memory behind bridge Upper: {regs[20]:02x}-{regs[21]:02x}",
        ]
    return lines
