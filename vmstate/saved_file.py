"""A saved device state file, read and parsed once into a typed value.

File layout (a QEMU-format stream with a vmdesc, so QEMU's tools read it):

- ``<name>/vfio-pci-config``: the config state (descriptions/vfio-pci-config.toml);
- ``<name>/vfio``: QEMU's own vfio section framing: DEV_CONFIG_STATE, QEMU's
  VFIOPCIDevice state, END_OF_STATE; DEV_SETUP_STATE, END_OF_STATE; then
  DEV_DATA_STATE chunks, END_OF_STATE (:mod:`vmstate.vfio_section`);
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import attrs

from vmstate import pci_vfio, registry
from vmstate.description import Description
from vmstate.errors import DecodeError, IncompatibleError, LimitError
from vmstate.stream import FOOTER, Input, RawParser, Section, Stream, parse, resolver_from
from vmstate.vfio_section import Closing, VfioPayload, decode_data, qemu_config, walk_vfio

#: largest file taken: the most device data (device_data.MAX_DEVICE_DATA, not imported:
#: reading a file loads none of the device code), and room for everything else
MAX_FILE: Final = (1 << 34) + (64 << 20)
PROTOCOL_V2: Final = 2
#: the 2019 patch's device-state regions
PROTOCOL_REGIONS: Final = 1
#: device config data carried by the region protocol (a vbuffer in the description)
MAX_REGION_CONFIG: Final = 1 << 20
META_NAME: Final = "vfio-device-state"


def format_name(driver: str | None) -> str:
    """The description of a driver's migration data, when one is registered."""
    if driver is None:
        return ""
    name = f"{driver}-migration-data"
    return name if name in registry.names() else ""


#: the standalone VFIOPCIDevice section (save --qemu) ends where its footer starts
_FOOTER: Final = Closing("its section footer", f"FOOTER {FOOTER:#x}", lambda b, at: at < len(b) and b[at] == FOOTER)


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
    #: the data decoded with it (when it is at most vfio_section.MAX_DECODED_DATA bytes)
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
            walked[pos], end, _ = qemu_config(b, pos, _FOOTER)
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
    qemu_state = walked[qemu_section.start] if qemu_section is not None else None
    if payload is not None and payload.config_state is not None:
        qemu_state = payload.config_state
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
    return SavedFile(name, parsed, config, meta, meta_section, data, qemu_state, buf)


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
    if data_format is not None:
        decoded = decode_data(buf, payload.chunks, data_format, section.idstr, section.start)
    return DeviceData(section, payload, data_format, decoded)


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
    to :data:`MAX_FILE`, but no pass through Python.  ``-`` is standard input."""
    own = os.fspath(path) == "-"
    with open(os.dup(0) if own else path, "rb") as f:
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
