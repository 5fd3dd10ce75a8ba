"""The 2019 device-state region protocol, done where the patch went wrong.

The QEMU VFIO live-migration series of February 2019 (never merged; VFIO migration v1
and v2 replaced it) kept a device's state in regions of type DEVICE_STATE: a control
region laid out as ``struct vfio_device_state_ctl`` (version, caps, device_state,
device_config {action, size}, device_memory, system_memory {start_addr, page_nr}), a
device-config data region written and read as a whole, and a dirty-bitmap region read
in chunks.  The patch trusted too much; here every length the device reports and
every length a stream brings is checked against the region it lands in and against an
explicit limit before anything is allocated or copied, everything moves in bounded
chunks, and the bitmap loop advances by the chunk it read (the patch's
``start_addr += start_addr`` doubled the address instead).

A device that lacks the regions, speaks another version or needs the device-memory
transfer the patch never implemented is refused with the reason, as the patch
registered a migration blocker.  Fields are in host byte order, as the C struct is.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from typing import Final

import attrs

from vmstate._lowlevel._state_ctl_ffi import ffi
from vmstate.device_data import Sink, Source, read_exactly, write_all
from vmstate.device_regions import Device, RegionInfo
from vmstate.errors import DeviceError, LimitError, UsageError

__all__ = [
    "ACTION_GET_BUFFER",
    "ACTION_SET_BUFFER",
    "CAP_DEVICE_MEMORY",
    "CAP_SYSTEM_MEMORY",
    "CHUNK_SIZE",
    "CONTROL",
    "INTERFACE_VERSION",
    "MAX_BITMAP_CHUNK",
    "MAX_CONFIG_SIZE",
    "REGION_TYPE_DEVICE_STATE",
    "SUBTYPE_CONFIG",
    "SUBTYPE_CONTROL",
    "SUBTYPE_DIRTY_BITMAP",
    "SUBTYPE_MEMORY",
    "DeviceStateRegions",
    "DirtyChunk",
    "RegionState",
]

#: declared in vmstate._lowlevel.build_ffi
CONTROL: Final = "struct vfio_device_state_ctl"

#: region type and subtypes of the proposal (type 2 is VFIO_REGION_TYPE_CCW in mainline)
REGION_TYPE_DEVICE_STATE: Final = 1 << 1
SUBTYPE_CONTROL: Final = 1
SUBTYPE_CONFIG: Final = 2
SUBTYPE_MEMORY: Final = 3
SUBTYPE_DIRTY_BITMAP: Final = 4

INTERFACE_VERSION: Final = 1
CAP_DEVICE_MEMORY: Final = 1
CAP_SYSTEM_MEMORY: Final = 2
ACTION_GET_BUFFER: Final = 1
ACTION_SET_BUFFER: Final = 2

#: largest device-config data taken from a stream (the proposal: "no bigger than 10M")
MAX_CONFIG_SIZE: Final = 1 << 24
#: largest transfer between a region and a stream at once
CHUNK_SIZE: Final = 1 << 20
#: largest piece of dirty bitmap read at once, whatever the region's size
MAX_BITMAP_CHUNK: Final = 1 << 20

_U32: Final = struct.Struct("=I")
_U64: Final = struct.Struct("=Q")
_RANGE: Final = struct.Struct("=QQ")  # system_memory: start_addr, page_nr
_WORD: Final = 8  # the bitmap is an array of unsigned long (64-bit hosts only)


class RegionState(enum.IntEnum):
    """device_state values: STOP and LOGGING are bits, RUNNING is neither."""

    RUNNING = 0
    STOP = 1
    RUNNING_LOGGING = 2
    STOP_LOGGING = 3


def _offset(*field: str) -> int:
    return ffi.offsetof(CONTROL, *field)


@attrs.frozen
class DirtyChunk:
    """One query's answer: which of ``page_nr`` pages from ``start_addr`` the device dirtied."""

    start_addr: int
    page_nr: int
    page_size: int
    #: little-endian bitmap (bit i: page i), bits beyond ``page_nr`` cleared
    bitmap: bytes

    def dirty_pages(self) -> Iterator[int]:
        """Addresses of the dirty pages, in order."""
        bits = int.from_bytes(self.bitmap, "little")
        while bits:
            low = bits & -bits
            yield self.start_addr + (low.bit_length() - 1) * self.page_size
            bits ^= low


@attrs.frozen
class DeviceStateRegions:
    """A device's state regions, checked once: use :meth:`open`."""

    device: Device
    control: RegionInfo
    config: RegionInfo
    bitmap: RegionInfo | None
    caps: int

    @classmethod
    def open(cls, device: Device) -> DeviceStateRegions:
        """Find and check the regions; DeviceError "does not support migration: <why>" if unfit."""

        def blocked(reason: str) -> DeviceError:
            return DeviceError(f"{device.name}: device does not support migration: {reason}")

        control = device.find_region(REGION_TYPE_DEVICE_STATE, SUBTYPE_CONTROL)
        config = device.find_region(REGION_TYPE_DEVICE_STATE, SUBTYPE_CONFIG)
        if control is None or config is None:
            missing = "control" if control is None else "device-config"
            raise blocked(f"it has no device-state {missing} region")
        if control.size < ffi.sizeof(CONTROL):
            raise blocked(
                f"its control region has {control.size} bytes, fewer than the "
                f"{ffi.sizeof(CONTROL)} of struct vfio_device_state_ctl"
            )
        if not (control.readable and control.writable and config.readable and config.writable):
            raise blocked("its control and device-config regions must be readable and writable")
        (version,) = _U32.unpack(device.read(control.index, _offset("version"), 4))
        if version != INTERFACE_VERSION:
            raise blocked(f"it speaks interface version {version}, not {INTERFACE_VERSION}")
        (caps,) = _U32.unpack(device.read(control.index, _offset("caps"), 4))
        if caps & CAP_DEVICE_MEMORY:
            raise blocked("it needs the device-memory transfer, which the protocol never defined")
        bitmap = None
        if caps & CAP_SYSTEM_MEMORY:
            bitmap = device.find_region(REGION_TYPE_DEVICE_STATE, SUBTYPE_DIRTY_BITMAP)
            if bitmap is None or not bitmap.readable or bitmap.size < _WORD:
                raise blocked("it logs dirty system memory but has no readable bitmap region")
        return cls(device, control, config, bitmap, caps)

    @classmethod
    def find(cls, device: Device) -> DeviceStateRegions | None:
        """:meth:`open`, or None when the device has no fit regions (none has in Linux)."""
        try:
            return cls.open(device)
        except DeviceError:
            return None

    def set_state(self, state: RegionState) -> None:
        if state not in tuple(RegionState):
            raise UsageError(f"device_state {state} is none of {[s.name for s in RegionState]}")
        self._write(_offset("device_state"), _U32.pack(state))

    def save_config(self, sink: Sink, *, limit: int = MAX_CONFIG_SIZE) -> int:
        """GET_BUFFER, then copy the device-config data to *sink*; returns its size.

        The size the device reports is checked against its region and *limit* first.
        """
        self._write(_offset("device_config", "action"), _U32.pack(ACTION_GET_BUFFER))
        (size,) = _U64.unpack(
            self.device.read(self.control.index, _offset("device_config", "size"), 8)
        )
        if size > min(self.config.size, limit):
            raise DeviceError(
                f"{self.device.name}: device reports {size} bytes of config data; its region "
                f"holds {self.config.size} and the limit is {limit}"
            )
        for position in range(0, size, CHUNK_SIZE):
            count = min(CHUNK_SIZE, size - position)
            write_all(sink, self.device.read(self.config.index, position, count))
        return size

    def load_config(self, source: Source, size: int, *, limit: int = MAX_CONFIG_SIZE) -> None:
        """Copy *size* bytes (from a stream: untrusted) of device-config data, then SET_BUFFER.

        *size* is checked against the config region and *limit* before anything is
        read, allocated or written.
        """
        bound = min(self.config.size, limit)
        if not 0 <= size <= bound:
            raise LimitError(
                f"{size} bytes of device config data do not fit: the device's config region "
                f"holds {self.config.size} and the limit is {limit}",
                expected=f"at most {bound} bytes",
                found=f"{size} bytes",
            )
        self._write(_offset("device_config", "size"), _U64.pack(size))
        for position, chunk in read_exactly(source, size, "device config data"):
            self.device.write(self.config.index, position, bytes(chunk))
        self._write(_offset("device_config", "action"), _U32.pack(ACTION_SET_BUFFER))

    def dirty_bitmap(
        self, start_addr: int, page_nr: int, *, page_size: int = 4096
    ) -> Iterator[DirtyChunk]:
        """The pages the device dirtied in [start_addr, start_addr + page_nr * page_size).

        One query per chunk of pages the bitmap region (capped at MAX_BITMAP_CHUNK)
        can describe; each chunk starts where the previous one ended.
        """
        if self.bitmap is None:
            raise UsageError(f"{self.device.name}: the device does not log dirty system memory")
        if page_size <= 0 or page_size & (page_size - 1) or start_addr % page_size:
            raise UsageError(f"start {start_addr:#x} must be aligned to a power-of-two page size")
        if start_addr < 0 or page_nr < 0 or start_addr + page_nr * page_size > 1 << 64:
            raise UsageError(f"{start_addr:#x} + {page_nr} pages is outside 64-bit memory")
        return self._dirty_chunks(self.bitmap, start_addr, page_nr, page_size)

    def _dirty_chunks(
        self, bitmap: RegionInfo, address: int, left: int, page_size: int
    ) -> Iterator[DirtyChunk]:
        chunk_pages = min(bitmap.size, MAX_BITMAP_CHUNK) // _WORD * _WORD * 8
        while left:
            count = min(left, chunk_pages)
            self._write(_offset("system_memory"), _RANGE.pack(address, count))
            words = -(-count // 64)
            bits = int.from_bytes(self.device.read(bitmap.index, 0, words * _WORD), "little")
            bits &= (1 << count) - 1  # the device's bits past the range mean nothing
            yield DirtyChunk(address, count, page_size, bits.to_bytes(words * _WORD, "little"))
            address += count * page_size  # the patch had start_addr += start_addr
            left -= count

    def _write(self, offset: int, data: bytes) -> None:
        self.device.write(self.control.index, offset, data)
