"""Device regions, independent of the device type.

A device is a set of numbered regions that can be read, written and sometimes
mapped; a region index is an opaque int (vfio-pci's fixed indexes are uAPI and
live in ``vmstate._lowlevel.vfio``).  Backends: :class:`VfioDevice` (a real device
through /dev/vfio), :class:`SysfsPciDevice` (read-only view of a host PCI device)
and :class:`EmulatedPciDevice` (in-memory, with PCI write semantics, for tests).
Every access is bounds-checked against the region before it reaches a backend.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import mmap
import os
import re
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Final, Protocol, Self

import attrs

from vmstate._lowlevel import ioctl, vfio
from vmstate._lowlevel.ioctl import IrqInfo
from vmstate.errors import DeviceError, UsageError

__all__ = [
    "Device",
    "EmulatedPciBuilder",
    "EmulatedPciDevice",
    "IrqInfo",
    "RegionInfo",
    "SysfsPciDevice",
    "VfioDevice",
    "e1000e_like",
]

#: upper bounds on the index counts a device may report
MAX_REGIONS: Final = 256
MAX_IRQS: Final = 256

SYSFS_PCI: Final = Path("/sys/bus/pci/devices")
SYSFS_MDEV: Final = Path("/sys/bus/mdev/devices")
VFIO_CONTAINER: Final = Path("/dev/vfio/vfio")

_BDF: Final = re.compile(r"[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@attrs.frozen
class RegionInfo:
    """What a region offers.

    ``offset`` is where the region starts in the backend's address space (VFIO: the
    device fd offset).  ``sparse_areas`` lists the (offset, size) areas that may be
    mapped; empty means the whole region when ``mappable``.
    """

    index: int
    size: int
    offset: int = 0
    readable: bool = False
    writable: bool = False
    mappable: bool = False
    type: int | None = None
    subtype: int | None = None
    sparse_areas: tuple[tuple[int, int], ...] = ()
    msix_mappable: bool = False


class Device(Protocol):
    """What every backend offers."""

    name: str

    def regions(self) -> tuple[RegionInfo, ...]: ...

    def region(self, index: int) -> RegionInfo: ...

    def find_region(self, type: int, subtype: int) -> RegionInfo | None: ...

    def read(self, index: int, offset: int, size: int) -> bytes: ...

    def write(self, index: int, offset: int, data: bytes) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...


class _RegionDevice(abc.ABC):
    """Region lookup, bounds checks and lifetime, shared by the backends."""

    def __init__(self, name: str, regions: Iterable[RegionInfo]) -> None:
        self.name = name
        self._regions = {info.index: info for info in regions}
        self._closed = False

    def regions(self) -> tuple[RegionInfo, ...]:
        return tuple(self._regions.values())

    def region(self, index: int) -> RegionInfo:
        info = self._regions.get(index)
        if info is None:
            raise DeviceError(f"{self.name}: no region {index}")
        return info

    def find_region(self, type: int, subtype: int) -> RegionInfo | None:
        """The region a TYPE capability marks as (type, subtype), if any."""
        for info in self._regions.values():
            if info.type == type and info.subtype == subtype:
                return info
        return None

    def read(self, index: int, offset: int, size: int) -> bytes:
        info = self._checked(index, offset, size, "readable")
        return self._read(info, offset, size)

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _checked(self, index: int, offset: int, size: int, needs: str) -> RegionInfo:
        """Region *index*, once it is *needs* (readable/writable/mappable) and the range fits."""
        if self._closed:
            raise DeviceError(f"{self.name}: device is closed")
        info = self.region(index)
        if not getattr(info, needs):
            raise DeviceError(f"{self.name}: region {index} is not {needs}")
        if offset < 0 or size < 0 or offset + size > info.size:
            raise DeviceError(
                f"{self.name}: region {index}: {size} bytes at offset {offset:#x} "
                f"lie outside the region ({info.size:#x} bytes)"
            )
        return info

    @abc.abstractmethod
    def _read(self, info: RegionInfo, offset: int, size: int) -> bytes:
        """Read a range already checked against *info*."""


def _open_fd(path: Path | str, flags: int, what: str) -> int:
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except OSError as exc:
        raise DeviceError(f"{what}: cannot open {path}: {exc.strerror}") from exc


@contextlib.contextmanager
def _named(name: str) -> Iterator[None]:
    """Prefix DeviceErrors raised inside with the device name (keeping their class and errno)."""
    try:
        yield
    except DeviceError as exc:
        raise attrs.evolve(exc, message=f"{name}: {exc.message}") from exc


def _pread_all(fd: int, size: int, position: int) -> tuple[bytes, int]:
    """Read up to *size* bytes at *position*; returns what was read and the errno (0: none).

    Stops early only at end of file or an error, so callers can say which happened.
    """
    out = bytearray()
    while len(out) < size:
        try:
            chunk = os.pread(fd, size - len(out), position + len(out))
        except OSError as exc:
            return bytes(out), exc.errno or 0
        if not chunk:
            break
        out += chunk
    return bytes(out), 0


class VfioDevice(_RegionDevice):
    """A device bound to a VFIO driver (vfio-pci BDF or mdev UUID), opened through its group.

    Each VfioDevice has its own container, so a group (and any other device in it)
    can be open in one VfioDevice at a time.
    """

    def __init__(
        self,
        name: str,
        fds: contextlib.ExitStack,
        device_fd: int,
        info: ioctl.DeviceInfo,
        regions: Iterable[RegionInfo],
        irqs: Iterable[IrqInfo],
    ) -> None:
        super().__init__(name, regions)
        self._fds = fds
        self._fd = device_fd
        self.info = info
        self._irqs = tuple(irqs)

    @classmethod
    def open(cls, name: str) -> VfioDevice:
        """Open device *name*: container, group (must be viable), IOMMU, device fd, infos."""
        if _BDF.fullmatch(name):
            sysfs = SYSFS_PCI / name
        elif _UUID.fullmatch(name):
            sysfs = SYSFS_MDEV / name
        else:
            raise DeviceError(f"{name!r}: not a PCI address (0000:00:03.0) nor an mdev UUID")
        try:
            group = os.path.basename(os.readlink(sysfs / "iommu_group"))
        except OSError as exc:
            raise DeviceError(
                f"{name}: no IOMMU group at {sysfs}/iommu_group ({exc.strerror}); "
                "the device must exist, sit behind an IOMMU and be bound to a VFIO driver"
            ) from exc
        if not group.isdigit():
            raise DeviceError(f"{name}: unexpected IOMMU group {group!r}")
        with contextlib.ExitStack() as fds, _named(name):
            container = _open_fd(VFIO_CONTAINER, os.O_RDWR, "VFIO container")
            fds.callback(os.close, container)
            version = ioctl.get_api_version(container)
            if version != vfio.VFIO_API_VERSION:
                raise DeviceError(f"unknown VFIO API version {version}")
            group_fd = _open_fd(Path("/dev/vfio") / group, os.O_RDWR, f"IOMMU group {group}")
            fds.callback(os.close, group_fd)
            if not ioctl.group_get_status(group_fd).viable:
                raise DeviceError(
                    f"IOMMU group {group} is not viable: bind every device in "
                    f"/sys/kernel/iommu_groups/{group}/devices to vfio-pci"
                )
            ioctl.group_set_container(group_fd, container)
            for iommu in (vfio.VFIO_TYPE1v2_IOMMU, vfio.VFIO_TYPE1_IOMMU):
                if ioctl.check_extension(container, iommu):
                    ioctl.set_iommu(container, iommu)
                    break
            else:
                raise DeviceError("the VFIO container offers neither TYPE1v2 nor TYPE1 IOMMU")
            device_fd = ioctl.group_get_device_fd(group_fd, name)
            fds.callback(os.close, device_fd)
            info = ioctl.device_get_info(device_fd)
            regions = _vfio_regions(device_fd, info.num_regions)
            irqs = _vfio_irqs(device_fd, info.num_irqs)
            return cls(name, fds.pop_all(), device_fd, info, regions, irqs)

    @property
    def fd(self) -> int:
        """The device fd, for ioctls this class does not wrap."""
        if self._closed:
            raise DeviceError(f"{self.name}: device is closed")
        return self._fd

    def irqs(self) -> tuple[IrqInfo, ...]:
        return self._irqs

    def reset(self) -> None:
        if not self.info.flags & vfio.VFIO_DEVICE_FLAGS_RESET:
            raise DeviceError(f"{self.name}: device does not support reset")
        with _named(self.name):
            ioctl.device_reset(self.fd)

    def device_feature(self, flags: int, payload: bytes = b"") -> bytes:
        """VFIO_DEVICE_FEATURE (migration v2 and friends); IoctlError ENOTTY if unsupported."""
        with _named(self.name):
            return ioctl.device_feature(self.fd, flags, payload)

    def write(self, index: int, offset: int, data: bytes) -> None:
        info = self._checked(index, offset, len(data), "writable")
        done = 0
        while done < len(data):
            try:
                written = os.pwrite(self._fd, data[done:], info.offset + offset + done)
            except OSError as exc:
                raise DeviceError(
                    f"{self.name}: region {index}: write of {len(data)} bytes at offset "
                    f"{offset:#x} failed after {done}: {exc.strerror}"
                ) from exc
            if written == 0:
                raise DeviceError(
                    f"{self.name}: region {index}: write at offset {offset + done:#x} "
                    "made no progress"
                )
            done += written

    def mmap(self, index: int, offset: int, size: int) -> mmap.mmap:
        """Map *size* bytes of region *index* at *offset* (page aligned, inside a sparse area)."""
        info = self._checked(index, offset, size, "mappable")
        where = f"{self.name}: region {index}: map of {size} bytes at offset {offset:#x}"
        if size == 0 or offset % mmap.PAGESIZE:
            raise DeviceError(f"{where}: needs a page-aligned offset and a non-zero size")
        if info.sparse_areas and not any(
            start <= offset and offset + size <= start + length
            for start, length in info.sparse_areas
        ):
            raise DeviceError(f"{where}: not inside one mappable area {info.sparse_areas}")
        prot = (mmap.PROT_READ if info.readable else 0) | (mmap.PROT_WRITE if info.writable else 0)
        try:
            return mmap.mmap(self._fd, size, mmap.MAP_SHARED, prot, offset=info.offset + offset)
        except OSError as exc:
            raise DeviceError(f"{where}: {exc.strerror}") from exc

    def _read(self, info: RegionInfo, offset: int, size: int) -> bytes:
        data, error = _pread_all(self._fd, size, info.offset + offset)
        if len(data) < size:
            reason = os.strerror(error) if error else "end of region"
            raise DeviceError(
                f"{self.name}: region {info.index}: read of {size} bytes at offset {offset:#x} "
                f"stopped after {len(data)}: {reason}"
            )
        return data

    def close(self) -> None:
        super().close()
        self._fds.close()  # closes nothing the second time


def _vfio_regions(device_fd: int, count: int) -> list[RegionInfo]:
    """Every region the device has; indexes the driver rejects (EINVAL, e.g. VGA) are absent."""
    if count > MAX_REGIONS:
        raise DeviceError(f"device reports {count} regions, limit {MAX_REGIONS}")
    regions = []
    for index in range(count):
        try:
            raw = ioctl.device_get_region_info(device_fd, index)
        except ioctl.IoctlError as exc:
            if exc.errno == errno.EINVAL:
                continue
            raise
        caps = raw.caps
        sparse = caps.sparse_areas
        regions.append(
            RegionInfo(
                index=raw.index,
                size=raw.size,
                offset=raw.offset,
                readable=bool(raw.flags & vfio.VFIO_REGION_INFO_FLAG_READ),
                writable=bool(raw.flags & vfio.VFIO_REGION_INFO_FLAG_WRITE),
                mappable=bool(raw.flags & vfio.VFIO_REGION_INFO_FLAG_MMAP) and sparse != (),
                type=caps.type[0] if caps.type else None,
                subtype=caps.type[1] if caps.type else None,
                sparse_areas=sparse or (),
                msix_mappable=caps.msix_mappable,
            )
        )
    return regions


def _vfio_irqs(device_fd: int, count: int) -> list[IrqInfo]:
    """Every IRQ index the device has; indexes it rejects (EINVAL, e.g. ERR on PCI) are absent."""
    if count > MAX_IRQS:
        raise DeviceError(f"device reports {count} IRQ indexes, limit {MAX_IRQS}")
    irqs = []
    for index in range(count):
        try:
            irqs.append(ioctl.device_get_irq_info(device_fd, index))
        except ioctl.IoctlError as exc:
            if exc.errno != errno.EINVAL:
                raise
    return irqs


class SysfsPciDevice(_RegionDevice):
    """A host PCI device seen through sysfs: config space readable, nothing writable.

    Region indexes follow vfio-pci (BAR0-5, ROM, CONFIG) so that the same code reads
    either.  BARs are described (size, host address as ``offset``) but not readable:
    reading device memory can have side effects.  Without root, the kernel returns
    only the first 64 bytes of config space.
    """

    def __init__(self, name: str, config_fd: int, regions: Iterable[RegionInfo]) -> None:
        super().__init__(name, regions)
        self._config_fd = config_fd

    @classmethod
    def open(cls, bdf: str, sysfs: Path = SYSFS_PCI) -> SysfsPciDevice:
        if not _BDF.fullmatch(bdf):
            raise DeviceError(f"{bdf!r}: not a PCI address like 0000:00:03.0")
        path = sysfs / bdf
        regions = _sysfs_resources(bdf, path / "resource")
        config_fd = _open_fd(path / "config", os.O_RDONLY, bdf)
        config_size = os.fstat(config_fd).st_size
        config = RegionInfo(
            index=vfio.VFIO_PCI_CONFIG_REGION_INDEX, size=config_size, readable=True
        )
        return cls(bdf, config_fd, [*regions, config])

    def write(self, index: int, offset: int, data: bytes) -> None:
        raise DeviceError(f"{self.name}: read-only sysfs device")

    def _read(self, info: RegionInfo, offset: int, size: int) -> bytes:
        data, error = _pread_all(self._config_fd, size, offset)
        if len(data) < size:
            reason = os.strerror(error) if error else "sysfs returned no more"
            raise DeviceError(
                f"{self.name}: config read of {size} bytes at offset {offset:#x} stopped after "
                f"{len(data)} ({reason}; without root only the first 64 bytes are readable)"
            )
        return data

    def close(self) -> None:
        if not self._closed:
            os.close(self._config_fd)
        super().close()


#: sysfs ``resource`` lines that are BAR0-5 and the ROM, in region-index order
_SYSFS_RESOURCE_LINES: Final = vfio.VFIO_PCI_ROM_REGION_INDEX + 1


def _sysfs_resources(bdf: str, path: Path) -> list[RegionInfo]:
    """BAR and ROM regions from sysfs ``resource`` ("start end flags" per line, hex)."""
    try:
        with path.open() as f:
            lines = [f.readline(256) for _ in range(_SYSFS_RESOURCE_LINES)]
    except OSError as exc:
        raise DeviceError(f"{bdf}: cannot read {path}: {exc.strerror}") from exc
    regions = []
    for index, line in enumerate(lines):
        try:
            start, end, _flags = (int(word, 16) for word in line.split())
        except ValueError as exc:
            raise DeviceError(f"{bdf}: {path} line {index + 1}: malformed {line!r}") from exc
        if end and end < start:
            raise DeviceError(f"{bdf}: {path} line {index + 1}: ends before it starts")
        size = end - start + 1 if end else 0
        regions.append(RegionInfo(index=index, size=size, offset=start))
    return regions


# --- emulated PCI devices ---------------------------------------------------------------

_CONFIG_SIZES: Final = (256, 4096)
_BAR_INDEXES: Final = range(vfio.VFIO_PCI_ROM_REGION_INDEX + 1)
#: largest BAR an emulated device backs with memory
MAX_EMULATED_BAR: Final = 1 << 24


class EmulatedPciDevice(_RegionDevice):
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


def e1000e_like(name: str = "e1000e") -> EmulatedPciDevice:
    """A device shaped like QEMU's e1000e (82574L): PCIe, MSI and MSI-X in BAR3, AER."""
    vectors = 5
    masked_entry = struct.pack("<IIII", 0, 0, 0, 1)  # address, data, vector control (masked)
    builder = EmulatedPciBuilder(config_size=4096).header(
        vendor=0x8086,
        device=0x10D3,
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
