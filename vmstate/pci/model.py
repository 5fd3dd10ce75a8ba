"""A decoded config space as attrs values: header, BARs, capability lists, problems.

Pure data; :mod:`vmstate.pci.decode` builds it from bytes, :mod:`vmstate.pci.render`
prints it, ``to_json`` gives it to programs.
"""

from __future__ import annotations

from typing import Any

import attrs

from vmstate.pci.capabilities import CapabilityBody, Express, Msi, MsiX
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
from vmstate.pci.flags import Flags
from vmstate.pci.problems import ConfigProblem
from vmstate.pci.registers import CAP_EXP, CAP_MSI, CAP_MSIX

ExtendedBody = (
    Aer | Dpc | SerialNumber | Acs | Ari | Ats | Pri | Pasid | SrIov | VendorExtended
    | DesignatedVendor | Ltr | L1PmSubstates | Ptm | SecondaryExpress | Tph | ResizableBar | Doe
    | VirtualChannel | RcLink | RcecAssociation | Multicast
)  # fmt: skip


@attrs.frozen
class ClassCode:
    """Base class, sub-class and programming interface (bytes 0x0b, 0x0a, 0x09)."""

    base: int
    sub: int
    prog_if: int


@attrs.frozen
class Window:
    """An address range a bridge forwards downstream; disabled when base > limit."""

    base: int
    limit: int
    width: int  # address bits the window decodes: 16 or 32 (I/O), 32 or 64 (memory)
    #: base and limit registers name one decode type the spec defines (else lspci says "!!!")
    known_type: bool
    base_register: int  # the raw registers (I/O: bytes 0x1c/0x1d, memory: words)
    limit_register: int

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
    memory_type: int  # 0: 32-bit, 1: below 1M, 2: 64-bit, 3: reserved (0 for I/O)
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
class PciAddress:
    """A function's PCI address: where a config space came from, as lspci names it."""

    domain: int = 0
    bus: int = 0
    device: int = 0
    function: int = 0

    @classmethod
    def parse(cls, text: str) -> PciAddress | None:
        """``bb:dd.f`` or ``dddd:bb:dd.f`` (hex, function 0-7); None if *text* is neither."""
        head, _, fn = text.rpartition(".")
        parts = head.split(":")
        if len(parts) not in (2, 3) or not fn.isdigit() or int(fn) > 7:
            return None
        try:
            numbers = [int(p, 16) for p in parts]
        except ValueError:
            return None
        domain = numbers[0] if len(parts) == 3 else 0
        bus, device = numbers[-2], numbers[-1]
        if bus > 0xFF or device > 0x1F or domain > 0xFFFFFFFF:
            return None
        return cls(domain, bus, device, int(fn))

    def __str__(self) -> str:
        """lspci's spelling: the domain only when it is not 0."""
        slot = f"{self.bus:02x}:{self.device:02x}.{self.function}"
        return f"{self.domain:04x}:{slot}" if self.domain else slot


@attrs.frozen
class ChainEnd:
    """Where and why a capability list ends short of its last pointer.

    ``reason`` is one of ``looped`` (the entry at ``offset`` was seen before),
    ``broken`` (id 0xff), ``unreadable`` (``offset`` lies past the bytes read),
    ``pointer-low`` (into the header, or an extended pointer below 0x100) and
    ``empty`` (an extended header of zeros or ones that is not the first)."""

    offset: int
    reason: str


@attrs.frozen
class Capability:
    """One entry of the standard capability list (config offsets 0x40-0xff)."""

    offset: int
    id: int
    name: str
    next: int
    word: int  # the 16 bits after id and next, which each capability defines for itself
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


def _serialize(instance: Any, field: Any, value: Any) -> Any:
    return dict(value.bits) if isinstance(value, Flags) else value


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
    capabilities_end: ChainEnd | None
    extended_capabilities_end: ChainEnd | None
    problems: tuple[ConfigProblem, ...]

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

    @property
    def port_type(self) -> int | None:
        """The PCIe port type the extended capabilities are read for: the last PCI Express
        capability's, as lspci takes it (a function has one)."""
        types = [c.body.port_type for c in self.capabilities if isinstance(c.body, Express)]
        return types[-1] if types else None

    def bar(self, index: int) -> Bar | None:
        return next((b for b in self.bars if b.index == index), None)

    def to_json(self) -> dict[str, Any]:
        """Plain dict of ints, strs, bools, lists and None, for ``json.dumps``."""
        return _plain(attrs.asdict(self, value_serializer=_serialize))
