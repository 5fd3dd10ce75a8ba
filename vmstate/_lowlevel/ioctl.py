"""Thin wrappers over the VFIO ioctls, returning parsed attrs values.

Each wrapper builds the kernel's struct in a cffi buffer, retries on EINTR and
turns a failure into :class:`IoctlError` (a :class:`DeviceError` naming the ioctl
and carrying its errno, so callers can tell "unsupported" from "broken").
Capability chains come from the kernel but are parsed as untrusted bytes: every
offset is checked against the buffer before it is followed.
"""

from __future__ import annotations

import errno as errno_codes
import fcntl
import os
from typing import Any, Final

import attrs

from vmstate._lowlevel import vfio
from vmstate._lowlevel._vfio_ffi import ffi
from vmstate.errors import DeviceError

#: largest info buffer (fixed struct + capability chain) the kernel may ask for
MAX_INFO_SIZE: Final = 1 << 16
#: how often the argsz grow-and-retry protocol may ask for a bigger buffer
MAX_INFO_ATTEMPTS: Final = 4
#: the kernel places every capability on a u64 boundary (vfio_info_cap_add)
CAP_ALIGN: Final = 8

REGION_INFO_SIZE: Final = ffi.sizeof("struct vfio_region_info")
_CAP_HEADER_SIZE: Final = ffi.sizeof("struct vfio_info_cap_header")
_FEATURE_SIZE: Final = ffi.sizeof("struct vfio_device_feature")


@attrs.frozen(auto_exc=True)
class IoctlError(DeviceError):
    """An ioctl failed; ``request`` names it and ``errno`` says why (ENOTTY: unsupported)."""

    request: str = ""
    errno: int = 0


@attrs.frozen
class GroupStatus:
    """VFIO_GROUP_GET_STATUS: a group is usable only when every device in it is VFIO-owned."""

    flags: int

    @property
    def viable(self) -> bool:
        return bool(self.flags & vfio.VFIO_GROUP_FLAGS_VIABLE)

    @property
    def container_set(self) -> bool:
        return bool(self.flags & vfio.VFIO_GROUP_FLAGS_CONTAINER_SET)


@attrs.frozen
class DeviceInfo:
    """VFIO_DEVICE_GET_INFO: how many region and IRQ indexes to ask about."""

    flags: int
    num_regions: int
    num_irqs: int


@attrs.frozen
class CapabilityHeader:
    """One link of an info capability chain; ``offset`` is from the start of the info buffer."""

    id: int
    version: int
    offset: int


@attrs.frozen
class RegionCapabilities:
    """The region capabilities this library interprets, plus the ids of the others."""

    #: (type, subtype) from the TYPE capability: how device-specific regions are found
    type: tuple[int, int] | None = None
    #: (offset, size) areas from SPARSE_MMAP; None when the capability is absent
    sparse_areas: tuple[tuple[int, int], ...] | None = None
    msix_mappable: bool = False
    other: tuple[int, ...] = ()


@attrs.frozen
class VfioRegionInfo:
    """VFIO_DEVICE_GET_REGION_INFO with its capability chain parsed."""

    index: int
    flags: int
    size: int
    offset: int
    caps: RegionCapabilities = RegionCapabilities()


@attrs.frozen
class IrqInfo:
    """One IRQ index: ``count`` vectors, ``flags`` VFIO_IRQ_INFO_* bits."""

    index: int
    count: int
    flags: int


@attrs.frozen
class MigState:
    """VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE: the state, and the data fd an arc opened (or -1)."""

    device_state: int
    data_fd: int


@attrs.frozen
class PrecopyInfo:
    """VFIO_MIG_GET_PRECOPY_INFO: bytes still to read in PRE_COPY."""

    flags: int
    initial_bytes: int
    dirty_bytes: int


def _ioctl(fd: int, request: int, name: str, arg: Any = 0) -> int:
    """ioctl(2) that retries on EINTR; *arg* is an int or a writable cffi buffer."""
    while True:
        try:
            if isinstance(arg, int):
                return fcntl.ioctl(fd, request, arg)
            return fcntl.ioctl(fd, request, arg, True)
        except InterruptedError:
            continue
        except OSError as exc:
            code = exc.errno or 0
            message = f"{name}: {errno_codes.errorcode.get(code, code)} ({os.strerror(code)})"
            raise IoctlError(message, request=name, errno=code) from exc


def get_api_version(container_fd: int) -> int:
    return _ioctl(container_fd, vfio.VFIO_GET_API_VERSION, "VFIO_GET_API_VERSION")


def check_extension(container_fd: int, extension: int) -> bool:
    name = f"VFIO_CHECK_EXTENSION({extension})"
    return _ioctl(container_fd, vfio.VFIO_CHECK_EXTENSION, name, extension) > 0


def set_iommu(container_fd: int, iommu_type: int) -> None:
    _ioctl(container_fd, vfio.VFIO_SET_IOMMU, f"VFIO_SET_IOMMU({iommu_type})", iommu_type)


def group_get_status(group_fd: int) -> GroupStatus:
    status = ffi.new(
        "struct vfio_group_status *", {"argsz": ffi.sizeof("struct vfio_group_status")}
    )
    _ioctl(group_fd, vfio.VFIO_GROUP_GET_STATUS, "VFIO_GROUP_GET_STATUS", ffi.buffer(status))
    return GroupStatus(flags=status.flags)


def group_set_container(group_fd: int, container_fd: int) -> None:
    fd = ffi.new("int32_t *", container_fd)
    _ioctl(group_fd, vfio.VFIO_GROUP_SET_CONTAINER, "VFIO_GROUP_SET_CONTAINER", ffi.buffer(fd))


def group_get_device_fd(group_fd: int, name: str) -> int:
    """A new fd for device *name* (PCI address or mdev UUID) of this group."""
    text = ffi.new("char[]", name.encode())
    return _ioctl(
        group_fd,
        vfio.VFIO_GROUP_GET_DEVICE_FD,
        f"VFIO_GROUP_GET_DEVICE_FD({name})",
        ffi.buffer(text),
    )


def device_get_info(device_fd: int) -> DeviceInfo:
    """Device flags and index counts.  Device-info capabilities (s390 zPCI only) are not read."""
    info = ffi.new("struct vfio_device_info *", {"argsz": ffi.sizeof("struct vfio_device_info")})
    _ioctl(device_fd, vfio.VFIO_DEVICE_GET_INFO, "VFIO_DEVICE_GET_INFO", ffi.buffer(info))
    return DeviceInfo(flags=info.flags, num_regions=info.num_regions, num_irqs=info.num_irqs)


def device_get_region_info(device_fd: int, index: int) -> VfioRegionInfo:
    """Region *index* with its capabilities, growing the buffer when the kernel asks for more."""
    name = f"VFIO_DEVICE_GET_REGION_INFO(index {index})"
    argsz = REGION_INFO_SIZE
    for _ in range(MAX_INFO_ATTEMPTS):
        raw = ffi.new("char[]", argsz)
        info = ffi.cast("struct vfio_region_info *", raw)
        info.argsz = argsz
        info.index = index
        _ioctl(device_fd, vfio.VFIO_DEVICE_GET_REGION_INFO, name, ffi.buffer(raw))
        if info.argsz <= argsz:
            return parse_region_info(ffi.buffer(raw)[:])
        if info.argsz > MAX_INFO_SIZE:
            raise DeviceError(
                f"{name}: kernel asks for a {info.argsz}-byte buffer, limit {MAX_INFO_SIZE}"
            )
        argsz = info.argsz
    raise DeviceError(f"{name}: argsz still growing after {MAX_INFO_ATTEMPTS} attempts")


def device_get_irq_info(device_fd: int, index: int) -> IrqInfo:
    info = ffi.new(
        "struct vfio_irq_info *", {"argsz": ffi.sizeof("struct vfio_irq_info"), "index": index}
    )
    name = f"VFIO_DEVICE_GET_IRQ_INFO(index {index})"
    _ioctl(device_fd, vfio.VFIO_DEVICE_GET_IRQ_INFO, name, ffi.buffer(info))
    return IrqInfo(index=info.index, count=info.count, flags=info.flags)


def device_set_irqs(
    device_fd: int, flags: int, index: int, start: int, count: int, data: bytes = b""
) -> None:
    """VFIO_DEVICE_SET_IRQS; *data* is the bool (u8) or eventfd (s32) array *flags* announce."""
    size = ffi.sizeof("struct vfio_irq_set") + len(data)
    raw = ffi.new("char[]", size)
    irq_set = ffi.cast("struct vfio_irq_set *", raw)
    irq_set.argsz = size
    irq_set.flags = flags
    irq_set.index = index
    irq_set.start = start
    irq_set.count = count
    ffi.memmove(irq_set.data, data, len(data))
    name = f"VFIO_DEVICE_SET_IRQS(index {index}, flags {flags:#x})"
    _ioctl(device_fd, vfio.VFIO_DEVICE_SET_IRQS, name, ffi.buffer(raw))


def device_reset(device_fd: int) -> None:
    _ioctl(device_fd, vfio.VFIO_DEVICE_RESET, "VFIO_DEVICE_RESET")


def device_feature(device_fd: int, flags: int, payload: bytes = b"") -> bytes:
    """VFIO_DEVICE_FEATURE with *payload* as data[]; returns data[] as the kernel left it."""
    size = _FEATURE_SIZE + len(payload)
    raw = ffi.new("char[]", size)
    feature = ffi.cast("struct vfio_device_feature *", raw)
    feature.argsz = size
    feature.flags = flags
    ffi.memmove(feature.data, payload, len(payload))
    _ioctl(device_fd, vfio.VFIO_DEVICE_FEATURE, f"VFIO_DEVICE_FEATURE({flags:#x})", ffi.buffer(raw))
    return ffi.buffer(raw)[_FEATURE_SIZE:]


def _feature_struct(device_fd: int, flags: int, ctype: str, init: dict[str, int]) -> Any:
    """device_feature() with a typed payload: builds *ctype* from *init*, returns the result."""
    payload = ffi.new(f"{ctype} *", init)
    data = device_feature(device_fd, flags, ffi.buffer(payload)[:])
    result = ffi.new(f"{ctype} *")
    ffi.memmove(result, data, len(data))
    return result


def migration_flags(device_fd: int) -> int:
    """VFIO_MIGRATION_* flags; IoctlError with errno ENOTTY when the device cannot migrate."""
    flags = vfio.VFIO_DEVICE_FEATURE_GET | vfio.VFIO_DEVICE_FEATURE_MIGRATION
    return _feature_struct(device_fd, flags, "struct vfio_device_feature_migration", {}).flags


def get_mig_state(device_fd: int) -> MigState:
    flags = vfio.VFIO_DEVICE_FEATURE_GET | vfio.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE
    state = _feature_struct(
        device_fd, flags, "struct vfio_device_feature_mig_state", {"data_fd": -1}
    )
    return MigState(device_state=state.device_state, data_fd=state.data_fd)


def set_mig_state(device_fd: int, device_state: int) -> MigState:
    """Move to *device_state* along one arc; ``data_fd`` is the fd the arc opened, or -1."""
    flags = vfio.VFIO_DEVICE_FEATURE_SET | vfio.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE
    state = _feature_struct(
        device_fd,
        flags,
        "struct vfio_device_feature_mig_state",
        {"device_state": device_state, "data_fd": -1},
    )
    return MigState(device_state=state.device_state, data_fd=state.data_fd)


def mig_data_size(device_fd: int) -> int:
    """Bytes STOP_COPY is expected to produce (an estimate; the data fd is authoritative)."""
    flags = vfio.VFIO_DEVICE_FEATURE_GET | vfio.VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
    size = _feature_struct(device_fd, flags, "struct vfio_device_feature_mig_data_size", {})
    return size.stop_copy_length


def mig_get_precopy_info(data_fd: int) -> PrecopyInfo:
    """Ask the migration data fd (not the device fd) how much PRE_COPY data is pending."""
    info = ffi.new("struct vfio_precopy_info *", {"argsz": ffi.sizeof("struct vfio_precopy_info")})
    _ioctl(data_fd, vfio.VFIO_MIG_GET_PRECOPY_INFO, "VFIO_MIG_GET_PRECOPY_INFO", ffi.buffer(info))
    return PrecopyInfo(
        flags=info.flags, initial_bytes=info.initial_bytes, dirty_bytes=info.dirty_bytes
    )


def walk_capabilities(buf: bytes, first: int, fixed_size: int) -> tuple[CapabilityHeader, ...]:
    """The capability chain of an info buffer, starting at offset *first* (0: none).

    Each link must lie after the fixed struct (*fixed_size* bytes) and inside *buf*,
    be CAP_ALIGN-aligned and not be visited twice, so a corrupt chain raises
    DeviceError instead of reading out of bounds or looping.
    """
    data = ffi.from_buffer(buf)
    seen: set[int] = set()
    chain: list[CapabilityHeader] = []
    offset = first
    while offset:
        where = f"capability chain link at offset {offset:#x}"
        if offset in seen:
            raise DeviceError(f"{where}: loops back to an earlier capability")
        if offset < fixed_size or offset + _CAP_HEADER_SIZE > len(buf):
            raise DeviceError(f"{where}: outside the info buffer ({fixed_size:#x}..{len(buf):#x})")
        if offset % CAP_ALIGN:
            raise DeviceError(f"{where}: not aligned to {CAP_ALIGN} bytes")
        seen.add(offset)
        header = ffi.cast("struct vfio_info_cap_header *", data + offset)
        chain.append(CapabilityHeader(id=header.id, version=header.version, offset=offset))
        offset = header.next
    return tuple(chain)


def parse_region_info(buf: bytes) -> VfioRegionInfo:
    """Parse a VFIO_DEVICE_GET_REGION_INFO result: the fixed struct and its capabilities."""
    if len(buf) < REGION_INFO_SIZE:
        raise DeviceError(f"region info truncated: {len(buf)} bytes, need {REGION_INFO_SIZE}")
    data = ffi.from_buffer(buf)
    info = ffi.cast("struct vfio_region_info *", data)
    caps = RegionCapabilities()
    if info.flags & vfio.VFIO_REGION_INFO_FLAG_CAPS:
        caps = _region_capabilities(buf, info.cap_offset, info.size)
    return VfioRegionInfo(
        index=info.index, flags=info.flags, size=info.size, offset=info.offset, caps=caps
    )


def _region_capabilities(buf: bytes, first: int, region_size: int) -> RegionCapabilities:
    data = ffi.from_buffer(buf)
    found: dict[str, Any] = {}
    other: list[int] = []

    def body(cap: CapabilityHeader, ctype: str, extra: int = 0) -> Any:
        end = cap.offset + ffi.sizeof(ctype) + extra
        if end > len(buf):
            raise DeviceError(
                f"capability {cap.id} at offset {cap.offset:#x}: truncated, "
                f"needs {end:#x} bytes, buffer has {len(buf):#x}"
            )
        return ffi.cast(f"{ctype} *", data + cap.offset)

    def once(cap: CapabilityHeader, key: str, value: Any) -> None:
        if key in found:
            raise DeviceError(f"capability {cap.id} at offset {cap.offset:#x}: duplicate")
        found[key] = value

    area_size = ffi.sizeof("struct vfio_region_sparse_mmap_area")
    for cap in walk_capabilities(buf, first, REGION_INFO_SIZE):
        if cap.id == vfio.VFIO_REGION_INFO_CAP_TYPE:
            kind = body(cap, "struct vfio_region_info_cap_type")
            once(cap, "type", (kind.type, kind.subtype))
        elif cap.id == vfio.VFIO_REGION_INFO_CAP_SPARSE_MMAP:
            nr_areas = body(cap, "struct vfio_region_info_cap_sparse_mmap").nr_areas
            sparse = body(cap, "struct vfio_region_info_cap_sparse_mmap", nr_areas * area_size)
            areas = tuple((sparse.areas[i].offset, sparse.areas[i].size) for i in range(nr_areas))
            for start, size in areas:
                if start + size > region_size:
                    raise DeviceError(
                        f"sparse mmap area {start:#x}+{size:#x} at offset {cap.offset:#x} "
                        f"lies outside the {region_size:#x}-byte region"
                    )
            once(cap, "sparse_areas", areas)
        elif cap.id == vfio.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE:
            once(cap, "msix_mappable", True)
        else:
            other.append(cap.id)
    return RegionCapabilities(**found, other=tuple(other))
