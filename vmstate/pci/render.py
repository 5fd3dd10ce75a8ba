"""A decoded config space as text in the manner of ``lspci -vv``."""

from __future__ import annotations

from collections.abc import Iterator

from vmstate.pci.capabilities import Express, Msi, MsiX, PowerManagement, VendorSpecific
from vmstate.pci.extended import Acs, Aer, Ari, Ltr, SerialNumber, SrIov
from vmstate.pci.model import Bridge, Capability, ConfigSpace, ExtendedCapability


def render_text(space: ConfigSpace) -> str:
    """Human text in the manner of ``lspci -vv``."""
    return "\n".join(_render(space)) + "\n"


def _flag(value: int | bool, bit: int = 1) -> str:
    return "+" if value & bit else "-"


def _size_text(size: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return str(size)


def _render(space: ConfigSpace) -> Iterator[str]:
    h = space.header
    c = h.class_code
    yield f"Device {h.vendor_id:04x}:{h.device_id:04x} (rev {h.revision_id:02x})"
    yield f"\tClass: {c.name} [{c.base:02x}{c.sub:02x}] (prog-if {c.prog_if:02x})"
    yield f"\tHeader type: {h.header_type}{' (multi-function)' if h.multifunction else ''}, config space {space.size} bytes"
    if h.endpoint is not None:
        yield f"\tSubsystem: {h.endpoint.subsystem_vendor_id:04x}:{h.endpoint.subsystem_id:04x}"
    cmd, st = h.command, h.status
    yield (
        f"\tControl: I/O{_flag(cmd, 0x1)} Mem{_flag(cmd, 0x2)} BusMaster{_flag(cmd, 0x4)} "
        f"SpecCycle{_flag(cmd, 0x8)} MemWINV{_flag(cmd, 0x10)} VGASnoop{_flag(cmd, 0x20)} "
        f"ParErr{_flag(cmd, 0x40)} Stepping{_flag(cmd, 0x80)} SERR{_flag(cmd, 0x100)} "
        f"FastB2B{_flag(cmd, 0x200)} DisINTx{_flag(cmd, 0x400)}"
    )
    devsel = ("fast", "medium", "slow", "??")[(st >> 9) & 0x3]
    yield (
        f"\tStatus: Cap{_flag(st, 0x10)} 66MHz{_flag(st, 0x20)} UDF{_flag(st, 0x40)} "
        f"FastB2B{_flag(st, 0x80)} ParErr{_flag(st, 0x100)} DEVSEL={devsel} "
        f">TAbort{_flag(st, 0x800)} <TAbort{_flag(st, 0x1000)} <MAbort{_flag(st, 0x2000)} "
        f">SERR{_flag(st, 0x4000)} <PERR{_flag(st, 0x8000)} INTx{_flag(st, 0x8)}"
    )
    yield f"\tLatency: {h.latency_timer}, Cache Line Size: {h.cache_line_size * 4} bytes"
    if h.interrupt_pin:
        pin = "ABCD"[h.interrupt_pin - 1] if h.interrupt_pin <= 4 else f"?{h.interrupt_pin}"
        yield f"\tInterrupt: pin {pin} routed to IRQ {h.interrupt_line}"
    for bar in space.bars:
        size = f" [size={_size_text(bar.size)}]" if bar.size is not None else ""
        if bar.kind == "io":
            yield f"\tRegion {bar.index}: I/O ports at {bar.address:04x}{size}"
        else:
            bits = "64-bit" if bar.is_64bit else "32-bit"
            pref = "prefetchable" if bar.prefetchable else "non-prefetchable"
            yield f"\tRegion {bar.index}: Memory at {bar.address:08x} ({bits}, {pref}){size}"
    if h.bridge is not None:
        yield from _render_bridge(h.bridge)
    rom = space.expansion_rom
    if rom is not None:
        size = f" [size={_size_text(rom.size)}]" if rom.size is not None else ""
        yield f"\tExpansion ROM at {rom.address:08x} [{'enabled' if rom.enabled else 'disabled'}]{size}"
    for cap in space.capabilities:
        yield f"\tCapabilities: [{cap.offset:02x}] {_cap_summary(cap)}"
        yield from (f"\t\t{line}" for line in _cap_details(cap))
    for ext in space.extended_capabilities:
        yield f"\tCapabilities: [{ext.offset:03x} v{ext.version}] {_ext_summary(ext)}"
    for problem in space.problems:
        yield f"\tProblem: {problem}"


def _render_bridge(b: Bridge) -> Iterator[str]:
    yield (
        f"\tBus: primary={b.primary_bus:02x}, secondary={b.secondary_bus:02x}, "
        f"subordinate={b.subordinate_bus:02x}, sec-latency={b.secondary_latency_timer}"
    )
    for what, window, digits in (
        ("I/O", b.io_window, 4),
        ("Memory", b.memory_window, 8),
        ("Prefetchable memory", b.prefetchable_window, 8),
    ):
        if window.enabled:
            size = _size_text(window.limit - window.base + 1)
            yield (
                f"\t{what} behind bridge: {window.base:0{digits}x}-{window.limit:0{digits}x} "
                f"[size={size}] [{window.width}-bit]"
            )
        else:
            yield f"\t{what} behind bridge: [disabled] [{window.width}-bit]"


def _cap_summary(cap: Capability) -> str:
    body = cap.body
    if isinstance(body, PowerManagement):
        return f"Power Management version {body.version}"
    if isinstance(body, Msi):
        return (
            f"MSI: Enable{_flag(body.enabled)} Count={body.vectors_enabled}/{body.vectors} "
            f"Maskable{_flag(body.per_vector_masking)} 64bit{_flag(body.is_64bit)}"
        )
    if isinstance(body, MsiX):
        return f"MSI-X: Enable{_flag(body.enabled)} Count={body.table_size} Masked{_flag(body.function_mask)}"
    if isinstance(body, Express):
        slot = f" (Slot{_flag(body.slot_implemented)})" if body.port_type in (0x4, 0x6) else ""
        return (
            f"Express (v{body.version}) {body.port_type_name}{slot}, "
            f"MSI {body.interrupt_message_number:02x}"
        )
    if isinstance(body, VendorSpecific):
        return f"Vendor Specific Information: Len={body.length:02x}"
    return cap.name


def _cap_details(cap: Capability) -> Iterator[str]:
    body = cap.body
    if isinstance(body, PowerManagement):
        pme = ",".join(
            f"{s}{_flag(body.pme_support, 1 << i)}"
            for i, s in enumerate(("D0", "D1", "D2", "D3hot", "D3cold"))
        )
        yield (
            f"Flags: PMEClk{_flag(body.pme_clock)} DSI{_flag(body.dsi)} D1{_flag(body.d1)} "
            f"D2{_flag(body.d2)} AuxCurrent={body.aux_current_ma}mA PME({pme})"
        )
        yield (
            f"Status: D{body.power_state} NoSoftRst{_flag(body.no_soft_reset)} "
            f"PME-Enable{_flag(body.pme_enable)} PME{_flag(body.pme_status)}"
        )
    elif isinstance(body, Msi):
        width = 16 if body.is_64bit else 8
        yield f"Address: {body.address:0{width}x}  Data: {body.data:04x}"
        if body.mask_bits is not None:
            yield f"Masking: {body.mask_bits:08x}  Pending: {body.pending_bits:08x}"
    elif isinstance(body, MsiX):
        yield f"Vector table: BAR={body.table_bir} offset={body.table_offset:08x}"
        yield f"PBA: BAR={body.pba_bir} offset={body.pba_offset:08x}"
    elif isinstance(body, Express):
        yield f"DevCap: MaxPayload {body.max_payload_supported} bytes"
        yield (
            f"LnkCap: Speed code {body.link_max_speed}, Width x{body.link_max_width}; "
            f"LnkSta: Speed code {body.link_speed}, Width x{body.link_width}"
        )


def _ext_summary(ext: ExtendedCapability) -> str:
    body = ext.body
    if isinstance(body, SerialNumber):
        return f"{ext.name} " + "-".join(f"{b:02x}" for b in body.serial.to_bytes(8, "big"))
    if isinstance(body, SrIov):
        return (
            f"{ext.name}: TotalVFs={body.total_vfs} InitialVFs={body.initial_vfs} NumVFs={body.num_vfs} "
            f"VF offset={body.first_vf_offset} stride={body.vf_stride} VF device id={body.vf_device_id:04x} "
            f"Enable{_flag(body.vf_enable)}"
        )
    if isinstance(body, Aer):
        return (
            f"{ext.name}: UESta={body.uncorrectable_status:08x} UEMsk={body.uncorrectable_mask:08x} "
            f"CESta={body.correctable_status:08x} CEMsk={body.correctable_mask:08x}"
        )
    if isinstance(body, Acs):
        return f"{ext.name}: ACSCap={body.capabilities:04x} ACSCtl={body.control:04x}"
    if isinstance(body, Ari):
        return f"{ext.name}: NextFunction={body.next_function} MFVC{_flag(body.mfvc_groups)} ACS{_flag(body.acs_groups)}"
    if isinstance(body, Ltr):
        return f"{ext.name}: Max snoop {body.max_snoop_latency_ns}ns, no-snoop {body.max_no_snoop_latency_ns}ns"
    return ext.name
