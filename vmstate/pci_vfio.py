"""PCI configuration space: decode it, and check one against another, as QEMU does.

A migrated PCI device carries its 256- or 4096-byte config space ("PCIDevice"/"config");
before a VFIO device's state is loaded we want to know, from bytes alone, whether the
destination device is the same kind of device with the same layout.  Everything here
is a pure function over bytes: no device I/O, and BAR sizes (which only a device
backend knows) come in as an optional ``index -> size`` mapping.

Malformed input is data, not an exception: chains are walked with explicit bounds and
whatever is wrong lands in a ``problems`` tuple.  The only errors raised are
:class:`~vmstate.errors.TruncatedError` / :class:`~vmstate.errors.DecodeError` for
input that is not a config space at all (shorter than the 64-byte header, or not 64,
256 or 4096 bytes long).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from vmstate.errors import DecodeError, TruncatedError

HEADER_SIZE = 64
CONVENTIONAL_SIZE = 256
EXPRESS_SIZE = 4096
CONFIG_SIZES = (HEADER_SIZE, CONVENTIONAL_SIZE, EXPRESS_SIZE)

#: at most this many standard capabilities ((256 - 64) / 4 dwords, Linux's PCI_FIND_CAP_TTL)
MAX_CAPABILITIES = 48
#: at most this many extended capabilities (one per dword of the extended space)
MAX_EXTENDED_CAPABILITIES = (EXPRESS_SIZE - CONVENTIONAL_SIZE) // 4

ROM_INDEX = 6  #: ``bar_sizes`` key of the expansion ROM (QEMU's PCI_ROM_SLOT, VFIO's ROM region)

# Header registers.
_VENDOR_ID = 0x00
_DEVICE_ID = 0x02
_COMMAND = 0x04
_STATUS = 0x06
_REVISION_ID = 0x08
_CLASS_PROG = 0x09
_CLASS_DEVICE = 0x0A
_CACHE_LINE_SIZE = 0x0C
_LATENCY_TIMER = 0x0D
_HEADER_TYPE = 0x0E
_BIST = 0x0F
_BAR0 = 0x10
_CAPABILITY_LIST = 0x34
_INTERRUPT_LINE = 0x3C
_INTERRUPT_PIN = 0x3D
_STATUS_CAP_LIST = 0x10
_HEADER_TYPE_MULTI_FUNCTION = 0x80

# Capability ids this module decodes or builds masks for.
CAP_PM = 0x01
CAP_SLOTID = 0x04
CAP_MSI = 0x05
CAP_PCIX = 0x07
CAP_VNDR = 0x09
CAP_SSVID = 0x0D
CAP_EXP = 0x10
CAP_MSIX = 0x11
EXT_AER = 0x0001
EXT_DSN = 0x0003
EXT_ACS = 0x000D
EXT_ARI = 0x000E
EXT_ATS = 0x000F
EXT_SRIOV = 0x0010
EXT_LTR = 0x0018

CAPABILITY_NAMES: Mapping[int, str] = {
    0x00: "Null",
    0x01: "Power Management",
    0x02: "AGP",
    0x03: "Vital Product Data",
    0x04: "Slot Identification",
    0x05: "MSI",
    0x06: "CompactPCI Hot Swap",
    0x07: "PCI-X",
    0x08: "HyperTransport",
    0x09: "Vendor Specific",
    0x0A: "Debug Port",
    0x0B: "CompactPCI Central Resource Control",
    0x0C: "PCI Standard Hot-Plug Controller",
    0x0D: "Bridge Subsystem Vendor ID",
    0x0E: "AGP 8x",
    0x0F: "Secure Device",
    0x10: "PCI Express",
    0x11: "MSI-X",
    0x12: "SATA Data/Index Configuration",
    0x13: "Advanced Features",
    0x14: "Enhanced Allocation",
    0x15: "Flattening Portal Bridge",
}

EXTENDED_CAPABILITY_NAMES: Mapping[int, str] = {
    0x0000: "Null",
    0x0001: "Advanced Error Reporting",
    0x0002: "Virtual Channel",
    0x0003: "Device Serial Number",
    0x0004: "Power Budgeting",
    0x0005: "Root Complex Link Declaration",
    0x0006: "Root Complex Internal Link Control",
    0x0007: "Root Complex Event Collector Endpoint Association",
    0x0008: "Multi-Function Virtual Channel",
    0x0009: "Virtual Channel (MFVC present)",
    0x000A: "Root Complex Register Block Header",
    0x000B: "Vendor-Specific Extended",
    0x000C: "Configuration Access Correlation",
    0x000D: "Access Control Services",
    0x000E: "Alternative Routing-ID Interpretation",
    0x000F: "Address Translation Services",
    0x0010: "Single Root I/O Virtualization",
    0x0011: "Multi-Root I/O Virtualization",
    0x0012: "Multicast",
    0x0013: "Page Request Interface",
    0x0014: "Reserved for AMD",
    0x0015: "Resizable BAR",
    0x0016: "Dynamic Power Allocation",
    0x0017: "TPH Requester",
    0x0018: "Latency Tolerance Reporting",
    0x0019: "Secondary PCI Express",
    0x001A: "Protocol Multiplexing",
    0x001B: "Process Address Space ID",
    0x001C: "LN Requester",
    0x001D: "Downstream Port Containment",
    0x001E: "L1 PM Substates",
    0x001F: "Precision Time Measurement",
    0x0020: "PCI Express over M-PHY",
    0x0021: "FRS Queueing",
    0x0022: "Readiness Time Reporting",
    0x0023: "Designated Vendor-Specific",
    0x0024: "VF Resizable BAR",
    0x0025: "Data Link Feature",
    0x0026: "Physical Layer 16.0 GT/s",
    0x0027: "Lane Margining at the Receiver",
    0x0028: "Hierarchy ID",
    0x0029: "Native PCIe Enclosure Management",
    0x002A: "Physical Layer 32.0 GT/s",
    0x002B: "Alternate Protocol",
    0x002C: "System Firmware Intermediary",
    0x002D: "Shadow Functions",
    0x002E: "Data Object Exchange",
    0x002F: "Device 3",
    0x0030: "Integrity and Data Encryption",
    0x0031: "Physical Layer 64.0 GT/s",
    0x0032: "Flit Logging",
}

CLASS_NAMES: Mapping[int, str] = {
    0x00: "Unclassified device",
    0x01: "Mass storage controller",
    0x02: "Network controller",
    0x03: "Display controller",
    0x04: "Multimedia controller",
    0x05: "Memory controller",
    0x06: "Bridge",
    0x07: "Communication controller",
    0x08: "Generic system peripheral",
    0x09: "Input device controller",
    0x0A: "Docking station",
    0x0B: "Processor",
    0x0C: "Serial bus controller",
    0x0D: "Wireless controller",
    0x0E: "Intelligent controller",
    0x0F: "Satellite communications controller",
    0x10: "Encryption controller",
    0x11: "Signal processing controller",
    0x12: "Processing accelerators",
    0x13: "Non-Essential Instrumentation",
    0x40: "Coprocessor",
    0xFF: "Unassigned class",
}

SUBCLASS_NAMES: Mapping[int, str] = {
    0x0000: "Non-VGA unclassified device",
    0x0001: "VGA compatible unclassified device",
    0x0100: "SCSI storage controller",
    0x0101: "IDE interface",
    0x0102: "Floppy disk controller",
    0x0103: "IPI bus controller",
    0x0104: "RAID bus controller",
    0x0105: "ATA controller",
    0x0106: "SATA controller",
    0x0107: "Serial Attached SCSI controller",
    0x0108: "Non-Volatile memory controller",
    0x0200: "Ethernet controller",
    0x0280: "Network controller",
    0x0300: "VGA compatible controller",
    0x0302: "3D controller",
    0x0401: "Multimedia audio controller",
    0x0403: "Audio device",
    0x0500: "RAM memory",
    0x0600: "Host bridge",
    0x0601: "ISA bridge",
    0x0604: "PCI bridge",
    0x0607: "CardBus bridge",
    0x0700: "Serial controller",
    0x0805: "SD Host controller",
    0x0C03: "USB controller",
    0x0C05: "SMBus",
    0x1200: "Processing accelerators",
}

EXPRESS_PORT_TYPES: Mapping[int, str] = {
    0x0: "Endpoint",
    0x1: "Legacy Endpoint",
    0x4: "Root Port",
    0x5: "Upstream Port",
    0x6: "Downstream Port",
    0x7: "PCI Express to PCI/PCI-X Bridge",
    0x8: "PCI/PCI-X to PCI Express Bridge",
    0x9: "Root Complex Integrated Endpoint",
    0xA: "Root Complex Event Collector",
}


def _u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "little")


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def _u64(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 8], "little")


@attrs.frozen
class Problem:
    """One thing wrong with a config space, or between two; ``code`` is stable for programs."""

    code: str
    offset: int
    message: str

    def __str__(self) -> str:
        return f"[{self.offset:03x}] {self.message}"


# ---------------------------------------------------------------------------
# Decoded values


@attrs.frozen
class ClassCode:
    """Base class, sub-class and programming interface (bytes 0x0b, 0x0a, 0x09)."""

    base: int
    sub: int
    prog_if: int
    name: str


@attrs.frozen
class Window:
    """An address range a bridge forwards downstream; disabled when base > limit."""

    base: int
    limit: int
    width: int  # address bits the window decodes: 16 or 32 (I/O), 32 or 64 (memory)

    @property
    def enabled(self) -> bool:
        return self.base <= self.limit


@attrs.frozen
class Endpoint:
    """Type-0 header fields past the BARs."""

    subsystem_vendor_id: int
    subsystem_id: int
    cardbus_cis: int
    min_grant: int
    max_latency: int


@attrs.frozen
class Bridge:
    """Type-1 (PCI-to-PCI bridge) header fields past the BARs."""

    primary_bus: int
    secondary_bus: int
    subordinate_bus: int
    secondary_latency_timer: int
    io_window: Window
    memory_window: Window
    prefetchable_window: Window
    secondary_status: int
    bridge_control: int


@attrs.frozen
class Header:
    """The first 64 bytes that every function has."""

    vendor_id: int
    device_id: int
    command: int
    status: int
    revision_id: int
    class_code: ClassCode
    cache_line_size: int
    latency_timer: int
    header_type: int  # layout, without the multi-function bit
    multifunction: bool
    bist: int
    capabilities_pointer: int
    interrupt_line: int
    interrupt_pin: int
    endpoint: Endpoint | None
    bridge: Bridge | None


@attrs.frozen
class Bar:
    """One Base Address Register; a 64-bit BAR takes its index and the next."""

    index: int
    offset: int
    kind: str  # "io" or "memory"
    is_64bit: bool
    prefetchable: bool
    address: int
    size: int | None


@attrs.frozen
class ExpansionRom:
    offset: int
    address: int
    enabled: bool
    size: int | None


@attrs.frozen
class PowerManagement:
    version: int
    pme_clock: bool
    dsi: bool
    aux_current_ma: int
    d1: bool
    d2: bool
    pme_support: int  # bit per state: D0, D1, D2, D3hot, D3cold
    power_state: int  # D0..D3hot
    no_soft_reset: bool
    pme_enable: bool
    pme_status: bool


@attrs.frozen
class Msi:
    """MSI: vector counts, 64-bit addressing, per-vector masking (offsets are into config)."""

    enabled: bool
    vectors: int  # Multiple Message Capable
    vectors_enabled: int  # Multiple Message Enable
    is_64bit: bool
    per_vector_masking: bool
    address: int
    data: int
    mask_offset: int | None
    pending_offset: int | None
    mask_bits: int | None
    pending_bits: int | None
    size: int  # bytes of the capability structure


@attrs.frozen
class MsiX:
    """MSI-X: table and PBA live in BARs (BIR + offset), the entries count is table_size."""

    enabled: bool
    function_mask: bool
    table_size: int
    table_bir: int
    table_offset: int
    pba_bir: int
    pba_offset: int


@attrs.frozen
class Express:
    """PCI Express capability: the port type decides which registers exist."""

    version: int
    port_type: int
    port_type_name: str
    slot_implemented: bool
    interrupt_message_number: int
    max_payload_supported: int  # bytes
    link_max_speed: int  # Link Capabilities encoding: 1 = 2.5 GT/s, 2 = 5 GT/s, ...
    link_max_width: int
    link_speed: int
    link_width: int
    size: int  # bytes of the capability structure


@attrs.frozen
class VendorSpecific:
    length: int
    body: bytes  # bytes after the length byte, as far as the length says


@attrs.frozen
class Aer:
    uncorrectable_status: int
    uncorrectable_mask: int
    uncorrectable_severity: int
    correctable_status: int
    correctable_mask: int
    first_error_pointer: int
    ecrc_generation_capable: bool
    ecrc_check_capable: bool


@attrs.frozen
class SrIov:
    """SR-IOV: how many VFs the PF can have and where they appear."""

    capabilities: int
    control: int
    vf_enable: bool
    vf_memory_space: bool
    ari_hierarchy: bool
    status: int
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


@attrs.frozen
class Acs:
    capabilities: int
    control: int
    egress_vector_size: int


@attrs.frozen
class Ari:
    mfvc_groups: bool
    acs_groups: bool
    next_function: int
    control: int


@attrs.frozen
class SerialNumber:
    serial: int


@attrs.frozen
class Ltr:
    max_snoop_latency_ns: int
    max_no_snoop_latency_ns: int


CapabilityBody = PowerManagement | Msi | MsiX | Express | VendorSpecific
ExtendedBody = Aer | SrIov | Acs | Ari | SerialNumber | Ltr


@attrs.frozen
class Capability:
    """One entry of the standard capability list (config offsets 0x40-0xff)."""

    offset: int
    id: int
    name: str
    next: int
    body: CapabilityBody | None


@attrs.frozen
class ExtendedCapability:
    """One entry of the PCI Express extended capability list (offsets 0x100-0xfff)."""

    offset: int
    id: int
    version: int
    name: str
    next: int
    body: ExtendedBody | None


def _plain(value: Any) -> Any:
    """JSON-ready copy: tuples become lists, bytes hex strings."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


@attrs.frozen
class ConfigSpace:
    """A decoded config space; ``problems`` says what could not be decoded and why."""

    size: int
    header: Header
    bars: tuple[Bar, ...]
    expansion_rom: ExpansionRom | None
    capabilities: tuple[Capability, ...]
    extended_capabilities: tuple[ExtendedCapability, ...]
    problems: tuple[Problem, ...]

    def capability(self, cap_id: int) -> Capability | None:
        """The first standard capability with *cap_id*."""
        return next((c for c in self.capabilities if c.id == cap_id), None)

    def extended_capability(self, cap_id: int) -> ExtendedCapability | None:
        """The first extended capability with *cap_id*."""
        return next((c for c in self.extended_capabilities if c.id == cap_id), None)

    @property
    def msi(self) -> Msi | None:
        cap = self.capability(CAP_MSI)
        return cap.body if cap is not None and isinstance(cap.body, Msi) else None

    @property
    def msix(self) -> MsiX | None:
        cap = self.capability(CAP_MSIX)
        return cap.body if cap is not None and isinstance(cap.body, MsiX) else None

    @property
    def express(self) -> Express | None:
        cap = self.capability(CAP_EXP)
        return cap.body if cap is not None and isinstance(cap.body, Express) else None

    def bar(self, index: int) -> Bar | None:
        return next((b for b in self.bars if b.index == index), None)

    def to_json(self) -> dict[str, Any]:
        """Plain dict of ints, strs, bools, lists and None, for ``json.dumps``."""
        return _plain(attrs.asdict(self))

    def render_text(self) -> str:
        """Human text in the manner of ``lspci -vv``."""
        return "\n".join(_render(self)) + "\n"


# ---------------------------------------------------------------------------
# Decoding


class _Problems:
    """Collects problems while decoding; the decoders append, never raise."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, code: str, offset: int, message: str) -> None:
        self.items.append(Problem(code, offset, message))


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
    problems = _Problems()
    header = _decode_header(data)
    sizes = dict(bar_sizes or {})
    bars: tuple[Bar, ...] = ()
    rom: ExpansionRom | None = None
    caps: tuple[Capability, ...] = ()
    ext: tuple[ExtendedCapability, ...] = ()
    if header.header_type in (0, 1):
        bars = _decode_bars(data, header.header_type, sizes, problems)
        rom = _decode_rom(data, header.header_type, sizes.get(ROM_INDEX) or None, problems)
        caps = _walk_capabilities(data, header, problems)
        if len(data) == EXPRESS_SIZE:
            ext = _walk_extended(data, _has_extended_space(caps), problems)
    else:
        problems.add(
            "header-type",
            _HEADER_TYPE,
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
        problems=tuple(problems.items),
    )


def _class_name(base: int, sub: int) -> str:
    return SUBCLASS_NAMES.get(base << 8 | sub) or CLASS_NAMES.get(
        base, f"Class {base:02x}{sub:02x}"
    )


def _decode_header(data: bytes) -> Header:
    header_type = data[_HEADER_TYPE]
    layout = header_type & ~_HEADER_TYPE_MULTI_FUNCTION
    base, sub = data[_CLASS_DEVICE + 1], data[_CLASS_DEVICE]
    endpoint = None
    bridge = None
    if layout == 0:
        endpoint = Endpoint(
            subsystem_vendor_id=_u16(data, 0x2C),
            subsystem_id=_u16(data, 0x2E),
            cardbus_cis=_u32(data, 0x28),
            min_grant=data[0x3E],
            max_latency=data[0x3F],
        )
    elif layout == 1:
        bridge = _decode_bridge(data)
    return Header(
        vendor_id=_u16(data, _VENDOR_ID),
        device_id=_u16(data, _DEVICE_ID),
        command=_u16(data, _COMMAND),
        status=_u16(data, _STATUS),
        revision_id=data[_REVISION_ID],
        class_code=ClassCode(base, sub, data[_CLASS_PROG], _class_name(base, sub)),
        cache_line_size=data[_CACHE_LINE_SIZE],
        latency_timer=data[_LATENCY_TIMER],
        header_type=layout,
        multifunction=bool(header_type & _HEADER_TYPE_MULTI_FUNCTION),
        bist=data[_BIST],
        capabilities_pointer=data[_CAPABILITY_LIST],
        interrupt_line=data[_INTERRUPT_LINE],
        interrupt_pin=data[_INTERRUPT_PIN],
        endpoint=endpoint,
        bridge=bridge,
    )


def _decode_bridge(data: bytes) -> Bridge:
    io_base, io_limit = data[0x1C], data[0x1D]
    io_32 = (io_base & 0x0F) == 0x01
    io_upper_base = _u16(data, 0x30) if io_32 else 0
    io_upper_limit = _u16(data, 0x32) if io_32 else 0
    io = Window(
        base=io_upper_base << 16 | (io_base & 0xF0) << 8,
        limit=io_upper_limit << 16 | (io_limit & 0xF0) << 8 | 0xFFF,
        width=32 if io_32 else 16,
    )
    mem = Window(
        base=(_u16(data, 0x20) & 0xFFF0) << 16,
        limit=(_u16(data, 0x22) & 0xFFF0) << 16 | 0xFFFFF,
        width=32,
    )
    pref_base, pref_limit = _u16(data, 0x24), _u16(data, 0x26)
    pref_64 = (pref_base & 0x0F) == 0x01
    pref = Window(
        base=(_u32(data, 0x28) if pref_64 else 0) << 32 | (pref_base & 0xFFF0) << 16,
        limit=(_u32(data, 0x2C) if pref_64 else 0) << 32 | (pref_limit & 0xFFF0) << 16 | 0xFFFFF,
        width=64 if pref_64 else 32,
    )
    return Bridge(
        primary_bus=data[0x18],
        secondary_bus=data[0x19],
        subordinate_bus=data[0x1A],
        secondary_latency_timer=data[0x1B],
        io_window=io,
        memory_window=mem,
        prefetchable_window=pref,
        secondary_status=_u16(data, 0x1E),
        bridge_control=_u16(data, 0x3E),
    )


def _bar_count(header_type: int) -> int:
    return 6 if header_type == 0 else 2


def _rom_offset(header_type: int) -> int:
    return 0x30 if header_type == 0 else 0x38


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _decode_bars(
    data: bytes, header_type: int, sizes: Mapping[int, int], problems: _Problems
) -> tuple[Bar, ...]:
    bars = []
    count = _bar_count(header_type)
    index = 0
    while index < count:
        offset = _BAR0 + 4 * index
        raw = _u32(data, offset)
        size = sizes.get(index) or None
        width = 1
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
                address |= _u32(data, offset + 4) << 32
                width = 2
        if size is not None and not (
            _is_power_of_two(size) and size >= (4 if kind == "io" else 16)
        ):
            problems.add("bar-size", offset, f"BAR {index} size {size:#x} is not a valid BAR size")
            size = None  # not to be believed: neither compared nor used for masks
        if raw or size:
            bars.append(Bar(index, offset, kind, is_64, prefetchable, address, size))
        if width == 2 and sizes.get(index + 1):
            problems.add(
                "bar-size",
                offset + 4,
                f"size given for BAR {index + 1}, the upper half of BAR {index}",
            )
        index += width
    return tuple(bars)


def _decode_rom(
    data: bytes, header_type: int, size: int | None, problems: _Problems
) -> ExpansionRom | None:
    offset = _rom_offset(header_type)
    raw = _u32(data, offset)
    if size is not None and not (_is_power_of_two(size) and size >= 0x800):
        problems.add("bar-size", offset, f"expansion ROM size {size:#x} is not a valid ROM size")
        size = None
    if not raw and not size:
        return None
    return ExpansionRom(offset, raw & 0xFFFFF800, bool(raw & 0x1), size)


def _check_sizes_used(sizes: Mapping[int, int], header_type: int, problems: _Problems) -> None:
    """A size for a BAR index that cannot exist is a caller mistake worth reporting."""
    valid = set(range(_bar_count(header_type) if header_type in (0, 1) else 0)) | {ROM_INDEX}
    for index, size in sorted(sizes.items()):
        if size and index not in valid:
            problems.add(
                "bar-size", _BAR0, f"size given for BAR {index}, which this header has not got"
            )


def _check_msix(
    cap: Capability, bars: tuple[Bar, ...], header_type: int, problems: _Problems
) -> None:
    body = cap.body
    assert isinstance(body, MsiX)
    table_bytes = body.table_size * 16
    pba_bytes = (body.table_size + 63) // 64 * 8
    for what, bir, offset, length, reg in (
        ("table", body.table_bir, body.table_offset, table_bytes, cap.offset + 4),
        ("PBA", body.pba_bir, body.pba_offset, pba_bytes, cap.offset + 8),
    ):
        if bir >= _bar_count(header_type):
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


# Standard capability bodies.  Each decoder gets the whole config and the capability
# offset and returns the body, or None (with a problem) when it does not fit.


def _fits(data: bytes, offset: int, size: int, what: str, problems: _Problems) -> bool:
    if offset + size <= len(data):
        return True
    problems.add(
        "cap-truncated",
        offset,
        f"{what} capability needs {size} bytes at {offset:#x}, past the end of the {len(data)}-byte config space",
    )
    return False


def _msi_size(flags: int) -> int:
    """Bytes of an MSI capability with *flags* (QEMU's msi_cap_sizeof)."""
    is_64 = bool(flags & 0x0080)
    masking = bool(flags & 0x0100)
    return {(False, False): 0x0A, (True, False): 0x0E, (False, True): 0x14, (True, True): 0x18}[
        (is_64, masking)
    ]


def _decode_pm(data: bytes, where: int, problems: _Problems) -> PowerManagement | None:
    if not _fits(data, where, 8, "Power Management", problems):
        return None
    pmc = _u16(data, where + 2)
    csr = _u16(data, where + 4)
    return PowerManagement(
        version=pmc & 0x7,
        pme_clock=bool(pmc & 0x8),
        dsi=bool(pmc & 0x20),
        aux_current_ma=(0, 55, 100, 160, 220, 270, 320, 375)[(pmc >> 6) & 0x7],
        d1=bool(pmc & 0x200),
        d2=bool(pmc & 0x400),
        pme_support=pmc >> 11,
        power_state=csr & 0x3,
        no_soft_reset=bool(csr & 0x8),
        pme_enable=bool(csr & 0x100),
        pme_status=bool(csr & 0x8000),
    )


def _decode_msi(data: bytes, where: int, problems: _Problems) -> Msi | None:
    if not _fits(data, where, 4, "MSI", problems):
        return None
    flags = _u16(data, where + 2)
    size = _msi_size(flags)
    if not _fits(data, where, size, "MSI", problems):
        return None
    is_64 = bool(flags & 0x0080)
    masking = bool(flags & 0x0100)
    capable = (flags >> 1) & 0x7
    enabled = (flags >> 4) & 0x7
    if capable > 5:
        problems.add("msi-count", where + 2, f"MSI Multiple Message Capable {capable} is reserved")
    if enabled > capable:
        problems.add(
            "msi-count",
            where + 2,
            f"MSI enables {1 << enabled} vectors but is capable of {1 << capable}",
        )
    data_at = where + (0x0C if is_64 else 0x08)
    mask_at = where + (0x10 if is_64 else 0x0C)
    return Msi(
        enabled=bool(flags & 0x1),
        vectors=1 << capable,
        vectors_enabled=1 << enabled,
        is_64bit=is_64,
        per_vector_masking=masking,
        address=(_u32(data, where + 8) << 32 if is_64 else 0) | _u32(data, where + 4),
        data=_u16(data, data_at),
        mask_offset=mask_at if masking else None,
        pending_offset=mask_at + 4 if masking else None,
        mask_bits=_u32(data, mask_at) if masking else None,
        pending_bits=_u32(data, mask_at + 4) if masking else None,
        size=size,
    )


def _decode_msix(data: bytes, where: int, problems: _Problems) -> MsiX | None:
    if not _fits(data, where, 12, "MSI-X", problems):
        return None
    control = _u16(data, where + 2)
    table = _u32(data, where + 4)
    pba = _u32(data, where + 8)
    return MsiX(
        enabled=bool(control & 0x8000),
        function_mask=bool(control & 0x4000),
        table_size=(control & 0x7FF) + 1,
        table_bir=table & 0x7,
        table_offset=table & ~0x7,
        pba_bir=pba & 0x7,
        pba_offset=pba & ~0x7,
    )


def _express_size(flags: int) -> int:
    """Bytes QEMU gives a PCIe capability: version 1 ends after Link Status, 2 after Slot Status 2."""
    return 0x14 if flags & 0xF == 1 else 0x3C


def _decode_express(data: bytes, where: int, problems: _Problems) -> Express | None:
    if not _fits(data, where, 4, "PCI Express", problems):
        return None
    flags = _u16(data, where + 2)
    size = _express_size(flags)
    # Link registers end at 0x14; that much is enough to decode what we keep.
    if not _fits(data, where, min(size, 0x14), "PCI Express", problems):
        return None
    port_type = (flags >> 4) & 0xF
    devcap = _u32(data, where + 4)
    lnkcap = _u32(data, where + 0x0C)
    lnksta = _u16(data, where + 0x12)
    return Express(
        version=flags & 0xF,
        port_type=port_type,
        port_type_name=EXPRESS_PORT_TYPES.get(port_type, f"Unknown type {port_type}"),
        slot_implemented=bool(flags & 0x0100),
        interrupt_message_number=(flags >> 9) & 0x1F,
        max_payload_supported=128 << (devcap & 0x7),
        link_max_speed=lnkcap & 0xF,
        link_max_width=(lnkcap >> 4) & 0x3F,
        link_speed=lnksta & 0xF,
        link_width=(lnksta >> 4) & 0x3F,
        size=size,
    )


def _decode_vendor(data: bytes, where: int, problems: _Problems) -> VendorSpecific | None:
    if not _fits(data, where, 3, "Vendor Specific", problems):
        return None
    length = data[where + 2]
    if length < 3:
        problems.add("cap-length", where + 2, f"Vendor Specific capability length {length} < 3")
        return None
    if not _fits(data, where, length, "Vendor Specific", problems):
        return None
    return VendorSpecific(length=length, body=data[where + 3 : where + length])


_CAP_DECODERS: Mapping[int, Callable[[bytes, int, _Problems], CapabilityBody | None]] = {
    CAP_PM: _decode_pm,
    CAP_MSI: _decode_msi,
    CAP_MSIX: _decode_msix,
    CAP_EXP: _decode_express,
    CAP_VNDR: _decode_vendor,
}


def _walk_capabilities(data: bytes, header: Header, problems: _Problems) -> tuple[Capability, ...]:
    """The standard capability list: bounded, each pointer checked before it is followed."""
    if not header.status & _STATUS_CAP_LIST:
        return ()
    caps: list[Capability] = []
    seen: set[int] = set()
    pointer_at = _CAPABILITY_LIST
    where = data[_CAPABILITY_LIST] & ~0x3  # the low two bits are reserved: mask, as the spec says
    # 48 distinct dwords lie between 0x40 and 0x100: pass 49, if reached, finds a revisit
    for _ in range(MAX_CAPABILITIES + 1):
        if not where:
            break
        if where < HEADER_SIZE:
            problems.add(
                "cap-pointer", pointer_at, f"capability pointer {where:#04x} points into the header"
            )
            break
        if where + 2 > len(data):
            problems.add(
                "cap-pointer",
                pointer_at,
                f"capability pointer {where:#04x} is outside the {len(data)}-byte config space",
            )
            break
        if where in seen:
            problems.add("cap-loop", pointer_at, f"capability chain loops back to {where:#04x}")
            break
        seen.add(where)
        cap_id = data[where]
        if cap_id == 0xFF:
            problems.add("cap-broken", where, "capability id 0xff: the chain is broken")
            break
        nxt = data[where + 1] & ~0x3
        decoder = _CAP_DECODERS.get(cap_id)
        body = decoder(data, where, problems) if decoder else None
        name = CAPABILITY_NAMES.get(cap_id, f"Capability {cap_id:#04x}")
        caps.append(Capability(where, cap_id, name, nxt, body))
        pointer_at = where + 1
        where = nxt
    return tuple(caps)


def _has_extended_space(caps: tuple[Capability, ...]) -> bool:
    """Only PCI Express and PCI-X (Mode 2) functions have config space past 0x100."""
    return any(cap.id in (CAP_EXP, CAP_PCIX) for cap in caps)


# Extended capability bodies.


def _decode_aer(data: bytes, where: int) -> Aer:
    capctl = _u32(data, where + 0x18)
    return Aer(
        uncorrectable_status=_u32(data, where + 0x04),
        uncorrectable_mask=_u32(data, where + 0x08),
        uncorrectable_severity=_u32(data, where + 0x0C),
        correctable_status=_u32(data, where + 0x10),
        correctable_mask=_u32(data, where + 0x14),
        first_error_pointer=capctl & 0x1F,
        ecrc_generation_capable=bool(capctl & 0x20),
        ecrc_check_capable=bool(capctl & 0x80),
    )


def _decode_sriov(data: bytes, where: int) -> SrIov:
    control = _u16(data, where + 0x08)
    return SrIov(
        capabilities=_u32(data, where + 0x04),
        control=control,
        vf_enable=bool(control & 0x1),
        vf_memory_space=bool(control & 0x8),
        ari_hierarchy=bool(control & 0x10),
        status=_u16(data, where + 0x0A),
        initial_vfs=_u16(data, where + 0x0C),
        total_vfs=_u16(data, where + 0x0E),
        num_vfs=_u16(data, where + 0x10),
        function_dependency_link=data[where + 0x12],
        first_vf_offset=_u16(data, where + 0x14),
        vf_stride=_u16(data, where + 0x16),
        vf_device_id=_u16(data, where + 0x1A),
        supported_page_sizes=_u32(data, where + 0x1C),
        system_page_size=_u32(data, where + 0x20),
        vf_bars=tuple(_u32(data, where + 0x24 + 4 * i) for i in range(6)),
    )


def _decode_acs(data: bytes, where: int) -> Acs:
    caps = _u16(data, where + 4)
    return Acs(capabilities=caps, control=_u16(data, where + 6), egress_vector_size=caps >> 8)


def _decode_ari(data: bytes, where: int) -> Ari:
    caps = _u16(data, where + 4)
    return Ari(
        mfvc_groups=bool(caps & 0x1),
        acs_groups=bool(caps & 0x2),
        next_function=caps >> 8,
        control=_u16(data, where + 6),
    )


def _decode_dsn(data: bytes, where: int) -> SerialNumber:
    return SerialNumber(serial=_u64(data, where + 4))


def _ltr_ns(value: int) -> int:
    return (value & 0x3FF) * (1 << (5 * ((value >> 10) & 0x7)))


def _decode_ltr(data: bytes, where: int) -> Ltr:
    return Ltr(
        max_snoop_latency_ns=_ltr_ns(_u16(data, where + 4)),
        max_no_snoop_latency_ns=_ltr_ns(_u16(data, where + 6)),
    )


#: decoder and the structure size it reads
_EXT_DECODERS: Mapping[int, tuple[Callable[[bytes, int], ExtendedBody], int]] = {
    EXT_AER: (_decode_aer, 0x1C),
    EXT_SRIOV: (_decode_sriov, 0x3C),
    EXT_ACS: (_decode_acs, 0x08),
    EXT_ARI: (_decode_ari, 0x08),
    EXT_DSN: (_decode_dsn, 0x0C),
    EXT_LTR: (_decode_ltr, 0x08),
}


def _walk_extended(
    data: bytes, has_extended_space: bool, problems: _Problems
) -> tuple[ExtendedCapability, ...]:
    """The extended capability list at 0x100: bounded, each pointer checked before it is followed."""
    first = _u32(data, CONVENTIONAL_SIZE)
    if not has_extended_space:
        if first not in (0, 0xFFFFFFFF):
            problems.add(
                "ext-not-express",
                CONVENTIONAL_SIZE,
                "extended config space is not walked: no PCI Express capability",
            )
        return ()
    caps: list[ExtendedCapability] = []
    seen: set[int] = set()
    where = CONVENTIONAL_SIZE
    # each entry takes a distinct dword of 0x100-0xfff, so the 960th entry's pointer ends the walk
    for _ in range(MAX_EXTENDED_CAPABILITIES):
        header = _u32(data, where)
        if header in (0, 0xFFFFFFFF):
            if where != CONVENTIONAL_SIZE:
                problems.add(
                    "ext-empty",
                    where,
                    f"extended capability chain reaches an empty header at {where:#05x}",
                )
            break
        seen.add(where)
        cap_id = header & 0xFFFF
        nxt = (header >> 20) & ~0x3
        body = None
        decoder = _EXT_DECODERS.get(cap_id)
        name = EXTENDED_CAPABILITY_NAMES.get(cap_id, f"Extended Capability {cap_id:#06x}")
        if decoder is not None:
            decode, size = decoder
            if where + size <= len(data):
                body = decode(data, where)
            else:
                problems.add(
                    "cap-truncated",
                    where,
                    f"{name} capability needs {size} bytes at {where:#x}, past the end of config space",
                )
        caps.append(ExtendedCapability(where, cap_id, (header >> 16) & 0xF, name, nxt, body))
        if not nxt:
            break
        if nxt < CONVENTIONAL_SIZE:
            problems.add(
                "ext-pointer", where, f"extended capability pointer {nxt:#05x} is below 0x100"
            )
            break
        if nxt in seen:
            problems.add("ext-loop", where, f"extended capability chain loops back to {nxt:#05x}")
            break
        where = nxt
    return tuple(caps)


# ---------------------------------------------------------------------------
# QEMU's config masks


@attrs.frozen
class ConfigMasks:
    """QEMU's per-byte masks for one device's config space (``hw/pci/pci.c``).

    ``cmask`` marks bytes a migration must bring unchanged, ``wmask`` bits the guest
    may write, ``w1cmask`` write-1-to-clear bits.  QEMU's ``get_pci_config_device``
    rejects incoming config where ``(incoming ^ current) & cmask & ~wmask & ~w1cmask``
    is non-zero; :meth:`mismatches` applies the same rule.
    """

    cmask: bytes
    wmask: bytes
    w1cmask: bytes

    @property
    def checked(self) -> bytes:
        """Bits that must match: ``cmask & ~wmask & ~w1cmask``."""
        return bytes(
            c & ~w & ~x & 0xFF for c, w, x in zip(self.cmask, self.wmask, self.w1cmask, strict=True)
        )

    def mismatches(self, incoming: bytes, current: bytes) -> tuple[Problem, ...]:
        """Where *incoming* config differs from *current* in checked bits, QEMU's way."""
        size = len(self.cmask)
        if len(incoming) != size or len(current) != size:
            return (
                Problem(
                    "config-size",
                    0,
                    f"config sizes differ: incoming {len(incoming)}, device {len(current)}, masks {size}",
                ),
            )
        checked = self.checked
        return tuple(
            Problem(
                "config-byte",
                i,
                f"byte {i:#05x}: incoming {incoming[i]:02x}, device {current[i]:02x}, "
                f"checked bits {checked[i]:02x}",
            )
            for i in range(size)
            if (incoming[i] ^ current[i]) & checked[i]
        )


class _MaskBuilder:
    def __init__(self, size: int) -> None:
        self.cmask = bytearray(size)
        self.wmask = bytearray(size)
        self.w1cmask = bytearray(size)

    def set(self, mask: bytearray, offset: int, value: int, width: int) -> None:
        """Set the bits of *value* (little-endian, *width* bytes) at *offset*, inside the space."""
        for i, byte in enumerate(value.to_bytes(width, "little")):
            if offset + i < len(mask):
                mask[offset + i] |= byte

    def clear(self, mask: bytearray, offset: int, width: int) -> None:
        end = min(offset + width, len(mask))
        mask[offset:end] = bytes(max(0, end - offset))

    def capability(self, offset: int, size: int) -> None:
        """What pci_add_capability/pcie_add_capability do: checked, read-only, not W1C."""
        self.set(self.cmask, offset, (1 << (8 * size)) - 1, size)
        self.clear(self.wmask, offset, size)
        self.clear(self.w1cmask, offset, size)

    def writable(self, offset: int, value: int, width: int) -> None:
        self.set(self.wmask, offset, value, width)

    def write_1_to_clear(self, offset: int, value: int, width: int) -> None:
        self.set(self.w1cmask, offset, value, width)

    def done(self) -> ConfigMasks:
        return ConfigMasks(bytes(self.cmask), bytes(self.wmask), bytes(self.w1cmask))


def build_masks(config: bytes, bar_sizes: Mapping[int, int] | None = None) -> ConfigMasks:
    """QEMU's masks for a device whose config space reads *config*.

    QEMU builds its masks while it creates the device model; from bytes we rebuild
    them as ``hw/pci/{pci,msi,msix,pcie,pcie_aer,pcie_sriov}.c`` set them for the
    header, BARs, bridges, MSI, MSI-X, PCI Express and the extended capabilities QEMU
    implements.  Where a device model may widen ``wmask`` (power management, PCIe
    control registers) every register the spec makes writable is taken as writable,
    and capabilities whose body layout QEMU leaves to the device model (or whose size
    vfio-pci takes from the gap to the next one) are checked by their header only.
    The aim: every bit checked here QEMU checks too, so a loader using these masks
    refuses no config QEMU would take.  tests/test_pci_decode.py holds QEMU to that,
    bit by bit, on real migration streams.
    """
    space = decode_config(config, bar_sizes)
    data = bytes(config)
    m = _MaskBuilder(len(data))
    # pci_init_cmask / pci_init_wmask / pci_init_w1cmask
    m.set(m.cmask, _VENDOR_ID, 0xFFFF, 2)
    m.set(m.cmask, _DEVICE_ID, 0xFFFF, 2)
    m.set(m.cmask, _STATUS, _STATUS_CAP_LIST, 1)
    m.set(m.cmask, _REVISION_ID, 0xFF, 1)
    m.set(m.cmask, _CLASS_PROG, 0xFF, 1)
    m.set(m.cmask, _CLASS_DEVICE, 0xFFFF, 2)
    m.set(m.cmask, _HEADER_TYPE, 0xFF, 1)
    m.set(m.cmask, _CAPABILITY_LIST, 0xFF, 1)
    m.writable(_CACHE_LINE_SIZE, 0xFF, 1)
    m.writable(_INTERRUPT_LINE, 0xFF, 1)
    m.writable(_COMMAND, 0x0507, 2)  # I/O, memory, bus master, SERR, INTx disable
    m.writable(HEADER_SIZE, (1 << (8 * (len(data) - HEADER_SIZE))) - 1, len(data) - HEADER_SIZE)
    m.write_1_to_clear(_STATUS, 0xF900, 2)  # parity, target/master aborts, SERR
    if space.header.header_type == 1:
        _bridge_masks(m)
    for bar in space.bars:
        _bar_masks(m, bar)
    if space.expansion_rom is not None:
        _rom_masks(m, space.expansion_rom)
    for cap in space.capabilities:
        _capability_masks(m, cap)
    for ext in space.extended_capabilities:
        _extended_masks(m, ext)
    return m.done()


def _bridge_masks(m: _MaskBuilder) -> None:
    """pci_init_mask_bridge."""
    m.writable(0x18, 0xFFFFFFFF, 4)  # bus numbers, secondary latency timer
    m.writable(0x1C, 0xF0, 1)
    m.writable(0x1D, 0xF0, 1)
    m.writable(0x20, 0xFFF0FFF0, 4)  # memory base/limit
    m.writable(0x24, 0xFFF0FFF0, 4)  # prefetchable base/limit
    m.writable(0x28, (1 << 64) - 1, 8)  # prefetchable upper 32 bits
    m.writable(0x3E, 0x0BFF, 2)  # bridge control
    m.write_1_to_clear(0x3E, 0x0400, 2)  # discard timer status
    m.set(m.cmask, 0x1C, 0x0F, 1)  # I/O decode type
    m.set(m.cmask, 0x1D, 0x0F, 1)
    m.set(m.cmask, 0x24, 0x000F, 2)  # prefetchable decode type
    m.set(m.cmask, 0x26, 0x000F, 2)


def _bar_masks(m: _MaskBuilder, bar: Bar) -> None:
    """pci_register_bar: all of the BAR checked, address bits above the size writable.

    Without a size only the type bits are checked (they sit below any valid size)."""
    width = 8 if bar.is_64bit else 4
    all_bits = (1 << (8 * width)) - 1
    if bar.size is None:
        m.set(m.cmask, bar.offset, 0x3 if bar.kind == "io" else 0xF, 1)
        return
    m.set(m.cmask, bar.offset, all_bits, width)
    m.writable(bar.offset, ~(bar.size - 1) & all_bits, width)


def _rom_masks(m: _MaskBuilder, rom: ExpansionRom) -> None:
    if rom.size is None:
        m.set(m.cmask, rom.offset, 0x7FE, 2)  # reserved bits 1-10, below any ROM size
        return
    m.set(m.cmask, rom.offset, 0xFFFFFFFF, 4)
    m.writable(rom.offset, (~(rom.size - 1) & 0xFFFFFFFF) | 0x1, 4)


def _capability_masks(m: _MaskBuilder, cap: Capability) -> None:
    at = cap.offset
    body = cap.body
    if isinstance(body, Msi):
        # msi_init
        m.capability(at, body.size)
        m.writable(at + 2, 0x0071, 2)  # Multiple Message Enable, MSI Enable
        m.writable(at + 4, 0xFFFFFFFC, 4)
        if body.is_64bit:
            m.writable(at + 8, 0xFFFFFFFF, 4)
        m.writable(at + (0x0C if body.is_64bit else 0x08), 0xFFFF, 2)
        if body.mask_offset is not None:
            m.writable(body.mask_offset, (1 << min(body.vectors, 32)) - 1, 4)
    elif isinstance(body, MsiX):
        # msix_init
        m.capability(at, 12)
        m.writable(at + 3, 0xC0, 1)  # MSI-X Enable, Function Mask
    elif isinstance(body, Express):
        # pcie_cap_init / pcie_cap_v1_init; control registers writable as the spec allows
        m.capability(at, body.size)
        m.clear(m.cmask, at + 0x12, 2)  # Link Status: QEMU does not check it
        m.writable(at + 0x08, 0xFFFF, 2)  # Device Control
        m.write_1_to_clear(at + 0x0A, 0x000F, 2)  # Device Status error bits
        m.writable(at + 0x10, 0xFFFF, 2)  # Link Control
        if body.size > 0x14:
            m.writable(at + 0x18, 0xFFFF, 2)  # Slot Control
            m.write_1_to_clear(at + 0x1A, 0x011F, 2)  # Slot Status change bits
            m.writable(at + 0x1C, 0xFFFF, 2)  # Root Control
            m.write_1_to_clear(at + 0x20, 0x00010000, 4)  # Root Status PME status
            m.writable(at + 0x28, 0xFFFF, 2)  # Device Control 2
            m.writable(at + 0x30, 0xFFFF, 2)  # Link Control 2
            m.write_1_to_clear(at + 0x32, 0x0020, 2)  # Link Status 2 equalization request
            m.writable(at + 0x38, 0xFFFF, 2)  # Slot Control 2
    elif isinstance(body, PowerManagement):
        m.capability(at, 8)
        m.writable(at + 4, 0x7F0B, 2)  # power state, no-soft-reset, PME enable, data select
        m.write_1_to_clear(at + 4, 0x8000, 2)  # PME status
    elif cap.id == CAP_SSVID:
        m.capability(at, 8)  # pci_bridge_ssvid_init: read-only
    elif cap.id == CAP_SLOTID:
        m.capability(at, 4)  # slotid_cap_init: chassis number writable
        m.writable(at + 3, 0xFF, 1)
    else:
        m.capability(at, 2)  # id and next: the layout itself


def _extended_masks(m: _MaskBuilder, cap: ExtendedCapability) -> None:
    at = cap.offset
    if cap.id == EXT_DSN:
        m.capability(at, 12)
    elif cap.id in (EXT_ARI, EXT_ACS, EXT_ATS):
        m.capability(at, 8)  # capability word read-only, control word writable
        m.writable(at + 6, 0xFFFF, 2)
    elif cap.id == EXT_SRIOV:
        # pcie_sriov_pf_init: control, NumVFs, page size and VF BARs writable
        m.capability(at, 0x40)
        m.writable(at + 0x08, 0xFFFF, 2)
        m.write_1_to_clear(at + 0x0A, 0xFFFF, 2)
        m.writable(at + 0x10, 0xFFFF, 2)
        m.writable(at + 0x20, 0xFFFFFFFF, 4)
        m.writable(at + 0x24, (1 << (8 * 24)) - 1, 24)
    else:
        m.capability(at, 4)  # the header: id, version, next


# ---------------------------------------------------------------------------
# Comparing two config spaces


def check_compatible(
    src_config: bytes,
    dst_config: bytes,
    dst_masks: ConfigMasks | None = None,
    *,
    src_bar_sizes: Mapping[int, int] | None = None,
    dst_bar_sizes: Mapping[int, int] | None = None,
) -> tuple[Problem, ...]:
    """Why state saved from the device with *src_config* would not fit the one with *dst_config*.

    Compares identity, header layout, capability layout, MSI/MSI-X shape and BAR kinds
    (and sizes, where both sides give them).  With *dst_masks* (see :func:`build_masks`)
    it also applies QEMU's byte rule.  Empty means compatible.
    """
    src = decode_config(src_config, src_bar_sizes)
    dst = decode_config(dst_config, dst_bar_sizes)
    out: list[Problem] = []
    out += [attrs.evolve(p, message=f"source: {p.message}") for p in src.problems]
    out += [attrs.evolve(p, message=f"destination: {p.message}") for p in dst.problems]
    if src.size != dst.size:
        out.append(
            Problem("size", 0, f"config space is {src.size} bytes, destination's {dst.size}")
        )
    out += _compare_identity(src, dst)
    out += _compare_layout(src, dst)
    out += _compare_interrupts(src, dst)
    out += _compare_bars(src, dst)
    if dst_masks is not None:
        out += dst_masks.mismatches(bytes(src_config), bytes(dst_config))
    return tuple(out)


def _differs(
    code: str, offset: int, what: str, a: object, b: object, fmt: str = "#x"
) -> Iterator[Problem]:
    if a != b:
        yield Problem(code, offset, f"{what}: source {a:{fmt}}, destination {b:{fmt}}")


def _compare_identity(src: ConfigSpace, dst: ConfigSpace) -> Iterator[Problem]:
    s, d = src.header, dst.header
    yield from _differs("identity", _VENDOR_ID, "vendor id", s.vendor_id, d.vendor_id, "#06x")
    yield from _differs("identity", _DEVICE_ID, "device id", s.device_id, d.device_id, "#06x")
    yield from _differs("identity", _REVISION_ID, "revision", s.revision_id, d.revision_id, "#04x")
    src_class = (s.class_code.base, s.class_code.sub, s.class_code.prog_if)
    dst_class = (d.class_code.base, d.class_code.sub, d.class_code.prog_if)
    if src_class != dst_class:
        yield Problem(
            "identity",
            _CLASS_PROG,
            "class code: source {:02x}{:02x}{:02x}, destination {:02x}{:02x}{:02x}".format(
                *src_class, *dst_class
            ),
        )
    yield from _differs(
        "header-type", _HEADER_TYPE, "header type", s.header_type, d.header_type, "d"
    )
    yield from _differs(
        "header-type", _HEADER_TYPE, "multi-function", s.multifunction, d.multifunction, ""
    )
    if s.endpoint is not None and d.endpoint is not None:
        se, de = s.endpoint, d.endpoint
        yield from _differs(
            "identity",
            0x2C,
            "subsystem vendor id",
            se.subsystem_vendor_id,
            de.subsystem_vendor_id,
            "#06x",
        )
        yield from _differs(
            "identity", 0x2E, "subsystem id", se.subsystem_id, de.subsystem_id, "#06x"
        )


def _layout(caps: tuple[Capability, ...] | tuple[ExtendedCapability, ...]) -> dict[int, int]:
    return {c.offset: c.id for c in caps}


def _compare_layout(src: ConfigSpace, dst: ConfigSpace) -> Iterator[Problem]:
    for kind, a, b, width in (
        ("capability", _layout(src.capabilities), _layout(dst.capabilities), 2),
        (
            "extended capability",
            _layout(src.extended_capabilities),
            _layout(dst.extended_capabilities),
            3,
        ),
    ):
        for offset in sorted(a.keys() | b.keys()):
            if a.get(offset) == b.get(offset):
                continue
            side_a = f"{a[offset]:#x}" if offset in a else "none"
            side_b = f"{b[offset]:#x}" if offset in b else "none"
            yield Problem(
                "cap-layout",
                offset,
                f"{kind} at {offset:#0{width + 2}x}: source {side_a}, destination {side_b}",
            )


def _compare_interrupts(src: ConfigSpace, dst: ConfigSpace) -> Iterator[Problem]:
    s_msi, d_msi, cap = src.msi, dst.msi, src.capability(CAP_MSI)
    if s_msi is not None and d_msi is not None and cap is not None:
        yield from _differs("msi", cap.offset + 2, "MSI vectors", s_msi.vectors, d_msi.vectors, "d")
        yield from _differs("msi", cap.offset + 2, "MSI 64-bit", s_msi.is_64bit, d_msi.is_64bit, "")
        yield from _differs(
            "msi",
            cap.offset + 2,
            "MSI per-vector masking",
            s_msi.per_vector_masking,
            d_msi.per_vector_masking,
            "",
        )
    s_x, d_x, cap = src.msix, dst.msix, src.capability(CAP_MSIX)
    if s_x is not None and d_x is not None and cap is not None:
        yield from _differs(
            "msix", cap.offset + 2, "MSI-X table size", s_x.table_size, d_x.table_size, "d"
        )
        yield from _differs(
            "msix",
            cap.offset + 4,
            "MSI-X table",
            (s_x.table_bir, s_x.table_offset),
            (d_x.table_bir, d_x.table_offset),
            "",
        )
        yield from _differs(
            "msix",
            cap.offset + 8,
            "MSI-X PBA",
            (s_x.pba_bir, s_x.pba_offset),
            (d_x.pba_bir, d_x.pba_offset),
            "",
        )


_PLAIN_MEMORY = "memory 32-bit non-prefetchable"


def _bar_kind(bar: Bar | None) -> str:
    if bar is None:
        return "none"
    if bar.kind == "io":
        return "io"
    return f"memory {'64' if bar.is_64bit else '32'}-bit {'prefetchable' if bar.prefetchable else 'non-prefetchable'}"


def _compare_bars(src: ConfigSpace, dst: ConfigSpace) -> Iterator[Problem]:
    for index in range(_bar_count(src.header.header_type)):
        s, d = src.bar(index), dst.bar(index)
        offset = _BAR0 + 4 * index
        if (s is None or d is None) and {_bar_kind(s), _bar_kind(d)} <= {"none", _PLAIN_MEMORY}:
            # a 32-bit non-prefetchable memory BAR at address 0 reads as no BAR at all: from
            # bytes the two cannot be told apart
            continue
        yield from _differs("bar-kind", offset, f"BAR {index}", _bar_kind(s), _bar_kind(d), "")
        if s is not None and d is not None and s.size is not None and d.size is not None:
            yield from _differs("bar-size", offset, f"BAR {index} size", s.size, d.size)
    s_rom, d_rom = src.expansion_rom, dst.expansion_rom
    if (
        s_rom is not None
        and d_rom is not None
        and s_rom.size is not None
        and d_rom.size is not None
    ):
        yield from _differs("bar-size", s_rom.offset, "expansion ROM size", s_rom.size, d_rom.size)


# ---------------------------------------------------------------------------
# Text


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
