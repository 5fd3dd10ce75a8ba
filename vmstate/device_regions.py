"""Device regions, independent of the device type.

A device is a set of numbered regions that can be read, written and sometimes
mapped; a region index is an opaque int (vfio-pci's fixed indexes are uAPI and
live in ``vmstate._lowlevel.vfio``).  Backends: :class:`VfioDevice` (a real device
through /dev/vfio) and :class:`SysfsPciDevice` (read-only view of a host PCI
device); :class:`RegionDevice` is their common base, for in-memory devices too
(``vmstate.testing``).  Every access is bounds-checked against the region before
it reaches a backend.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import mmap
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final, Protocol, Self

import attrs

from vmstate._lowlevel import ioctl, vfio
from vmstate._lowlevel.ioctl import IrqInfo
from vmstate.errors import DeviceError

__all__ = [
    "Device",
    "IrqInfo",
    "RegionDevice",
    "RegionInfo",
    "SysfsPciDevice",
    "VfioDevice",
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


class RegionDevice(abc.ABC):
    """Region lookup, bounds checks and lifetime, shared by the backends.

    A subclass gives its regions and implements ``_read`` (and ``write``)."""

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


class VfioDevice(RegionDevice):
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
        _check_page_aligned(where, offset, size)
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


def _check_page_aligned(where: str, offset: int, size: int) -> None:
    if size == 0 or offset % mmap.PAGESIZE:
        raise DeviceError(f"{where}: needs a page-aligned offset and a non-zero size")


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


class SysfsPciDevice(RegionDevice):
    """A host PCI device seen through sysfs: config space readable, nothing writable.

    Region indexes follow vfio-pci (BAR0-5, ROM, CONFIG) so that the same code reads
    either.  BARs are described (size, host address as ``offset``) but not readable:
    reading device memory can have side effects.  Memory BARs can be mapped read-only
    (root only) for structures whose reads have none, such as the MSI-X table.
    Without root, the kernel returns only the first 64 bytes of config space.
    Nothing here opens the device through VFIO, which would reset it.
    """

    def __init__(
        self, name: str, path: Path, config_fd: int, regions: Iterable[RegionInfo]
    ) -> None:
        super().__init__(name, regions)
        self._path = path
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
        return cls(bdf, path, config_fd, [*regions, config])

    def write(self, index: int, offset: int, data: bytes) -> None:
        raise DeviceError(f"{self.name}: read-only sysfs device")

    def mmap(self, index: int, offset: int, size: int) -> mmap.mmap:
        """Map *size* bytes of memory BAR *index* at *offset* (page aligned), read-only,
        through sysfs ``resource<index>``."""
        self._checked(index, offset, size, "mappable")
        where = f"{self.name}: BAR{index}: map of {size} bytes at offset {offset:#x}"
        _check_page_aligned(where, offset, size)
        fd = _open_fd(self._path / f"resource{index}", os.O_RDONLY, self.name)
        try:
            return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ, offset=offset)
        except (OSError, ValueError) as exc:
            raise DeviceError(f"{where}: {exc}") from exc
        finally:
            os.close(fd)

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
#: include/linux/ioport.h: a memory resource (resourceN of such a BAR can be mapped)
_IORESOURCE_MEM: Final = 0x200


def _sysfs_resources(bdf: str, path: Path) -> list[RegionInfo]:
    """BAR and ROM regions from sysfs ``resource`` ("start end flags" per line, hex); a
    memory BAR is mappable when the kernel offers its ``resource<index>`` file."""
    try:
        with path.open() as f:
            lines = [f.readline(256) for _ in range(_SYSFS_RESOURCE_LINES)]
    except OSError as exc:
        raise DeviceError(f"{bdf}: cannot read {path}: {exc.strerror}") from exc
    regions = []
    for index, line in enumerate(lines):
        try:
            start, end, flags = (int(word, 16) for word in line.split())
        except ValueError as exc:
            raise DeviceError(f"{bdf}: {path} line {index + 1}: malformed {line!r}") from exc
        if end and end < start:
            raise DeviceError(f"{bdf}: {path} line {index + 1}: ends before it starts")
        size = end - start + 1 if end else 0
        memory = bool(flags & _IORESOURCE_MEM) and index < vfio.VFIO_PCI_ROM_REGION_INDEX
        mappable = memory and size > 0 and path.with_name(f"resource{index}").exists()
        regions.append(
            RegionInfo(
                index=index, size=size, offset=start, mappable=mappable, msix_mappable=mappable
            )
        )
    return regions
