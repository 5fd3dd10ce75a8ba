"""In-memory PCI functions for tests: config space with the write semantics of real
hardware (QEMU's masks), BARs as plain memory, and a builder for them.

They satisfy :class:`vmstate.device_regions.Device`, so everything that reads or
programs a device through its regions can be tested without one.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Final, Self

import attrs

from vmstate._lowlevel import vfio
from vmstate.device_regions import RegionDevice, RegionInfo
from vmstate.errors import UsageError

__all__ = ["MAX_EMULATED_BAR", "EmulatedPciBuilder", "EmulatedPciDevice", "e1000e_like"]

_CONFIG_SIZES: Final = (256, 4096)
_BAR_INDEXES: Final = range(vfio.VFIO_PCI_ROM_REGION_INDEX + 1)
#: largest BAR an emulated device backs with memory
MAX_EMULATED_BAR: Final = 1 << 24


class EmulatedPciDevice(RegionDevice):
    """An in-memory PCI device for tests, with the write semantics of real config space.

    Config space (region CONFIG) changes only in the bits of ``wmask``; a 1 written
    to a ``w1cmask`` bit clears it; all else is read-only.  BAR sizing falls out of
    this: a BAR's wmask covers its address bits only, so writing all ones reads back
    the size mask.  BAR regions (index 0-6) are plain memory, e.g. for MSI-X tables.
    ``reset()`` restores the initial contents.  :class:`EmulatedPciBuilder` makes one.
    """

    def __init__(
        self,
        name: str,
        config: bytes,
        wmask: bytes,
        w1cmask: bytes,
        bars: Mapping[int, bytes] | None = None,
    ) -> None:
        sizes = {len(config), len(wmask), len(w1cmask)}
        if len(sizes) != 1 or len(config) not in _CONFIG_SIZES:
            raise UsageError(
                "config, wmask and w1cmask must all be 256 or 4096 bytes, got "
                f"{len(config)}, {len(wmask)}, {len(w1cmask)}"
            )
        overlap = next((i for i in range(len(config)) if wmask[i] & w1cmask[i]), None)
        if overlap is not None:
            raise UsageError(f"wmask and w1cmask overlap at config offset {overlap:#x}")
        bars = dict(bars or {})
        if not set(bars) <= set(_BAR_INDEXES):
            raise UsageError(f"BAR regions must have indexes 0-6, got {sorted(bars)}")
        config_index = vfio.VFIO_PCI_CONFIG_REGION_INDEX
        initial = {index: bytes(data) for index, data in sorted(bars.items())}
        initial[config_index] = bytes(config)
        super().__init__(
            name,
            (
                RegionInfo(index=index, size=len(data), readable=True, writable=True)
                for index, data in initial.items()
            ),
        )
        self._initial = initial
        self._memory = {index: bytearray(data) for index, data in initial.items()}
        self._wmask = bytes(wmask)
        self._w1cmask = bytes(w1cmask)

    def write(self, index: int, offset: int, data: bytes) -> None:
        self._checked(index, offset, len(data), "writable")
        memory = self._memory[index]
        if index != vfio.VFIO_PCI_CONFIG_REGION_INDEX:
            memory[offset : offset + len(data)] = data
            return
        for at, value in enumerate(data, offset):
            wmask, w1cmask = self._wmask[at], self._w1cmask[at]
            kept = (memory[at] & ~wmask) | (value & wmask)
            memory[at] = kept & ~(value & w1cmask) & 0xFF

    def reset(self) -> None:
        for index, data in self._initial.items():
            self._memory[index][:] = data

    def _read(self, info: RegionInfo, offset: int, size: int) -> bytes:
        return bytes(self._memory[info.index][offset : offset + size])


# PCI type-0 header offsets and bits the builder needs.
_COMMAND, _STATUS, _BAR0, _ROM, _CAP_PTR = 0x04, 0x06, 0x10, 0x30, 0x34
_STATUS_CAP_LIST: Final = 0x0010
_HEADER_SIZE: Final = 0x40
_EXT_CAP_START: Final = 0x100


@attrs.define
class EmulatedPciBuilder:
    """Assembles config space, masks and BARs for an :class:`EmulatedPciDevice`.

    The masks follow QEMU's emulation (hw/pci/pci.c), so a device built here reacts
    to guest writes the way QEMU's does.  Misuse (overlapping capabilities, bad BAR
    sizes) raises UsageError.
    """

    config_size: int = attrs.field(default=256)
    config: bytearray = attrs.field(init=False)
    wmask: bytearray = attrs.field(init=False)
    w1cmask: bytearray = attrs.field(init=False)
    bars: dict[int, bytes] = attrs.field(init=False, factory=dict)
    _used: list[tuple[int, int]] = attrs.field(init=False, factory=list)
    _cap_link: int = attrs.field(init=False, default=_CAP_PTR)
    _ext_last: int | None = attrs.field(init=False, default=None)

    @config_size.validator
    def _size(self, _attribute: object, value: int) -> None:
        if value not in _CONFIG_SIZES:
            raise UsageError(f"config space is 256 or 4096 bytes, not {value}")

    def __attrs_post_init__(self) -> None:
        self.config = bytearray(self.config_size)
        self.wmask = bytearray(self.config_size)
        self.w1cmask = bytearray(self.config_size)

    def set(self, offset: int, value: int, width: int, *, wmask: int = 0, w1cmask: int = 0) -> Self:
        """Store *value* (little endian, *width* bytes) and its masks at *offset*."""
        if offset < 0 or offset + width > self.config_size:
            raise UsageError(f"{width} bytes at {offset:#x} do not fit {self.config_size}")
        for target, number in ((self.config, value), (self.wmask, wmask), (self.w1cmask, w1cmask)):
            target[offset : offset + width] = number.to_bytes(width, "little")
        return self

    def header(
        self,
        vendor: int,
        device: int,
        class_code: int,
        *,
        revision: int = 0,
        subsystem_vendor: int = 0,
        subsystem: int = 0,
        interrupt_pin: int = 0,
    ) -> Self:
        """Identity registers plus the writable bits every type-0 function has."""
        self.set(0x00, vendor, 2).set(0x02, device, 2)
        # COMMAND: I/O, memory, bus master, parity, SERR#, INTx disable.
        self.set(_COMMAND, 0, 2, wmask=0x0547)
        # STATUS: the error bits are write-1-to-clear.
        status = self.config[_STATUS] | self.config[_STATUS + 1] << 8
        self.set(_STATUS, status, 2, w1cmask=0xF900)
        self.set(0x08, revision, 1).set(0x09, class_code, 3)
        self.set(0x0C, 0, 1, wmask=0xFF)  # cache line size
        self.set(0x2C, subsystem_vendor, 2).set(0x2E, subsystem, 2)
        self.set(0x3C, 0, 1, wmask=0xFF)  # interrupt line
        return self.set(0x3D, interrupt_pin, 1)

    def bar(
        self,
        index: int,
        size: int,
        *,
        io: bool = False,
        mem64: bool = False,
        prefetch: bool = False,
        contents: bytes = b"",
    ) -> Self:
        """A BAR of *size* bytes (power of two) backed by memory starting with *contents*."""
        width = 8 if mem64 else 4
        minimum = 4 if io else 16
        if index not in range(6 - (width // 4 - 1)) or (io and (mem64 or prefetch)):
            raise UsageError(f"BAR{index}: no such {'64-bit ' if mem64 else ''}BAR")
        taken = {i for i in self.bars if i < 6} | {i + 1 for i in self._bars64}
        if {index, index + width // 4 - 1} & taken:
            raise UsageError(f"BAR{index}: already in use")
        flags = 0x1 if io else (0x4 if mem64 else 0) | (0x8 if prefetch else 0)
        self._backing(index, size, minimum, contents)
        mask = ~(size - 1) & ((1 << (8 * width)) - 1)
        return self.set(_BAR0 + 4 * index, flags, width, wmask=mask)

    def rom(self, size: int, contents: bytes = b"") -> Self:
        """An expansion ROM BAR: address bits and the enable bit are writable."""
        if vfio.VFIO_PCI_ROM_REGION_INDEX in self.bars:
            raise UsageError("the ROM BAR is already in use")
        self._backing(vfio.VFIO_PCI_ROM_REGION_INDEX, size, 2048, contents)
        return self.set(_ROM, 0, 4, wmask=(~(size - 1) & 0xFFFFF800) | 1)

    def capability(
        self,
        offset: int,
        cap_id: int,
        body: bytes = b"",
        *,
        wmask: bytes = b"",
        w1cmask: bytes = b"",
    ) -> Self:
        """Append a capability at *offset* to the list; masks cover *body* from its start."""
        if offset < _HEADER_SIZE or offset % 4 or offset + 2 + len(body) > 256:
            raise UsageError(f"capability {cap_id:#x} at {offset:#x}: outside 0x40..0xff")
        self._claim(offset, 2 + len(body))
        self.config[offset : offset + 2] = bytes((cap_id, 0))
        self.config[self._cap_link] = offset
        self._cap_link = offset + 1
        self.config[_STATUS] |= _STATUS_CAP_LIST
        return self._body(offset + 2, body, wmask, w1cmask)

    def extended_capability(
        self,
        offset: int,
        cap_id: int,
        version: int,
        body: bytes = b"",
        *,
        wmask: bytes = b"",
        w1cmask: bytes = b"",
    ) -> Self:
        """Append a PCI Express extended capability (4096-byte config space, list at 0x100)."""
        first = self._ext_last is None
        if (
            self.config_size != 4096
            or offset % 4
            or offset < _EXT_CAP_START
            or (first and offset != _EXT_CAP_START)
            or offset + 4 + len(body) > self.config_size
        ):
            raise UsageError(f"extended capability {cap_id:#x} cannot go at {offset:#x}")
        self._claim(offset, 4 + len(body))
        self.config[offset : offset + 4] = (cap_id | version << 16).to_bytes(4, "little")
        if self._ext_last is not None:
            link = self._ext_last + 2
            self.config[link : link + 2] = (
                int.from_bytes(self.config[link : link + 2], "little") | offset << 4
            ).to_bytes(2, "little")
        self._ext_last = offset
        return self._body(offset + 4, body, wmask, w1cmask)

    def build(self, name: str) -> EmulatedPciDevice:
        return EmulatedPciDevice(name, self.config, self.wmask, self.w1cmask, self.bars)

    @property
    def _bars64(self) -> set[int]:
        """Indexes of the 64-bit memory BARs (their upper half is index + 1)."""
        return {i for i in self.bars if i < 6 and self.config[_BAR0 + 4 * i] & 0x7 == 0x4}

    def _backing(self, index: int, size: int, minimum: int, contents: bytes) -> None:
        if size < minimum or size & (size - 1) or size > MAX_EMULATED_BAR:
            raise UsageError(
                f"region {index}: size {size:#x} must be a power of two in "
                f"{minimum:#x}..{MAX_EMULATED_BAR:#x}"
            )
        if len(contents) > size:
            raise UsageError(f"region {index}: {len(contents)} bytes of contents exceed {size}")
        self.bars[index] = bytes(contents) + bytes(size - len(contents))

    def _claim(self, offset: int, size: int) -> None:
        for start, end in self._used:
            if offset < end and start < offset + size:
                raise UsageError(f"config {offset:#x}+{size:#x} overlaps {start:#x}..{end:#x}")
        self._used.append((offset, offset + size))

    def _body(self, offset: int, body: bytes, wmask: bytes, w1cmask: bytes) -> Self:
        if len(wmask) > len(body) or len(w1cmask) > len(body):
            raise UsageError("capability masks are longer than its body")
        self.config[offset : offset + len(body)] = body
        self.wmask[offset : offset + len(wmask)] = wmask
        self.w1cmask[offset : offset + len(w1cmask)] = w1cmask
        return self


def e1000e_like(name: str = "e1000e", *, device_id: int = 0x10D3) -> EmulatedPciDevice:
    """A device shaped like QEMU's e1000e (82574L): PCIe, MSI and MSI-X in BAR3, AER;
    another *device_id* makes a sibling that state saved from it must not load into."""
    vectors = 5
    masked_entry = struct.pack("<IIII", 0, 0, 0, 1)  # address, data, vector control (masked)
    builder = EmulatedPciBuilder(config_size=4096).header(
        vendor=0x8086,
        device=device_id,
        class_code=0x020000,
        subsystem_vendor=0x8086,
        interrupt_pin=1,
    )
    builder.bar(0, 0x20000).bar(1, 0x20000).bar(2, 0x20, io=True)
    builder.bar(3, 0x4000, contents=masked_entry * vectors)
    # Power management: PMCSR power state and PME enable writable, PME status W1C.
    builder.capability(
        0xC8,
        0x01,
        struct.pack("<HHBB", 0xC823, 0x0008, 0, 0),
        wmask=struct.pack("<HHBB", 0, 0x0103, 0, 0),
        w1cmask=struct.pack("<HHBB", 0, 0x8000, 0, 0),
    )
    # MSI, 64-bit: enable and multiple-message-enable, address and data writable.
    builder.capability(
        0xD0,
        0x05,
        struct.pack("<HIIH", 0x0080, 0, 0, 0),
        wmask=struct.pack("<HIIH", 0x0071, 0xFFFFFFFC, 0xFFFFFFFF, 0xFFFF),
    )
    # PCI Express v1 endpoint: error reporting enables, error status W1C, ASPM control.
    pcie, pcie_wmask, pcie_w1c = bytearray(0x12), bytearray(0x12), bytearray(0x12)
    struct.pack_into("<HIH", pcie, 0x00, 0x0001, 0x00008CC1, 0x0000)
    struct.pack_into("<IHH", pcie, 0x0A, 0x00000011, 0x0000, 0x0011)
    struct.pack_into("<H", pcie_wmask, 0x06, 0x000F)
    struct.pack_into("<H", pcie_w1c, 0x08, 0x000F)
    struct.pack_into("<H", pcie_wmask, 0x0E, 0x00C3)
    builder.capability(0xE0, 0x10, bytes(pcie), wmask=bytes(pcie_wmask), w1cmask=bytes(pcie_w1c))
    # MSI-X: table at BAR3+0, PBA at BAR3+0x2000; enable and function mask writable.
    builder.capability(
        0xA0,
        0x11,
        struct.pack("<HII", vectors - 1, 0x00000003, 0x00002003),
        wmask=struct.pack("<HII", 0xC000, 0, 0),
    )
    # AER: status registers W1C, masks and severity writable.
    uncorrectable, correctable = 0x03FFF030, 0x0000F1C1
    builder.extended_capability(
        0x100,
        0x0001,
        2,
        struct.pack("<IIIII", 0, 0, 0x00462030, 0, 0x00002000) + bytes(0x14),
        wmask=struct.pack("<IIIII", 0, uncorrectable, uncorrectable, 0, correctable),
        w1cmask=struct.pack("<IIIII", uncorrectable, 0, 0, correctable, 0),
    )
    return builder.build(name)
