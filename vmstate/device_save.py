"""Saving a device's whole state in one file (layout: :mod:`vmstate.saved_file`).

The config state always; the device data too when the device has VFIO migration
(read with the device stopped, in bounded chunks streamed through the file), or
its device config data when it has the 2019 patch's state regions.
"""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO

import attrs

from vmstate import pci_vfio, region_protocol, registry
from vmstate._files import atomic_output
from vmstate.device_data import Progress, save_device_data
from vmstate.device_regions import Device
from vmstate.migration import DeviceState, DeviceStateMachine, MigrationCaps, probe
from vmstate.saved_file import (
    MAX_REGION_CONFIG,
    META_NAME,
    PROTOCOL_REGIONS,
    PROTOCOL_V2,
    format_name,
)
from vmstate.stream_writer import DeviceSection, StreamWriter
from vmstate.vfio_section import DEV_CONFIG_STATE, DEV_DATA_STATE, DEV_SETUP_STATE, END_OF_STATE

_TAG = END_OF_STATE.to_bytes(8, "big")


@attrs.frozen
class Saved:
    """What a save wrote."""

    size: int
    data_size: int | None  # None: no device data (see reason)
    reason: str = ""
    #: what the file lacks that the device had, for the user to know
    warnings: tuple[str, ...] = ()


def save(
    device: Device,
    path: str | os.PathLike[str],
    *,
    driver: str | None = None,
    qemu: bool = False,
    progress: Progress | None = None,
    dirty_range: tuple[int, int] | None = None,
) -> Saved:
    """:func:`write_state` into the file at *path*, written atomically (vmstate._files)."""
    with atomic_output(path) as out:
        return write_state(
            device, out, driver=driver, qemu=qemu, progress=progress, dirty_range=dirty_range
        )


def write_state(
    device: Device,
    out: BinaryIO,
    *,
    driver: str | None = None,
    qemu: bool = False,
    progress: Progress | None = None,
    dirty_range: tuple[int, int] | None = None,
) -> Saved:
    """Write *device*'s config state, and its device data when it can migrate, to *out*.

    The device data is read with the device stopped (STOP_COPY, after PRE_COPY
    rounds when it has them); the device runs again afterwards.  A device with the
    2019 patch's state regions gives its device config data that way instead (and
    the dirty bitmap of *dirty_range*).  Without a vfio section, *qemu* adds QEMU's
    VFIOPCIDevice state on its own (with one it is in that section anyway).
    *driver* names the data's format (see :func:`vmstate.saved_file.format_name`)."""
    counted = _Counting(out)
    state = pci_vfio.read_state(device)
    caps = probe(device) if _migratable(device) else None  # type: ignore[arg-type]
    whole = state["config"] + state.get("extended_config", b"")
    express = pci_vfio.qemu_express(device.region(pci_vfio.CONFIG).size)
    qemu_state = pci_vfio.qemu_state(state, express)
    qemu_held = pci_vfio.qemu_held(whole, express)
    qemu_desc = registry.get(pci_vfio.QEMU_DESCRIPTION_NAME)
    writer = StreamWriter(counted, "vmstate")  # type: ignore[arg-type]
    name = f"{device.name}/{pci_vfio.DESCRIPTION_NAME}"
    writer.device(DeviceSection(name, pci_vfio.description(), state))
    data_size: int | None = None
    reason = "it was not opened through VFIO" if caps is None else (caps.blocker or "")
    if caps is not None and caps.blocker is None:
        qemu_bytes = qemu_desc.save(qemu_state, held=qemu_held)
        data_size = _vfio_section(writer, device, caps, qemu_bytes, driver, progress)
    else:
        regions = region_protocol.DeviceStateRegions.find(device)
        if regions is not None:
            meta = _region_protocol_state(regions, dirty_range)
            writer.device(
                DeviceSection(f"{device.name}/{META_NAME}", registry.get(META_NAME), meta)
            )
            reason, data_size = "", meta[f"{META_NAME}/region-config"]["size"]
        if qemu:
            idstr = f"{device.name}/{pci_vfio.QEMU_DESCRIPTION_NAME}"
            writer.device(DeviceSection(idstr, qemu_desc, qemu_state, held=qemu_held))
    writer.finish()
    warnings = ()
    wrote_qemu = qemu or (caps is not None and caps.blocker is None)
    if wrote_qemu and pci_vfio.msix_enabled(state) and not state["msix_saved"]:
        warnings = (
            "MSI-X is enabled but its table could not be read (root, memory decoding and D0 "
            "are needed): QEMU's msix field is written as zeros, so a QEMU that loads this "
            "file programs every vector with address 0 and data 0",
        )
    return Saved(counted.size, data_size, reason, warnings)


def _vfio_section(
    writer: StreamWriter,
    device: Device,
    caps: MigrationCaps,
    qemu_bytes: bytes,
    driver: str | None,
    progress: Progress | None,
) -> int:
    """QEMU's vfio section with the device data, and its metadata; the data's size."""
    size = 0

    def payload(f: BinaryIO) -> int:
        nonlocal size
        f.write(DEV_CONFIG_STATE.to_bytes(8, "big") + qemu_bytes + _TAG)
        f.write(DEV_SETUP_STATE.to_bytes(8, "big") + _TAG)
        sink = _ChunkSink(f)
        size = save_device_data(device, sink, progress).size  # type: ignore[arg-type]
        DeviceStateMachine(device).goto(DeviceState.RUNNING)  # type: ignore[arg-type]
        f.write(_TAG)
        return 8 + len(qemu_bytes) + 8 + 16 + sink.size + 8

    writer.raw(f"{device.name}/vfio", 1, payload)
    fmt = format_name(driver).encode()
    meta = {
        "protocol": PROTOCOL_V2,
        "flags": caps.flags,
        "format_len": len(fmt),
        "format": fmt,
        "data_size": size,
        "dirty_pages": 0,
    }
    writer.device(DeviceSection(f"{device.name}/{META_NAME}", registry.get(META_NAME), meta))
    return size


class _Counting:
    """A binary file that counts what goes through it (streams cannot be asked later)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.size = 0

    def write(self, data: bytes | memoryview, /) -> int:
        self.out.write(data)
        self.size += len(data)
        return len(data)


class _ChunkSink:
    """Frames each write of device data as a DEV_DATA_STATE chunk."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.size = 0

    def write(self, data: bytes | memoryview, /) -> int:
        self.out.write(DEV_DATA_STATE.to_bytes(8, "big") + len(data).to_bytes(8, "big"))
        self.out.write(data)
        self.size += 16 + len(data)
        return len(data)


def _migratable(device: Device) -> bool:
    """Whether the device can be asked about migration (VFIO's DEVICE_FEATURE)."""
    return callable(getattr(device, "device_feature", None))


def _region_protocol_state(
    regions: region_protocol.DeviceStateRegions, dirty_range: tuple[int, int] | None
) -> dict[str, Any]:
    """The device config data (device stopped while it is taken), and the dirty bitmap
    of *dirty_range* (start address, pages) when asked for and the device logs it."""
    sink = io.BytesIO()
    regions.set_state(region_protocol.RegionState.STOP)
    try:
        regions.save_config(sink, limit=MAX_REGION_CONFIG)
    finally:
        regions.set_state(region_protocol.RegionState.RUNNING)
    data = sink.getvalue()
    meta: dict[str, Any] = {
        "protocol": PROTOCOL_REGIONS,
        "flags": regions.caps,
        "format_len": 0,
        "format": b"",
        "data_size": 0,
        "dirty_pages": 0,
        f"{META_NAME}/region-config": {"size": len(data), "data": data},
    }
    if dirty_range is not None and regions.bitmap is not None:
        start, pages = dirty_range
        bitmap = b"".join(chunk.bitmap for chunk in regions.dirty_bitmap(start, pages))
        meta["dirty_pages"] = pages
        meta[f"{META_NAME}/dirty-bitmap"] = {
            "start_addr": start,
            "page_nr": pages,
            "bitmap_size": len(bitmap),
            "bitmap": bitmap,
        }
    return meta
