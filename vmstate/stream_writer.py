"""Writing QEMU migration streams as QEMU does (migration/savevm.c): header,
configuration, FULL sections with footers, EOF and the vmdesc JSON that lets any
tool, QEMU's analyzer included, decode them (reading them: :mod:`vmstate.stream`)."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, BinaryIO

import attrs

from vmstate.description import Description
from vmstate.errors import EncodeError
from vmstate.stream import (
    CONFIGURATION,
    EOF,
    FOOTER,
    MAGIC,
    SECTION_FULL,
    VERSION,
    VMDESCRIPTION,
)
from vmstate.stream_config import CONFIGURATION_DESCRIPTION

_U8 = struct.Struct(">B")
_BE32 = struct.Struct(">I")


@attrs.frozen
class DeviceSection:
    """One device section to write: its id string, instance, description and state."""

    idstr: str
    description: Description
    state: Mapping[str, Any]
    instance_id: int = 0
    #: values that size the state but are not on the wire (see Description.save)
    held: Mapping[str, Any] | None = None


class StreamWriter:
    """Writes a stream as QEMU does (header, configuration, FULL sections with
    footers, EOF, vmdesc) to a binary file, one section at a time, so a section
    of gigabytes of device data never has to be in memory."""

    def __init__(self, out: BinaryIO, machine: str | None = None) -> None:
        self.out = out
        self.vmdesc: list[dict[str, Any]] = []
        out.write(_BE32.pack(MAGIC) + _BE32.pack(VERSION))
        if machine is not None:
            name = machine.encode()
            out.write(bytes([CONFIGURATION]))
            out.write(CONFIGURATION_DESCRIPTION.save({"len": len(name), "name": name}))

    def _header(self, idstr: str, instance_id: int, version: int) -> int:
        name = idstr.encode()
        if not 0 < len(name) < 256:
            raise EncodeError(f"section name {idstr!r} must be 1..255 bytes")
        section_id = len(self.vmdesc)
        self.out.write(bytes([SECTION_FULL]) + _BE32.pack(section_id) + _U8.pack(len(name)))
        self.out.write(name + _BE32.pack(instance_id) + _BE32.pack(version))
        return section_id

    def device(self, dev: DeviceSection) -> None:
        """A section encoded from a description and state."""
        version = dev.description.version_id
        try:
            payload, span = dev.description.save_traced(dev.state, held=dev.held)
        except EncodeError as e:
            raise e.within(dev.idstr) from None
        section_id = self._header(dev.idstr, dev.instance_id, version)
        self.out.write(payload + bytes([FOOTER]) + _BE32.pack(section_id))
        entry = dev.description.vmdesc_entry(span)
        self.vmdesc.append({"name": dev.idstr, "instance_id": dev.instance_id, **entry})

    def raw(
        self, idstr: str, version: int, payload: Callable[[BinaryIO], int], instance_id: int = 0
    ) -> int:
        """A section that is no VMState (QEMU's "old style", like vfio's own): *payload*
        writes its bytes and returns how many.  vmdesc records it as one buffer, as QEMU does."""
        section_id = self._header(idstr, instance_id, version)
        size = payload(self.out)
        self.out.write(bytes([FOOTER]) + _BE32.pack(section_id))
        data = {"name": "data", "type": "buffer", "size": size}
        self.vmdesc.append(
            {"name": idstr, "instance_id": instance_id, "size": size, "fields": [data]}
        )
        return size

    def finish(self) -> None:
        body = json.dumps({"page_size": 4096, "devices": self.vmdesc}, separators=(",", ":"))
        self.out.write(bytes([EOF, VMDESCRIPTION]) + _BE32.pack(len(body)) + body.encode())


def write(devices: Sequence[DeviceSection], machine: str | None = None) -> bytes:
    """A whole stream of *devices*, in memory (see :class:`StreamWriter`)."""
    out = io.BytesIO()
    writer = StreamWriter(out, machine)
    for dev in devices:
        writer.device(dev)
    writer.finish()
    return out.getvalue()


__all__ = ["DeviceSection", "StreamWriter", "write"]
