"""A VFIO device's state in a QEMU migration stream, gathered from its sections.

QEMU migrates a VFIO device (hw/vfio/migration.c) in sections of one id string,
``<PCI address>/vfio``, none of which vmdesc describes field by field: START holds
DEV_SETUP_STATE, each PART one pre-copy round of device data (END_OF_STATE alone for
a round that read nothing), END the stop-copy data, and a FULL section, written
after RAM with the other devices, the VFIOPCIDevice config state.  vmstate's own
files (saved_file) hold the same groups in one FULL section.

Here the sections are gathered per device, the config state decoded with QEMU's
VFIOPCIDevice description and the device data, joined across chunks and sections,
with the description of its format.  The stream does not say which format the data
has (the driver decides it): the caller names it.  Every section can be encoded again
from what was decoded, which ``vmstate analyze --verify-roundtrip`` compares.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import attrs

from vmstate import pci_vfio, registry, vfio_section
from vmstate.analyze import Mismatch, compare_section
from vmstate.description import Description
from vmstate.errors import DecodeError, EncodeError, format_path
from vmstate.findings import ERROR, WARNING, Finding
from vmstate.stream import Input, Section, Stream
from vmstate.vfio_section import (
    DEV_CONFIG_STATE,
    DEV_DATA_STATE,
    END_OF_STATE,
    VfioPayload,
)

_BE64 = struct.Struct(">Q")
_KINDS = {1: "START", 2: "PART", 3: "END", 4: "FULL"}


@attrs.frozen
class VfioSections:
    """One VFIO device's sections, walked and decoded."""

    idstr: str
    sections: tuple[Section, ...]
    #: each section's groups and chunks, in the order of *sections*
    payloads: tuple[VfioPayload, ...]
    #: each section's VFIOPCIDevice state, decoded (None: the section has none)
    configs: tuple[dict[str, Any] | None, ...] = attrs.field(eq=False, repr=False)
    data_format: Description | None = attrs.field(eq=False)
    #: the device data decoded with *data_format* (None: no format, or too large)
    data: dict[str, Any] | None = attrs.field(eq=False, repr=False)

    @property
    def chunks(self) -> tuple[tuple[int, int], ...]:
        return tuple(chunk for payload in self.payloads for chunk in payload.chunks)

    @property
    def data_size(self) -> int:
        return sum(size for _, size in self.chunks)

    @property
    def config(self) -> dict[str, Any] | None:
        """The config state (QEMU writes one, in its FULL section)."""
        return next((c for c in self.configs if c is not None), None)

    def layout(self) -> str:
        """The sections in stream order, e.g. ``START PART PART END FULL``."""
        return " ".join(_KINDS.get(s.type, str(s.type)) for s in self.sections)


def is_vfio(section: Section) -> bool:
    return vfio_section.raw_sections(section.idstr) is not None


def gather(
    stream: Stream, buf: Input, data_format: Description | None = None
) -> tuple[VfioSections, ...]:
    """Every VFIO device of a stream parsed with ``raw=vfio_section.raw_sections``, in the
    order of its first section; the device data is decoded with *data_format* if given."""
    return tuple(
        decode(idstr, sections, buf, data_format) for idstr, sections in _by_device(stream)
    )


def _by_device(stream: Stream) -> list[tuple[str, tuple[Section, ...]]]:
    by_idstr: dict[str, list[Section]] = {}
    for section in stream.sections:
        if is_vfio(section):
            by_idstr.setdefault(section.idstr, []).append(section)
    return [(idstr, tuple(sections)) for idstr, sections in by_idstr.items()]


def decode(
    idstr: str, sections: tuple[Section, ...], buf: Input, data_format: Description | None
) -> VfioSections:
    """One device's sections walked, its config state and device data decoded."""
    payloads = tuple(vfio_section.walk_vfio(buf, s.start) for s in sections)
    configs = tuple(p.config_state for p in payloads)
    chunks = tuple(chunk for p in payloads for chunk in p.chunks)
    data = None
    if data_format is not None:
        data = vfio_section.decode_data(buf, chunks, data_format, idstr, sections[-1].end)
    return VfioSections(idstr, sections, payloads, configs, data_format, data)


def problems(stream: Stream, buf: Input, data_format: Description | None) -> list[Finding]:
    """Why a destination would refuse a VFIO device's state, before it sees any: its
    device data against *data_format* (parsing the stream checked the framing)."""
    found = []
    for idstr, sections in _by_device(stream):
        if data_format is None:
            reason = "its device data is not checked: name its format (--device-data)"
            found.append(Finding(WARNING, idstr, "", "device-data-unchecked", reason))
            continue
        try:
            decode(idstr, sections, buf, data_format)
        except DecodeError as e:
            reason = f"{e.message} at offset {e.offset:#x} (expected {e.expected}, found {e.found})"
            path = e.path[1:] if e.path[:1] == (idstr,) else e.path
            found.append(Finding(ERROR, idstr, format_path(path), "device-data", reason))
    return found


def encode(device: VfioSections, buf: Input) -> list[bytes]:
    """Each section's payload encoded again: the framing from the walked groups, the
    config state with VFIOPCIDevice, the device data with its format when it was
    decoded (else its bytes as read), split into chunks of the sizes read."""
    if device.data is not None and device.data_format is not None:
        data = device.data_format.save(device.data)
    else:
        data = b"".join(bytes(buf[at : at + size]) for at, size in device.chunks)
    if len(data) != device.data_size:
        raise EncodeError(
            f"{device.idstr}: the device data encodes to {len(data)} bytes, "
            f"the stream has {device.data_size}"
        )
    pieces = _split(data, [size for _, size in device.chunks])
    qemu = registry.get(pci_vfio.QEMU_DESCRIPTION_NAME)
    out = []
    for payload, config in zip(device.payloads, device.configs, strict=True):
        section = bytearray()
        for tag, count in payload.groups:
            section += _BE64.pack(tag)
            if tag == END_OF_STATE:
                continue
            if tag == DEV_CONFIG_STATE and config is not None:
                section += qemu.save(config, held=payload.config_held)
            for i in range(count):
                piece = next(pieces)
                if i:
                    section += _BE64.pack(DEV_DATA_STATE)
                section += _BE64.pack(len(piece)) + piece
            section += _BE64.pack(END_OF_STATE)
        out.append(bytes(section))
    return out


def _split(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    at = 0
    for size in sizes:
        yield data[at : at + size]
        at += size


def verify(devices: tuple[VfioSections, ...], buf: Input) -> tuple[int, tuple[Mismatch, ...]]:
    """How many vfio sections were encoded again, and those that came out different."""
    checked = 0
    mismatches = []
    for device in devices:
        for section, again in zip(device.sections, encode(device, buf), strict=True):
            checked += 1
            if (mismatch := compare_section(section, buf, again)) is not None:
                mismatches.append(mismatch)
    return checked, tuple(mismatches)
