"""A saved device state file, read and parsed once into a typed value.

File layout (a QEMU-format stream with a vmdesc, so QEMU's tools read it):

- ``<name>/vfio-pci-config``: the config state (descriptions/vfio-pci-config.toml);
- ``<name>/vfio``: QEMU's own vfio section framing: DEV_CONFIG_STATE, QEMU's
  VFIOPCIDevice state, END_OF_STATE; DEV_SETUP_STATE, END_OF_STATE; then
  DEV_DATA_STATE chunks (be64 size + bytes, at most :data:`MAX_CHUNK`), END_OF_STATE;
- ``<name>/vfio-device-state``: protocol, capabilities, the data's format and size
  (descriptions/vfio-device-state.toml);
- ``<name>/VFIOPCIDevice``: QEMU's layout of the config state on its own, when asked
  for and there is no vfio section to carry it.

:func:`read_file` walks and checks all of it that needs no device: framing, every
section, chunk sizes, the recorded data size, and the device data against its
format's description when one is registered.  :func:`snapshot` gives a file's bytes
as a private sealed copy, so that what is checked is exactly what a load writes,
whatever happens to the file meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import attrs

from vmstate import pci_vfio, registry
from vmstate.description import Description
from vmstate.device_data import MAX_DEVICE_DATA
from vmstate.errors import DecodeError, IncompatibleError, LimitError, TruncatedError
from vmstate.stream import Input, RawParser, Section, Stream, parse, resolver_from

END_OF_STATE: Final = 0xFFFFFFFFEF100001
DEV_CONFIG_STATE: Final = 0xFFFFFFFFEF100002
DEV_SETUP_STATE: Final = 0xFFFFFFFFEF100003
DEV_DATA_STATE: Final = 0xFFFFFFFFEF100004
_TAGS: Final = {END_OF_STATE, DEV_CONFIG_STATE, DEV_SETUP_STATE, DEV_DATA_STATE}
#: largest DEV_DATA_STATE chunk accepted from a file (we write at most device_data.CHUNK_SIZE)
MAX_CHUNK: Final = 64 << 20
#: device data decoded for checking and showing when a format is registered
MAX_DECODED_DATA: Final = 16 << 20
#: largest file taken: the most device data, and room for everything else
MAX_FILE: Final = MAX_DEVICE_DATA + (64 << 20)
PROTOCOL_V2: Final = 2
#: the 2019 patch's device-state regions
PROTOCOL_REGIONS: Final = 1
#: device config data carried by the region protocol (a vbuffer in the description)
MAX_REGION_CONFIG: Final = 1 << 20
META_NAME: Final = "vfio-device-state"
_BE64: Final = struct.Struct(">Q")


def format_name(driver: str | None) -> str:
    """The description of a driver's migration data, when one is registered."""
    if driver is None:
        return ""
    name = f"{driver}-migration-data"
    return name if name in registry.names() else ""


# -- QEMU's vfio section framing ------------------------------------------------------


@attrs.frozen
class VfioPayload:
    """What a ``<name>/vfio`` section holds, at absolute offsets."""

    #: QEMU's VFIOPCIDevice state in DEV_CONFIG_STATE: (start, end) and decoded
    config: tuple[int, int] | None
    config_state: dict[str, Any] | None = attrs.field(eq=False, repr=False)
    chunks: tuple[tuple[int, int], ...]
    end: int

    @property
    def data_size(self) -> int:
        return sum(size for _, size in self.chunks)


def walk_vfio(buf: Input, pos: int) -> VfioPayload:
    """Walk a vfio section's tags from *pos*; every size is checked before use.

    QEMU's VFIOPCIDevice state has no length; its layout follows from its own
    config space (PCI Express or not, MSI-X vectors), read at its start."""
    config: tuple[int, int] | None = None
    config_state = None
    chunks: list[tuple[int, int]] = []
    while pos + 8 <= len(buf) and buf[pos] == 0xFF:
        tag = _u64(buf, pos, "vfio tag")
        if tag not in _TAGS or tag == END_OF_STATE:
            raise DecodeError(
                "unknown vfio tag",
                offset=pos,
                expected="DEV_CONFIG_STATE, DEV_SETUP_STATE or DEV_DATA_STATE",
                found=f"{tag:#x}",
            )
        pos += 8
        if tag == DEV_CONFIG_STATE:
            config_state, end = walk_qemu_config(buf, pos)
            config, pos = (pos, end), end
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
    return VfioPayload(config, config_state, tuple(chunks), pos)


def walk_qemu_config(buf: Input, pos: int) -> tuple[dict[str, Any], int]:
    """QEMU's VFIOPCIDevice state at *pos*, sized by its own first 256 config bytes."""
    desc = registry.get(pci_vfio.QEMU_DESCRIPTION_NAME)
    if pos + 4 + 256 > len(buf):
        raise TruncatedError(
            "VFIOPCIDevice state cut short",
            offset=pos,
            expected="a version and 256 bytes of config",
            found=f"{len(buf) - pos} bytes",
        )
    held = pci_vfio.qemu_held(bytes(buf[pos + 4 : pos + 4 + 256]))
    return desc.load_from(buf, pos, desc.version_id, held=held)


def _u64(buf: Input, pos: int, what: str) -> int:
    if pos + 8 > len(buf):
        raise TruncatedError(
            "input ends early",
            offset=pos,
            expected=f"8 bytes of {what}",
            found=f"{len(buf) - pos} bytes",
        )
    return int(_BE64.unpack_from(buf, pos)[0])


# -- the typed value --------------------------------------------------------------------


@attrs.frozen
class ConfigSection:
    """The config state as saved: its section, decoded state and payload bytes (kept to
    check them against a destination, which decodes them with its own values)."""

    section: Section
    state: dict[str, Any] = attrs.field(eq=False, repr=False)
    data: bytes = attrs.field(eq=False, repr=False)


@attrs.frozen
class DeviceData:
    """VFIO migration v2 device data as saved: where its chunks lie, and decoded."""

    section: Section
    payload: VfioPayload
    #: the description of its format, when one is registered
    format: Description | None = attrs.field(eq=False, repr=False)
    #: the data decoded with it (when it is at most MAX_DECODED_DATA bytes)
    decoded: dict[str, Any] | None = attrs.field(eq=False, repr=False)

    @property
    def size(self) -> int:
        return self.payload.data_size


@attrs.frozen
class SavedFile:
    """A whole saved file, walked and checked as far as it can be without a device."""

    #: the name of the device it was saved from (its sections' prefix)
    name: str
    stream: Stream = attrs.field(repr=False)
    config: ConfigSection
    meta: dict[str, Any] | None = attrs.field(repr=False)
    meta_section: Section | None
    data: DeviceData | None
    #: QEMU's VFIOPCIDevice state, from the vfio section or a section of its own
    qemu_config: dict[str, Any] | None = attrs.field(eq=False, repr=False)
    #: the bytes the chunks lie in
    source: Input = attrs.field(eq=False, repr=False)

    @property
    def protocol(self) -> int | None:
        return None if self.meta is None else int(self.meta["protocol"])

    def data_reader(self) -> ChunkReader:
        """The device data, read back out of its chunks."""
        chunks = self.data.payload.chunks if self.data is not None else ()
        return ChunkReader(self.source, chunks)


class ChunkReader:
    """Reads device data out of its chunks a bounded piece at a time (a Source)."""

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


def read_file(buf: Input) -> SavedFile:
    """Parse a saved file once: framing, every section, chunk sizes, and the device data
    against its format's description.  Nothing here needs or touches a device."""
    walked: dict[int, Any] = {}

    def raw(idstr: str) -> RawParser | None:
        def vfio(b: Input, pos: int) -> int:
            walked[pos] = walk_vfio(b, pos)
            return int(walked[pos].end)

        def qemu(b: Input, pos: int) -> int:
            walked[pos], end = walk_qemu_config(b, pos)
            return end

        if idstr.endswith("/vfio"):
            return vfio
        return qemu if idstr.endswith(f"/{pci_vfio.QEMU_DESCRIPTION_NAME}") else None

    shipped = resolver_from({n: registry.get(n) for n in registry.names()})
    parsed = parse(buf, shipped, raw=raw)
    config = _config_section(parsed, buf)
    name = config.section.idstr.rsplit("/", 1)[0]
    sections = {s.idstr: s for s in parsed.sections}
    meta_section = sections.get(f"{name}/{META_NAME}")
    vfio_section = sections.get(f"{name}/vfio")
    qemu_section = sections.get(f"{name}/{pci_vfio.QEMU_DESCRIPTION_NAME}")
    meta = meta_section.state if meta_section is not None else None
    payload = walked[vfio_section.start] if vfio_section is not None else None
    qemu_config = walked[qemu_section.start] if qemu_section is not None else None
    if payload is not None and payload.config_state is not None:
        qemu_config = payload.config_state
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
    data = None
    if vfio_section is not None and payload is not None and meta_section is not None:
        assert meta is not None
        data = _device_data(buf, vfio_section, payload, meta, meta_section)
    return SavedFile(
        name, parsed, config, meta, meta_section, data, qemu_config, buf
    )


def _config_section(parsed: Stream, buf: Input) -> ConfigSection:
    for section in parsed.device_sections():
        assert section.description is not None and section.state is not None
        if section.description.name == pci_vfio.DESCRIPTION_NAME:
            data = bytes(buf[section.start : section.end])
            return ConfigSection(section, section.state, data)
    raise DecodeError(
        "no PCI config state in this file",
        offset=0,
        expected=f"a section named <device>/{pci_vfio.DESCRIPTION_NAME}",
        found=", ".join(s.idstr for s in parsed.sections) or "no sections",
        path=("stream",),
    )


def _device_data(
    buf: Input,
    section: Section,
    payload: VfioPayload,
    meta: dict[str, Any],
    meta_section: Section,
) -> DeviceData:
    if payload.data_size != meta["data_size"]:
        raise IncompatibleError(
            "device data size differs from the size recorded",
            offset=meta_section.start,
            expected=f"{meta['data_size']} bytes (data_size)",
            found=f"{payload.data_size} bytes in chunks",
            path=(META_NAME, "data_size"),
        )
    fmt_name = bytes(meta["format"]).decode("ascii", "replace")
    data_format = registry.get(fmt_name) if fmt_name in registry.names() else None
    decoded = None
    if data_format is not None and payload.data_size <= MAX_DECODED_DATA:
        joined = b"".join(bytes(buf[at : at + size]) for at, size in payload.chunks)
        try:
            decoded = data_format.load(joined)
        except DecodeError as e:
            at = _file_offset(payload, e.offset, section.start)
            raise attrs.evolve(e, offset=at, path=(section.idstr, *e.path)) from None
    return DeviceData(section, payload, data_format, decoded)


def _file_offset(payload: VfioPayload, offset: int, default: int) -> int:
    """Where byte *offset* of the joined device data lies in the file."""
    for at, size in payload.chunks:
        if offset < size:
            return at + offset
        offset -= size
    return default


# -- a private copy of a file -------------------------------------------------------------

_SEALS: Final = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


@contextlib.contextmanager
def snapshot(path: str | os.PathLike[str]) -> Iterator[Input]:
    """The bytes of the file at *path*, copied once into sealed memory and mapped.

    A saved file is checked in full before anything is written to a device, then
    read again for the device data: from a mapping of the file itself another
    process could change it in between (feeding unchecked bytes to the device) or
    truncate it (SIGBUS).  The copy is an in-kernel one (sendfile into a memfd, which
    is then sealed against any change), so it costs memory the size of the file, up
    to :data:`MAX_FILE`, but no pass through Python."""
    with open(path, "rb") as f:
        copy = os.memfd_create("vmstate-saved-file", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            size = _copy_into(f.fileno(), copy, str(path))
            fcntl.fcntl(copy, fcntl.F_ADD_SEALS, _SEALS)
            if size == 0:
                yield b""
                return
            with mmap.mmap(copy, size, access=mmap.ACCESS_READ) as mapped:
                yield mapped
        finally:
            os.close(copy)


def _copy_into(source: int, target: int, name: str) -> int:
    """Copy all of *source* (any readable file) into *target*; the bytes copied."""
    done = 0
    while True:
        try:
            moved = os.sendfile(target, source, None, MAX_FILE + 1 - done)
        except OSError:  # not a file sendfile can read (a pipe): plain reads
            moved = os.write(target, os.read(source, min(1 << 20, MAX_FILE + 1 - done)))
        if not moved:
            return done
        done += moved
        if done > MAX_FILE:
            raise LimitError(
                f"{Path(name).name} is larger than any saved file",
                offset=MAX_FILE,
                expected=f"at most {MAX_FILE} bytes",
                found="more",
            )
