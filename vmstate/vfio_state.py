"""A VFIO device's whole state in one file: its PCI config state and, when the
device supports migration, its device data.

File layout (a QEMU-format stream, so QEMU's tools read it):

- ``<name>/vfio-pci-config``: the config state (descriptions/vfio-pci-config.toml);
- ``<name>/vfio``: QEMU's own vfio section framing: DEV_CONFIG_STATE, QEMU's
  VFIOPCIDevice state, END_OF_STATE; DEV_SETUP_STATE, END_OF_STATE; then
  DEV_DATA_STATE chunks (be64 size + bytes, at most :data:`MAX_CHUNK`), END_OF_STATE;
- ``<name>/vfio-device-state``: protocol, capabilities, the data's format and size
  (descriptions/vfio-device-state.toml).

Saving streams the device data through the file in bounded chunks.  Loading
walks and checks the whole file first (framing, config state against the
device, the data against its format's description when one is registered),
then writes the device data (RESUMING, then STOP, which makes the driver check
it), then the config.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from vmstate import migration, pci_device_state, region_protocol, registry
from vmstate._files import atomic_output
from vmstate.description import Description
from vmstate.device_regions import Device
from vmstate.errors import (
    DecodeError,
    DeviceError,
    IncompatibleError,
    LimitError,
    TruncatedError,
    UsageError,
)
from vmstate.migration import DeviceState as MigState
from vmstate.pci.decode import decode_config
from vmstate.stream import DeviceState as Section_
from vmstate.stream import Input, RawParser, Section, StreamWriter

END_OF_STATE = 0xFFFFFFFFEF100001
DEV_CONFIG_STATE = 0xFFFFFFFFEF100002
DEV_SETUP_STATE = 0xFFFFFFFFEF100003
DEV_DATA_STATE = 0xFFFFFFFFEF100004
_TAGS = {END_OF_STATE, DEV_CONFIG_STATE, DEV_SETUP_STATE, DEV_DATA_STATE}
#: largest DEV_DATA_STATE chunk accepted from a file (we write at most migration.CHUNK_SIZE)
MAX_CHUNK = 64 << 20
#: device data decoded for checking and showing when a format is registered
MAX_DECODED_DATA = 16 << 20
PROTOCOL_V2 = 2
#: the 2019 patch's device-state regions
PROTOCOL_REGIONS = 1
#: device config data carried by the region protocol (a vbuffer in the description)
MAX_REGION_CONFIG = 1 << 20
META_NAME = "vfio-device-state"
_BE64 = struct.Struct(">Q")


def format_name(driver: str | None) -> str:
    """The description of a driver's migration data, when one is registered."""
    if driver is None:
        return ""
    name = f"{driver}-migration-data"
    return name if name in registry.names() else ""


@attrs.frozen
class VfioPayload:
    """Where things are in a ``<name>/vfio`` section: absolute offsets."""

    config: tuple[int, int] | None
    chunks: tuple[tuple[int, int], ...]
    end: int
    #: each group in order: its opening tag and how many chunks it carries
    #: (END_OF_STATE opens none: QEMU's pre-copy round that read nothing)
    groups: tuple[tuple[int, int], ...]
    #: the layout of the VFIOPCIDevice state (pci_device_state.qemu_held), with config
    config_held: Mapping[str, Any] | None = attrs.field(eq=False)

    @property
    def data_size(self) -> int:
        return sum(size for _, size in self.chunks)


def walk_vfio(buf: Input, pos: int) -> VfioPayload:
    """Walk a vfio section's tags from *pos*; every size is checked before use.

    QEMU's VFIOPCIDevice state has no length; its layout follows from its config
    space (MSI-X vectors, read at its start) and from the size of the device's config
    region, which only the state's end shows (see :func:`_config_end`).  A group may be
    END_OF_STATE alone: QEMU writes that for a pre-copy round that read no data."""
    config: tuple[int, int] | None = None
    held: dict[str, Any] | None = None
    chunks: list[tuple[int, int]] = []
    groups: list[tuple[int, int]] = []
    while pos + 8 <= len(buf) and buf[pos] == 0xFF:
        tag = _u64(buf, pos, "vfio tag")
        if tag not in _TAGS:
            raise DecodeError(
                "unknown vfio tag",
                offset=pos,
                expected="DEV_CONFIG_STATE, DEV_SETUP_STATE, DEV_DATA_STATE or END_OF_STATE",
                found=f"{tag:#x}",
            )
        pos += 8
        opening, opened = tag, len(chunks)
        if tag == END_OF_STATE:
            groups.append((tag, 0))
            continue
        if tag == DEV_CONFIG_STATE:
            end, held = _config_end(buf, pos)
            config = (pos, end)
            pos = end
        while tag == DEV_DATA_STATE:
            size = _u64(buf, pos, "chunk size")
            if size > MAX_CHUNK:
                raise LimitError(
                    "device data chunk too large",
                    offset=pos,
                    expected=f"<= {MAX_CHUNK} bytes",
                    found=str(size),
                )
            if pos + 8 + size > len(buf):
                raise TruncatedError(
                    "device data chunk cut short",
                    offset=pos + 8,
                    expected=f"{size} bytes",
                    found=f"{len(buf) - pos - 8} bytes",
                )
            chunks.append((pos + 8, size))
            pos += 8 + size
            tag = _u64(buf, pos, "vfio tag")
            if tag == DEV_DATA_STATE:
                pos += 8
        closing = _u64(buf, pos, "END_OF_STATE")
        if closing != END_OF_STATE:
            raise DecodeError(
                "vfio group not closed",
                offset=pos,
                expected=f"END_OF_STATE {END_OF_STATE:#x}",
                found=f"{closing:#x}",
            )
        pos += 8
        groups.append((opening, len(chunks) - opened))
    return VfioPayload(config, tuple(chunks), pos, tuple(groups), held)


def _config_end(buf: Input, pos: int) -> tuple[int, dict[str, Any]]:
    """The end and layout of the VFIOPCIDevice state at *pos*.

    QEMU saves 256 or 4096 config bytes by the device's config region size, which the
    bytes do not record (pci_device_state.qemu_express): the layout is the one whose
    end END_OF_STATE follows, tried first as a PCI Express capability suggests."""
    desc = registry.get(pci_device_state.QEMU_DESCRIPTION_NAME)
    if pos + 4 + 256 > len(buf):
        raise TruncatedError(
            "VFIOPCIDevice state cut short",
            offset=pos,
            expected="a version and 256 bytes of config",
            found=f"{len(buf) - pos} bytes",
        )
    config = bytes(buf[pos + 4 : pos + 4 + 256])
    guess = decode_config(config).express is not None
    ends = []
    failed: DecodeError | None = None
    for express in (guess, not guess):
        held = pci_device_state.qemu_held(config, express)
        try:
            _, end = desc.load_from(buf, pos, desc.version_id, held=held)
        except DecodeError as e:
            failed = failed or e
            continue
        if end + 8 <= len(buf) and _BE64.unpack_from(buf, end)[0] == END_OF_STATE:
            return end, held
        ends.append(end)
    if not ends and failed is not None:
        raise failed
    raise DecodeError(
        "VFIOPCIDevice state not closed by END_OF_STATE with 256 or 4096 config bytes",
        offset=ends[0],
        expected=f"END_OF_STATE {END_OF_STATE:#x}",
        found=", ".join(f"{bytes(buf[e : e + 8]).hex()} at {e:#x}" for e in ends),
    )


def config_state(buf: Input, payload: VfioPayload) -> dict[str, Any] | None:
    """The walked section's VFIOPCIDevice state, decoded; None when it has none."""
    if payload.config is None:
        return None
    desc = registry.get(pci_device_state.QEMU_DESCRIPTION_NAME)
    state, _ = desc.load_from(buf, payload.config[0], desc.version_id, held=payload.config_held)
    return state


def _u64(buf: Input, pos: int, what: str) -> int:
    if pos + 8 > len(buf):
        raise TruncatedError(
            "input ends early",
            offset=pos,
            expected=f"8 bytes of {what}",
            found=f"{len(buf) - pos} bytes",
        )
    return int(_BE64.unpack_from(buf, pos)[0])


# -- save ---------------------------------------------------------------------------


@attrs.frozen
class Saved:
    """What :func:`save` wrote."""

    size: int
    data_size: int | None  # None: no device data (no migration support; see reason)
    reason: str = ""


class _ChunkSink:
    """Frames each write of device data as a DEV_DATA_STATE chunk."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.size = 0

    def write(self, data: bytes | memoryview, /) -> int:
        self.out.write(_BE64.pack(DEV_DATA_STATE) + _BE64.pack(len(data)))
        self.out.write(data)
        self.size += 16 + len(data)
        return len(data)


def _migratable(device: Device) -> bool:
    """Whether the device can be asked about migration (VFIO's DEVICE_FEATURE)."""
    return callable(getattr(device, "device_feature", None))


def save(
    device: Device,
    path: str | Path,
    *,
    driver: str | None = None,
    qemu: bool = False,
    progress: migration.Progress | None = None,
    dirty_range: tuple[int, int] | None = None,
) -> Saved:
    """Save *device*'s config state, and its device data when it supports migration.

    The device data is read with the device stopped (STOP_COPY, after PRE_COPY
    rounds when it has them); the device runs again afterwards.  A device with the
    2019 patch's state regions instead gives its device config data that way (and
    the dirty bitmap of *dirty_range*).  Without a vfio section, *qemu* adds QEMU's
    VFIOPCIDevice state on its own (with one it is in that section anyway)."""
    state = pci_device_state.read_state(device)
    caps = migration.probe(device) if _migratable(device) else None  # type: ignore[arg-type]
    reason = "not opened through VFIO" if caps is None else (caps.blocker or "")
    config = pci_device_state.description()
    qemu_desc = registry.get(pci_device_state.QEMU_DESCRIPTION_NAME)
    whole = state["config"] + state.get("extended_config", b"")
    express = pci_device_state.qemu_express(device.region(pci_device_state.CONFIG).size)
    qemu_state = pci_device_state.qemu_state(state, express)
    qemu_held = pci_device_state.qemu_held(whole, express)
    sink_size = 0
    saved: migration.SavedDeviceData | None = None
    with atomic_output(path) as out:
        writer = StreamWriter(out, "vmstate")
        writer.device(Section_(f"{device.name}/{pci_device_state.DESCRIPTION_NAME}", config, state))
        if caps is not None and not caps.blocker:

            def payload(f: BinaryIO) -> int:
                nonlocal saved, sink_size
                qemu_bytes = qemu_desc.save(qemu_state, held=qemu_held)
                f.write(_BE64.pack(DEV_CONFIG_STATE) + qemu_bytes + _BE64.pack(END_OF_STATE))
                f.write(_BE64.pack(DEV_SETUP_STATE) + _BE64.pack(END_OF_STATE))
                sink = _ChunkSink(f)
                saved = migration.save_device_data(device, sink, progress)  # type: ignore[arg-type]
                migration.DeviceStateMachine(device).goto(MigState.RUNNING)  # type: ignore[arg-type]
                f.write(_BE64.pack(END_OF_STATE))
                sink_size = sink.size
                return 8 + len(qemu_bytes) + 8 + 16 + sink_size + 8

            writer.raw(f"{device.name}/vfio", 1, payload)
            assert saved is not None
            fmt = format_name(driver).encode()
            meta = {
                "protocol": PROTOCOL_V2,
                "flags": caps.flags,
                "format_len": len(fmt),
                "format": fmt,
                "data_size": saved.size,
                "dirty_pages": 0,
            }
            writer.device(Section_(f"{device.name}/{META_NAME}", registry.get(META_NAME), meta))
        else:
            regions = state_regions(device)
            if regions is not None:
                meta = _region_protocol_state(regions, dirty_range)
                writer.device(Section_(f"{device.name}/{META_NAME}", registry.get(META_NAME), meta))
                reason = ""
                size = meta[f"{META_NAME}/region-config"]["size"]
                saved = migration.SavedDeviceData(size=size)
            if qemu:
                idstr = f"{device.name}/{pci_device_state.QEMU_DESCRIPTION_NAME}"
                writer.device(Section_(idstr, qemu_desc, qemu_state, held=qemu_held))
        writer.finish()
    return Saved(Path(path).stat().st_size, saved.size if saved else None, reason)


def state_regions(device: Device) -> region_protocol.DeviceStateRegions | None:
    """The 2019 protocol's regions when the device has them (none has in Linux)."""
    try:
        return region_protocol.DeviceStateRegions.open(device)
    except DeviceError:
        return None


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


# -- load ---------------------------------------------------------------------------


@attrs.frozen
class SavedFile:
    """A saved file, walked and checked as far as it can be without a device."""

    name: str
    config: Section
    meta: dict[str, Any] | None
    payload: VfioPayload | None
    #: the device data decoded with its format's description, when one is registered
    data: dict[str, Any] | None
    data_format: Description | None


def raw_sections(idstr: str) -> RawParser | None:
    """The walker of vfio sections, for parsing files that hold them."""
    return (lambda b, pos: walk_vfio(b, pos).end) if idstr.endswith("/vfio") else None


def read_file(buf: Input) -> SavedFile:
    """Walk the whole file: framing, every section, chunk sizes, and the device data
    against its format's description.  Nothing here needs or touches a device."""
    parsed = pci_device_state.parse_file(buf, raw_sections)
    config = pci_device_state.config_section(parsed)
    name = config.idstr.rsplit("/", 1)[0]
    sections = {s.idstr: s for s in parsed.sections}
    meta_section = sections.get(f"{name}/{META_NAME}")
    vfio_section = sections.get(f"{name}/vfio")
    meta = meta_section.state if meta_section is not None else None
    protocol = meta["protocol"] if meta is not None else None
    if (protocol == PROTOCOL_V2) != (vfio_section is not None):
        what = "a vfio section without its" if vfio_section is not None else "no vfio section for"
        at = vfio_section or meta_section
        assert at is not None
        raise DecodeError(
            f"{what} {META_NAME} of protocol {PROTOCOL_V2}",
            offset=at.header_offset,
            expected=f"{name}/vfio exactly with VFIO migration v2 device data",
            found=f"protocol {protocol}",
            path=(name,),
        )
    if meta is None or vfio_section is None:
        return SavedFile(name, config, meta, None, None, None)
    payload = walk_vfio(buf, vfio_section.start)
    if payload.data_size != meta["data_size"]:
        raise IncompatibleError(
            "device data size differs from the size recorded",
            offset=meta_section.start if meta_section is not None else 0,
            expected=f"{meta['data_size']} bytes (data_size)",
            found=f"{payload.data_size} bytes in chunks",
            path=(META_NAME, "data_size"),
        )
    fmt_name = bytes(meta["format"]).decode("ascii", "replace")
    data_format = registry.get(fmt_name) if fmt_name in registry.names() else None
    data = None
    if data_format is not None:
        data = decode_data(buf, payload.chunks, data_format, f"{name}/vfio", vfio_section.start)
    return SavedFile(name, config, meta, payload, data, data_format)


def decode_data(
    buf: Input,
    chunks: tuple[tuple[int, int], ...],
    data_format: Description,
    idstr: str,
    default_offset: int,
) -> dict[str, Any] | None:
    """The device data in *chunks* joined and decoded with *data_format*; None when it
    is larger than MAX_DECODED_DATA.  A decoding error names the offset in *buf* of
    the byte it found (*default_offset* when the data ran out) and *idstr* in its path."""
    if sum(size for _, size in chunks) > MAX_DECODED_DATA:
        return None
    joined = b"".join(bytes(buf[at : at + size]) for at, size in chunks)
    try:
        return data_format.load(joined)
    except DecodeError as e:
        at = _offset_in(chunks, e.offset, default_offset)
        raise attrs.evolve(e, offset=at, path=(idstr, *e.path)) from None


def _offset_in(chunks: tuple[tuple[int, int], ...], offset: int, default: int) -> int:
    """Where byte *offset* of the joined device data lies in the input."""
    for at, size in chunks:
        if offset < size:
            return at + offset
        offset -= size
    return default


class _ChunkSource:
    """Reads the device data back out of its chunks, a bounded piece at a time."""

    def __init__(self, buf: Input, chunks: tuple[tuple[int, int], ...]) -> None:
        self.buf = buf
        self.pieces: Iterator[tuple[int, int]] = iter(chunks)
        self.at, self.left = 0, 0

    def readinto(self, buffer: memoryview, /) -> int:
        while self.left == 0:
            piece = next(self.pieces, None)
            if piece is None:
                return 0
            self.at, self.left = piece
        n = min(len(buffer), self.left)
        buffer[:n] = self.buf[self.at : self.at + n]
        self.at += n
        self.left -= n
        return n


def load(
    device: Device, buf: Input, *, dry_run: bool = False, progress: migration.Progress | None = None
) -> SavedFile:
    """Check the whole file against *device*, then restore its device data and config.

    Nothing is written unless every check passes; the device data goes first
    (leaving RESUMING makes its driver check it), the config after it."""
    saved = read_file(buf)
    checked = pci_device_state.check(device, buf, raw_sections)
    if saved.payload is not None and saved.meta is not None:
        if not _migratable(device):
            raise UsageError("device data can only be loaded through VFIO")
        caps = migration.probe(device)  # type: ignore[arg-type]
        if caps.blocker:
            raise IncompatibleError(
                f"the file has device data but {device.name} cannot take it: {caps.blocker}",
                offset=saved.config.header_offset,
                expected="a device with VFIO migration",
                found=caps.blocker,
                path=(META_NAME, "protocol"),
            )
    regions = None
    if saved.meta is not None and saved.meta["protocol"] == PROTOCOL_REGIONS:
        regions = state_regions(device)
        if regions is None:
            raise IncompatibleError(
                f"the file has region-protocol device data but {device.name} has no "
                "device-state regions",
                offset=saved.config.header_offset,
                expected="the 2019 patch's device-state regions",
                found="none",
                path=(META_NAME, "protocol"),
            )
    if dry_run:
        return saved
    if regions is not None and saved.meta is not None:
        config = saved.meta[f"{META_NAME}/region-config"]
        regions.set_state(region_protocol.RegionState.STOP)
        try:
            regions.load_config(io.BytesIO(config["data"]), config["size"], limit=MAX_REGION_CONFIG)
        finally:
            regions.set_state(region_protocol.RegionState.RUNNING)
    if saved.payload is not None and saved.meta is not None:
        source = _ChunkSource(buf, saved.payload.chunks)
        migration.load_device_data(device, source, saved.payload.data_size, progress)  # type: ignore[arg-type]
        migration.DeviceStateMachine(device).goto(MigState.RUNNING)  # type: ignore[arg-type]
    pci_device_state.apply(device, checked)
    return saved
