"""Decode a config space from bytes: header, BARs, and both capability chains.

Malformed input is data, not an exception: chains are walked with explicit bounds and
whatever is wrong lands in ``ConfigSpace.problems``.  The only errors raised are
:class:`~vmstate.errors.TruncatedError` / :class:`~vmstate.errors.DecodeError` for
input that is not a config space at all (shorter than the 64-byte header, or not 64,
256 or 4096 bytes long).  BAR sizes, which only a device backend knows, come in as an
optional ``index -> size`` mapping.
"""

from __future__ import annotations

from collections.abc import Mapping

from vmstate.errors import DecodeError, TruncatedError
from vmstate.pci.capabilities import CAPABILITY_DECODERS, MsiX
from vmstate.pci.express import Express
from vmstate.pci.extended import EXTENDED_DECODERS
from vmstate.pci.extended_link import LINK_DECODERS
from vmstate.pci.model import (
    Bar,
    Bridge,
    Capability,
    ChainEnd,
    ClassCode,
    ConfigSpace,
    Endpoint,
    ExpansionRom,
    ExtendedCapability,
    Header,
    Window,
)
from vmstate.pci.names import CAPABILITY_NAMES, EXTENDED_CAPABILITY_NAMES
from vmstate.pci.problems import ConfigProblems
from vmstate.pci.registers import (
    BAR0,
    BIST,
    CACHE_LINE_SIZE,
    CAP_EXP,
    CAP_PCIX,
    CAPABILITY_LIST,
    CLASS_DEVICE,
    CLASS_PROG,
    COMMAND,
    CONFIG_SIZES,
    CONVENTIONAL_SIZE,
    DEVICE_ID,
    EXPRESS_SIZE,
    HEADER_SIZE,
    HEADER_TYPE,
    HEADER_TYPE_MULTI_FUNCTION,
    INTERRUPT_LINE,
    INTERRUPT_PIN,
    LATENCY_TIMER,
    MAX_CAPABILITIES,
    MAX_EXTENDED_CAPABILITIES,
    REVISION_ID,
    ROM_INDEX,
    STATUS,
    STATUS_CAP_LIST,
    VENDOR_ID,
    bar_count,
    rom_offset,
    u16,
    u32,
)


def _check_size(data: bytes) -> None:
    if len(data) < HEADER_SIZE:
        raise TruncatedError(
            "config space shorter than the 64-byte header",
            offset=len(data),
            expected=f"at least {HEADER_SIZE} bytes",
            found=f"{len(data)} bytes",
            path=("config",),
        )
    if len(data) not in CONFIG_SIZES:
        raise DecodeError(
            "not a config space size",
            offset=len(data),
            expected="64, 256 or 4096 bytes",
            found=f"{len(data)} bytes",
            path=("config",),
        )


def decode_config(data: bytes, bar_sizes: Mapping[int, int] | None = None) -> ConfigSpace:
    """Decode a 64-, 256- or 4096-byte config space.

    *bar_sizes* maps BAR index (0-5, and 6 for the expansion ROM) to its size in bytes,
    as a device backend reports it (VFIO region sizes); config bytes alone cannot tell.
    """
    data = bytes(data)
    _check_size(data)
    problems = ConfigProblems()
    header = _decode_header(data)
    sizes = dict(bar_sizes or {})
    bars: tuple[Bar, ...] = ()
    rom: ExpansionRom | None = None
    caps: tuple[Capability, ...] = ()
    ext: tuple[ExtendedCapability, ...] = ()
    caps_end = ext_end = None
    if header.header_type in (0, 1):
        bars = _decode_bars(data, header.header_type, sizes, problems)
        rom = _decode_rom(data, header.header_type, sizes.get(ROM_INDEX) or None, problems)
        caps, caps_end = _walk_capabilities(data, header, problems)
        if len(data) == EXPRESS_SIZE:
            ext, ext_end = _walk_extended(data, caps, problems)
    else:
        problems.add(
            "header-type",
            HEADER_TYPE,
            f"header type {header.header_type} is not decoded (only 0 and 1)",
        )
    _check_sizes_used(sizes, header.header_type, problems)
    for cap in caps:
        if isinstance(cap.body, MsiX):
            _check_msix(cap, bars, header.header_type, problems)
    return ConfigSpace(
        size=len(data),
        header=header,
        bars=bars,
        expansion_rom=rom,
        capabilities=caps,
        extended_capabilities=ext,
        capabilities_end=caps_end,
        extended_capabilities_end=ext_end,
        problems=tuple(problems.items),
    )


def _decode_header(data: bytes) -> Header:
    header_type = data[HEADER_TYPE]
    layout = header_type & ~HEADER_TYPE_MULTI_FUNCTION
    base, sub = data[CLASS_DEVICE + 1], data[CLASS_DEVICE]
    endpoint = None
    bridge = None
    if layout == 0:
        endpoint = Endpoint(
            subsystem_vendor_id=u16(data, 0x2C),
            subsystem_id=u16(data, 0x2E),
            cardbus_cis=u32(data, 0x28),
            min_grant=data[0x3E],
            max_latency=data[0x3F],
        )
    elif layout == 1:
        bridge = _decode_bridge(data)
    return Header(
        vendor_id=u16(data, VENDOR_ID),
        device_id=u16(data, DEVICE_ID),
        command=u16(data, COMMAND),
        status=u16(data, STATUS),
        revision_id=data[REVISION_ID],
        class_code=ClassCode(base, sub, data[CLASS_PROG]),
        cache_line_size=data[CACHE_LINE_SIZE],
        latency_timer=data[LATENCY_TIMER],
        header_type=layout,
        multifunction=bool(header_type & HEADER_TYPE_MULTI_FUNCTION),
        bist=data[BIST],
        capabilities_pointer=data[CAPABILITY_LIST],
        interrupt_line=data[INTERRUPT_LINE],
        interrupt_pin=data[INTERRUPT_PIN],
        endpoint=endpoint,
        bridge=bridge,
    )


def _decode_bridge(data: bytes) -> Bridge:
    io_base, io_limit = data[0x1C], data[0x1D]
    io_32 = (io_base & 0x0F) == 0x01
    io_upper_base = u16(data, 0x30) if io_32 else 0
    io_upper_limit = u16(data, 0x32) if io_32 else 0
    io = Window(
        base=io_upper_base << 16 | (io_base & 0xF0) << 8,
        limit=io_upper_limit << 16 | (io_limit & 0xF0) << 8 | 0xFFF,
        width=32 if io_32 else 16,
        known_type=io_base & 0x0F == io_limit & 0x0F and io_base & 0x0F in (0, 1),
        base_register=io_base,
        limit_register=io_limit,
    )
    mem_base, mem_limit = u16(data, 0x20), u16(data, 0x22)
    mem = Window(
        base=(mem_base & 0xFFF0) << 16,
        limit=(mem_limit & 0xFFF0) << 16 | 0xFFFFF,
        width=32,
        known_type=mem_base & 0x0F == 0 and mem_limit & 0x0F == 0,
        base_register=mem_base,
        limit_register=mem_limit,
    )
    pref_base, pref_limit = u16(data, 0x24), u16(data, 0x26)
    pref_64 = (pref_base & 0x0F) == 0x01
    pref = Window(
        base=(u32(data, 0x28) if pref_64 else 0) << 32 | (pref_base & 0xFFF0) << 16,
        limit=(u32(data, 0x2C) if pref_64 else 0) << 32 | (pref_limit & 0xFFF0) << 16 | 0xFFFFF,
        width=64 if pref_64 else 32,
        known_type=pref_base & 0x0F == pref_limit & 0x0F and pref_base & 0x0F in (0, 1),
        base_register=pref_base,
        limit_register=pref_limit,
    )
    return Bridge(
        primary_bus=data[0x18],
        secondary_bus=data[0x19],
        subordinate_bus=data[0x1A],
        secondary_latency_timer=data[0x1B],
        io_window=io,
        memory_window=mem,
        prefetchable_window=pref,
        secondary_status=u16(data, 0x1E),
        bridge_control=u16(data, 0x3E),
    )


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _decode_bars(
    data: bytes, header_type: int, sizes: Mapping[int, int], problems: ConfigProblems
) -> tuple[Bar, ...]:
    bars = []
    count = bar_count(header_type)
    index = 0
    while index < count:
        offset = BAR0 + 4 * index
        raw = u32(data, offset)
        if raw == 0xFFFFFFFF:
            raw = 0  # all ones: nothing answers there, not a BAR (as Linux and lspci read it)
        size = sizes.get(index) or None
        width = 1
        mem_type = 0
        if raw & 0x1:
            kind, is_64, prefetchable, address = "io", False, False, raw & ~0x3
        else:
            kind, prefetchable, address = "memory", bool(raw & 0x8), raw & ~0xF
            mem_type = (raw >> 1) & 0x3
            is_64 = mem_type == 0x2
            if mem_type == 0x3:
                problems.add("bar-type", offset, f"BAR {index} has the reserved memory type 3")
            if is_64 and index + 1 >= count:
                problems.add(
                    "bar-64", offset, f"64-bit BAR {index} has no register for its upper half"
                )
                is_64 = False
            elif is_64:
                address |= u32(data, offset + 4) << 32
                width = 2
        if size is not None and not (
            _is_power_of_two(size) and size >= (4 if kind == "io" else 16)
        ):
            problems.add("bar-size", offset, f"BAR {index} size {size:#x} is not a valid BAR size")
            size = None  # not to be believed: neither compared nor used for masks
        if raw or size:
            bars.append(Bar(index, offset, kind, mem_type, is_64, prefetchable, address, size))
        if width == 2 and sizes.get(index + 1):
            problems.add(
                "bar-size",
                offset + 4,
                f"size given for BAR {index + 1}, the upper half of BAR {index}",
            )
        index += width
    return tuple(bars)


def _decode_rom(
    data: bytes, header_type: int, size: int | None, problems: ConfigProblems
) -> ExpansionRom | None:
    offset = rom_offset(header_type)
    raw = u32(data, offset)
    if size is not None and not (_is_power_of_two(size) and size >= 0x800):
        problems.add("bar-size", offset, f"expansion ROM size {size:#x} is not a valid ROM size")
        size = None
    if not raw and not size:
        return None
    return ExpansionRom(offset, raw & 0xFFFFF800, bool(raw & 0x1), size)


def _check_sizes_used(sizes: Mapping[int, int], header_type: int, problems: ConfigProblems) -> None:
    """A size for a BAR index that cannot exist is a caller mistake worth reporting."""
    valid = set(range(bar_count(header_type) if header_type in (0, 1) else 0)) | {ROM_INDEX}
    for index, size in sorted(sizes.items()):
        if size and index not in valid:
            problems.add(
                "bar-size", BAR0, f"size given for BAR {index}, which this header has not got"
            )


def _check_msix(
    cap: Capability, bars: tuple[Bar, ...], header_type: int, problems: ConfigProblems
) -> None:
    body = cap.body
    assert isinstance(body, MsiX)
    table_bytes = body.table_size * 16
    pba_bytes = (body.table_size + 63) // 64 * 8
    for what, bir, offset, length, reg in (
        ("table", body.table_bir, body.table_offset, table_bytes, cap.offset + 4),
        ("PBA", body.pba_bir, body.pba_offset, pba_bytes, cap.offset + 8),
    ):
        if bir >= bar_count(header_type):
            problems.add("msix-bir", reg, f"MSI-X {what} BIR {bir} names no BAR of this header")
            continue
        bar = next((b for b in bars if b.index == bir), None)
        upper = next((b for b in bars if b.is_64bit and b.index + 1 == bir), None)
        if upper is not None:
            problems.add(
                "msix-bir", reg, f"MSI-X {what} BIR {bir} is the upper half of BAR {bir - 1}"
            )
        elif bar is not None and bar.kind == "io":
            problems.add("msix-bir", reg, f"MSI-X {what} BIR {bir} is an I/O BAR")
        elif bar is not None and bar.size is not None and offset + length > bar.size:
            problems.add(
                "msix-outside-bar",
                reg,
                f"MSI-X {what} ({length:#x} bytes at {offset:#x}) ends past BAR {bir} ({bar.size:#x} bytes)",
            )
    if body.table_bir == body.pba_bir and (
        body.table_offset < body.pba_offset + pba_bytes
        and body.pba_offset < body.table_offset + table_bytes
    ):
        problems.add("msix-overlap", cap.offset + 4, "MSI-X table and PBA overlap")


def _walk_capabilities(
    data: bytes, header: Header, problems: ConfigProblems
) -> tuple[tuple[Capability, ...], ChainEnd | None]:
    """The standard capability list: bounded, each pointer checked before it is followed."""
    if not header.status & STATUS_CAP_LIST:
        return (), None
    caps: list[Capability] = []
    seen: set[int] = set()
    pointer_at = CAPABILITY_LIST
    where = data[CAPABILITY_LIST] & ~0x3  # the low two bits are reserved: mask, as the spec says
    # 48 distinct dwords lie between 0x40 and 0x100: pass 49, if reached, finds a revisit
    for _ in range(MAX_CAPABILITIES + 1):
        if not where:
            break
        if where < HEADER_SIZE:
            problems.add(
                "cap-pointer", pointer_at, f"capability pointer {where:#04x} points into the header"
            )
            return tuple(caps), ChainEnd(where, "pointer-low")
        if where + 4 > len(data):
            # only in a 64-byte header read without the rest: nothing wrong, nothing to read
            return tuple(caps), ChainEnd(where, "unreadable")
        if where in seen:
            problems.add("cap-loop", pointer_at, f"capability chain loops back to {where:#04x}")
            return tuple(caps), ChainEnd(where, "looped")
        seen.add(where)
        cap_id = data[where]
        if cap_id == 0xFF:
            problems.add("cap-broken", where, "capability id 0xff: the chain is broken")
            return tuple(caps), ChainEnd(where, "broken")
        nxt = data[where + 1] & ~0x3
        decoder = CAPABILITY_DECODERS.get(cap_id)
        body = decoder(data, where, problems) if decoder else None
        name = CAPABILITY_NAMES.get(cap_id, f"Capability {cap_id:#04x}")
        caps.append(Capability(where, cap_id, name, nxt, u16(data, where + 2), body))
        pointer_at = where + 1
        where = nxt
    return tuple(caps), None


def _walk_extended(
    data: bytes, caps: tuple[Capability, ...], problems: ConfigProblems
) -> tuple[tuple[ExtendedCapability, ...], ChainEnd | None]:
    """The extended capability list at 0x100: bounded, each pointer checked before it is followed.

    Only PCI Express and PCI-X (Mode 2) functions have config space past 0x100."""
    first = u32(data, CONVENTIONAL_SIZE)
    if not any(cap.id in (CAP_EXP, CAP_PCIX) for cap in caps):
        if first not in (0, 0xFFFFFFFF):
            problems.add(
                "ext-not-express",
                CONVENTIONAL_SIZE,
                "extended config space is not walked: no PCI Express capability",
            )
        return (), None
    # the last PCI Express capability's port type, as lspci takes it (a function has one)
    types = [c.body.port_type for c in caps if isinstance(c.body, Express)]
    port_type = types[-1] if types else None
    out: list[ExtendedCapability] = []
    seen: set[int] = set()
    where = CONVENTIONAL_SIZE
    # each entry takes a distinct dword of 0x100-0xfff, so the 960th entry's pointer ends the walk
    for _ in range(MAX_EXTENDED_CAPABILITIES):
        header = u32(data, where)
        if header in (0, 0xFFFFFFFF):
            if where == CONVENTIONAL_SIZE:
                return tuple(out), None
            problems.add(
                "ext-empty",
                where,
                f"extended capability chain reaches an empty header at {where:#05x}",
            )
            return tuple(out), ChainEnd(where, "empty")
        seen.add(where)
        cap_id = header & 0xFFFF
        nxt = (header >> 20) & ~0x3
        body = None
        decoder = EXTENDED_DECODERS.get(cap_id) or LINK_DECODERS.get(cap_id)
        name = EXTENDED_CAPABILITY_NAMES.get(cap_id, f"Extended Capability {cap_id:#06x}")
        if decoder is not None:
            decode, size = decoder
            if where + size <= len(data):
                body = decode(data, where, port_type)
            else:
                problems.add(
                    "cap-truncated",
                    where,
                    f"{name} capability needs {size} bytes at {where:#x}, past the end of config space",
                )
        out.append(ExtendedCapability(where, cap_id, (header >> 16) & 0xF, name, nxt, body))
        if not nxt:
            return tuple(out), None
        if nxt < CONVENTIONAL_SIZE:
            problems.add(
                "ext-pointer", where, f"extended capability pointer {nxt:#05x} is below 0x100"
            )
            return tuple(out), ChainEnd(nxt, "pointer-low")
        if nxt in seen:
            problems.add("ext-loop", where, f"extended capability chain loops back to {nxt:#05x}")
            return tuple(out), ChainEnd(nxt, "looped")
        where = nxt
    return tuple(out), None
