"""A decoded config space as the text ``lspci -vvv`` prints for it.

Line for line what pciutils' lspci (lspci.c, ls-caps.c, ls-ecaps.c) shows for a
function whose config space it reads from a dump: the same lines, flags and words.
What lspci learns only from the kernel (driver, NUMA node, IOMMU group) is not in
config space and not here; BAR sizes are, when the source gave them.  Our decode
problems follow lspci's lines, each on a ``\\tProblem:`` line of its own.
"""

from __future__ import annotations

from collections.abc import Iterator

from vmstate.pci.capabilities import SubsystemId
from vmstate.pci.flags import sign
from vmstate.pci.ids import PciIds, pci_ids
from vmstate.pci.model import Bar, Bridge, ConfigSpace, PciAddress, Window
from vmstate.pci.registers import CAP_SSVID
from vmstate.pci.render_caps import render_capability
from vmstate.pci.render_extended import render_extended


def render_text(
    space: ConfigSpace,
    address: PciAddress | None = None,
    names: PciIds | None = None,
    irq: int | None = None,
) -> str:
    """``lspci -vvv`` text for *space*; *address* gives the address line (and what lspci
    decides by it), *names* the pci.ids database (the system's by default), *irq* the
    kernel's IRQ for the function where known (else the config's Interrupt Line)."""
    return "\n".join(_render(space, address, names or pci_ids(), irq)) + "\n"


def size_text(size: int) -> str:
    """A size as lspci shows it: in the largest of K, M, G, T that divides it."""
    suffix = ""
    for unit in ("K", "M", "G", "T"):
        if size % 1024:
            break
        size //= 1024
        suffix = unit
    return f"{size}{suffix}"


def _render(
    space: ConfigSpace, address: PciAddress | None, names: PciIds, irq: int | None
) -> Iterator[str]:
    h = space.header
    c = h.class_code
    title = f"{names.class_name(c.base, c.sub)}: {names.device_name(h.vendor_id, h.device_id)}"
    if h.revision_id:
        title += f" (rev {h.revision_id:02x})"
    prog_if = names.prog_if_name(c.base, c.sub, c.prog_if)
    if c.prog_if or prog_if:
        title += f" (prog-if {c.prog_if:02x}" + (f" [{prog_if}]" if prog_if else "") + ")"
    yield f"{address} {title}" if address is not None else title
    subsystem = _subsystem(space)
    if subsystem is not None and subsystem[0] not in (0, 0xFFFF):
        yield f"\tSubsystem: {names.subsystem_name(h.vendor_id, h.device_id, *subsystem)}"
    known = h.header_type in (0, 1)
    if h.header_type == 0 and (c.base, c.sub) == (0x06, 0x04):
        yield f"\t!!! Invalid class {c.base:02x}{c.sub:02x} for header type 00"
    elif h.header_type == 1 and c.base != 0x06:
        yield f"\t!!! Invalid class {c.base:02x}{c.sub:02x} for header type 01"
    elif not known:
        yield f"\t!!! Unknown header type {h.header_type:02x}"
    if known:
        yield from _command_status(space)
    line = h.interrupt_line if irq is None else irq
    if (known and h.interrupt_pin) or line:
        # lspci's letter is a byte: pins past D (invalid) wrap as its char arithmetic does
        pin = chr((0x40 + h.interrupt_pin) & 0xFF) if known and h.interrupt_pin else "?"
        yield f"\tInterrupt: pin {pin} routed to IRQ {line}"
    if known and h.bist & 0x80:
        yield "\tBIST is running" if h.bist & 0x40 else f"\tBIST result: {h.bist & 0x0F:02x}"
    if not known:
        yield from _problems(space)
        return
    yield from _bars(space)
    if h.bridge is not None:
        yield from _bridge(h.bridge, space)
    else:
        yield from _rom(space)
    yield from _capabilities(space, address, names)
    yield from _problems(space)


def _subsystem(space: ConfigSpace) -> tuple[int, int] | None:
    h = space.header
    if h.endpoint is not None:
        return h.endpoint.subsystem_vendor_id, h.endpoint.subsystem_id
    ssvid = space.capability(CAP_SSVID)
    if ssvid is not None and isinstance(ssvid.body, SubsystemId):
        return ssvid.body.vendor_id, ssvid.body.device_id
    return None


def _command_status(space: ConfigSpace) -> Iterator[str]:
    h = space.header
    cmd, st = h.command, h.status
    yield (
        f"\tControl: I/O{sign(cmd & 0x1)} Mem{sign(cmd & 0x2)} BusMaster{sign(cmd & 0x4)} "
        f"SpecCycle{sign(cmd & 0x8)} MemWINV{sign(cmd & 0x10)} VGASnoop{sign(cmd & 0x20)} "
        f"ParErr{sign(cmd & 0x40)} Stepping{sign(cmd & 0x80)} SERR{sign(cmd & 0x100)} "
        f"FastB2B{sign(cmd & 0x200)} DisINTx{sign(cmd & 0x400)}"
    )
    yield (
        f"\tStatus: Cap{sign(st & 0x10)} 66MHz{sign(st & 0x20)} UDF{sign(st & 0x40)} "
        f"FastB2B{sign(st & 0x80)} ParErr{sign(st & 0x100)} DEVSEL={_devsel(st)} "
        f">TAbort{sign(st & 0x800)} <TAbort{sign(st & 0x1000)} <MAbort{sign(st & 0x2000)} "
        f">SERR{sign(st & 0x4000)} <PERR{sign(st & 0x8000)} INTx{sign(st & 0x8)}"
    )
    if cmd & 0x4:
        line = f"\tLatency: {h.latency_timer}"
        grant = h.endpoint.min_grant if h.endpoint is not None else 0
        latency = h.endpoint.max_latency if h.endpoint is not None else 0
        if grant or latency:
            parts = [f"{grant * 250}ns min"] if grant else []
            parts += [f"{latency * 250}ns max"] if latency else []
            line += f" ({', '.join(parts)})"
        if h.cache_line_size:
            line += f", Cache Line Size: {h.cache_line_size * 4} bytes"
        yield line


def _devsel(status: int) -> str:
    return ("fast", "medium", "slow", "??")[(status >> 9) & 0x3]


def _bars(space: ConfigSpace) -> Iterator[str]:
    cmd = space.header.command
    for bar in space.bars:
        yield f"\tRegion {bar.index}: {_bar_text(bar, cmd)}"


def _bar_text(bar: Bar, cmd: int) -> str:
    size = f" [size={size_text(bar.size)}]" if bar.size else ""
    if bar.kind == "io":
        at = f"{bar.address:04x}" if bar.address or cmd & 0x1 else "<unassigned>"
        return f"I/O ports at {at}{'' if cmd & 0x1 else ' [disabled]'}{size}"
    # a 64-bit BAR in the last register has no upper half: its address is unknown
    unknown = not bar.address or (bar.memory_type == 2 and not bar.is_64bit)
    at = "<unassigned>" if unknown else f"{bar.address:08x}"
    bits = ("32-bit", "low-1M", "64-bit", "type 3")[bar.memory_type]
    kind = f"({bits}, {'' if bar.prefetchable else 'non-'}prefetchable)"
    return f"Memory at {at} {kind}{'' if cmd & 0x2 else ' [disabled]'}{size}"


def _rom(space: ConfigSpace) -> Iterator[str]:
    rom = space.expansion_rom
    if rom is None:
        return
    at = f"{rom.address:08x}" if rom.address else "<unassigned>"
    state = ""
    if not rom.enabled:
        state = " [disabled]"
    elif not space.header.command & 0x2:
        state = " [disabled by cmd]"
    size = f" [size={size_text(rom.size)}]" if rom.size else ""
    yield f"\tExpansion ROM at {at}{state}{size}"


def _window(what: str, window: Window, digits: int) -> str:
    text = f"\t{what} behind bridge: {window.base:0{digits}x}-{window.limit:0{digits}x}"
    if window.enabled:
        text += f" [size={size_text(window.limit - window.base + 1)}]"
    else:
        text += " [disabled]"
    return f"{text} [{window.width}-bit]"


def _bridge(b: Bridge, space: ConfigSpace) -> Iterator[str]:
    yield (
        f"\tBus: primary={b.primary_bus:02x}, secondary={b.secondary_bus:02x}, "
        f"subordinate={b.subordinate_bus:02x}, sec-latency={b.secondary_latency_timer}"
    )
    for what, window, unknown in (
        ("I/O", b.io_window, "I/O"),
        ("Memory", b.memory_window, "memory"),
        ("Prefetchable memory", b.prefetchable_window, "prefetchable memory"),
    ):
        if window.known_type:
            yield _window(what, window, window.width // 4)
        else:
            yield (
                f"\t!!! Unknown {unknown} range types "
                f"{window.base_register:x}/{window.limit_register:x}"
            )
    s = b.secondary_status
    yield (
        f"\tSecondary status: 66MHz{sign(s & 0x20)} FastB2B{sign(s & 0x80)} ParErr{sign(s & 0x100)} "
        f"DEVSEL={_devsel(s)} >TAbort{sign(s & 0x800)} <TAbort{sign(s & 0x1000)} "
        f"<MAbort{sign(s & 0x2000)} <SERR{sign(s & 0x4000)} <PERR{sign(s & 0x8000)}"
    )
    yield from _rom(space)
    c = b.bridge_control
    yield (
        f"\tBridgeCtl: Parity{sign(c & 0x1)} SERR{sign(c & 0x2)} NoISA{sign(c & 0x4)} "
        f"VGA{sign(c & 0x8)} VGA16{sign(c & 0x10)} MAbort{sign(c & 0x20)} >Reset{sign(c & 0x40)} "
        f"FastB2B{sign(c & 0x80)}"
    )
    yield (
        f"\t\tPriDiscTmr{sign(c & 0x100)} SecDiscTmr{sign(c & 0x200)} "
        f"DiscTmrStat{sign(c & 0x400)} DiscTmrSERREn{sign(c & 0x800)}"
    )


def _capabilities(space: ConfigSpace, address: PciAddress | None, names: PciIds) -> Iterator[str]:
    for cap in space.capabilities:
        first, *rest = render_capability(cap, space, address, names)
        yield f"\tCapabilities: [{cap.offset:02x}] {first}"
        yield from rest
    end = space.capabilities_end
    if end is not None and end.reason == "unreadable":
        yield "\tCapabilities: <access denied>"
    elif end is not None and end.reason in ("looped", "broken"):
        yield f"\tCapabilities: [{end.offset:02x}] <chain {end.reason}>"
    for ext in space.extended_capabilities:
        first, *rest = render_extended(ext, space)
        yield f"\tCapabilities: [{ext.offset:03x} v{ext.version}] {first}"
        yield from rest
    end = space.extended_capabilities_end
    if end is not None and end.reason == "looped":
        again = next(e for e in space.extended_capabilities if e.offset == end.offset)
        yield f"\tCapabilities: [{end.offset:03x} v{again.version}] <chain looped>"


def _problems(space: ConfigSpace) -> Iterator[str]:
    for problem in space.problems:
        yield f"\tProblem: {problem}"
