"""libvirt's save-image header (``virsh save``, ``managedsave``): what wraps the stream.

libvirt (src/qemu/qemu_saveimage.[ch]) writes a 92-byte header, then the
domain XML and a cookie, NUL-terminated and zero-padded to ``data_len``, then
QEMU's migration stream, raw or piped through ``gzip``/``bzip2``/``xz``/
``lzop``/``zstd`` as ``save_image_format`` in ``qemu.conf`` asks.  The header's
integers are in the saving host's byte order: like libvirt, a version above
the highest known one is read again byte-swapped.

Every length here comes from the file, so each is checked against an explicit
limit before anything is read or allocated.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import attrs

from vmstate.errors import DecodeError, IncompatibleError, LimitError, TruncatedError

MAGIC = b"LibvirtQemudSave"
#: the magic while the save is still being written; libvirt rewrites it when done
PARTIAL = b"LibvirtQemudPart"
#: magic, version, data_len, was_running, format, cookieOffset, 14 unused words
HEADER_SIZE = 92
VERSION = 2
#: libvirt's qemuSaveFormat enum, in order ("sparse" is mapped-ram, libvirt 10.10+)
FORMATS = ("raw", "gzip", "bzip2", "xz", "lzop", "zstd", "sparse")
#: domain XML, cookie and padding together (libvirt pads 64 KiB; virsh caps XML at 10 MiB)
MAX_DATA = 16 << 20



@attrs.frozen
class Domain:
    """The domain XML's essentials: what a restore will start."""

    name: str
    uuid: str
    #: the canonical machine type (libvirt saves e.g. ``pc-i440fx-7.2``, never ``pc``)
    machine: str
    arch: str
    emulator: str


@attrs.frozen
class SaveImage:
    """A libvirt save image's header; the migration stream starts at ``stream_offset``."""

    version: int
    was_running: bool
    #: one of :data:`FORMATS`: how the stream after the header is compressed
    compression: str
    #: "little" or "big": the saving host's byte order
    byte_order: str
    domain: Domain
    xml: str = attrs.field(repr=False)
    stream_offset: int

    def summary(self) -> str:
        d = self.domain
        state = "running" if self.was_running else "paused"
        return (
            f"libvirt save image v{self.version}, {self.compression}, domain {d.name or '?'} "
            f"({state} when saved), machine {d.machine or '?'}, emulator {d.emulator or '?'}"
        )


def is_save_image(head: bytes) -> bool:
    """Whether *head* (the first 16 bytes or more) starts a libvirt save image, even a partial one."""
    return head[:16] in (MAGIC, PARTIAL)


def read_header(read: Callable[[int], bytes]) -> SaveImage:
    """The header, XML and cookie, through *read* (n -> up to n bytes, short only at the end).

    Reads exactly up to where the stream starts, so a pipe is left there."""
    head = _exactly(read, HEADER_SIZE, 0, "libvirt save image header")
    if head[:16] == PARTIAL:
        raise DecodeError(
            "libvirt save image is incomplete (the save did not finish)",
            offset=0,
            expected=MAGIC.decode(),
            found=PARTIAL.decode(),
            path=("libvirt", "magic"),
        )
    if head[:16] != MAGIC:
        raise DecodeError(
            "not a libvirt save image",
            offset=0,
            expected=MAGIC.decode(),
            found=head[:16].decode("ascii", "replace"),
            path=("libvirt", "magic"),
        )
    byte_order = "little"
    version, data_len, was_running, compression, cookie_offset = struct.unpack_from(
        "<5I", head, 16
    )
    if version > VERSION:
        byte_order = "big"
        version, data_len, was_running, compression, cookie_offset = struct.unpack_from(
            ">5I", head, 16
        )
    if not 1 <= version <= VERSION:
        raise IncompatibleError(
            "unsupported libvirt save image version",
            offset=16,
            expected=f"1..{VERSION}",
            found=str(version),
            path=("libvirt", "version"),
        )
    if compression >= len(FORMATS):
        raise DecodeError(
            "unknown libvirt save image format",
            offset=28,
            expected=f"0..{len(FORMATS) - 1} ({', '.join(FORMATS)})",
            found=str(compression),
            path=("libvirt", "format"),
        )
    if FORMATS[compression] == "sparse":
        raise IncompatibleError(
            "sparse (mapped-ram) save images are not supported: their RAM is not a stream",
            offset=28,
            expected="raw or a compressed format",
            found="sparse",
            path=("libvirt", "format"),
        )
    if data_len == 0:
        raise DecodeError(
            "libvirt save image has no domain XML",
            offset=20,
            expected="> 0",
            found="0",
            path=("libvirt", "data_len"),
        )
    if data_len > MAX_DATA:
        raise LimitError(
            "libvirt save image XML area too large",
            offset=20,
            expected=f"<= {MAX_DATA} bytes",
            found=str(data_len),
            path=("libvirt", "data_len"),
        )
    if cookie_offset > data_len:
        raise DecodeError(
            "libvirt cookie offset beyond the XML area",
            offset=32,
            expected=f"<= {data_len}",
            found=str(cookie_offset),
            path=("libvirt", "cookieOffset"),
        )
    data = _exactly(read, data_len, HEADER_SIZE, "domain XML")
    xml_end = data.find(b"\0", 0, cookie_offset or data_len)
    raw_xml = data[: xml_end if xml_end >= 0 else (cookie_offset or data_len)]
    xml = _text(raw_xml)
    return SaveImage(
        version=version,
        was_running=bool(was_running),
        # libvirt decompresses only version 2 images
        compression=FORMATS[compression] if version == VERSION else "raw",
        byte_order=byte_order,
        domain=_domain(xml),
        xml=xml,
        stream_offset=HEADER_SIZE + data_len,
    )


def _exactly(read: Callable[[int], bytes], n: int, offset: int, what: str) -> bytes:
    got = read(n)
    if len(got) != n:
        raise TruncatedError(
            f"libvirt save image ends inside its {what}",
            offset=offset + len(got),
            expected=f"{n} bytes",
            found=f"{len(got)} bytes",
            path=("libvirt", "header" if offset == 0 else "xml"),
        )
    return got


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DecodeError(
            "domain XML is not UTF-8",
            offset=HEADER_SIZE + e.start,
            expected="UTF-8",
            found=f"byte {raw[e.start]:#x}",
            path=("libvirt", "xml"),
        ) from None


def _domain(xml: str) -> Domain:
    """Parse *xml* without a DTD: libvirt never writes one, and entities are how XML bombs."""
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise DecodeError(
            "domain XML has a DTD",
            offset=HEADER_SIZE + xml.find("<!"),
            expected="a <domain> element, no DTD",
            found="<!DOCTYPE or <!ENTITY",
            path=("libvirt", "xml"),
        )
    import xml.etree.ElementTree as ET  # only images have XML: bare streams skip the import

    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise DecodeError(
            f"domain XML is malformed: {e}",
            offset=HEADER_SIZE,
            expected="well-formed XML",
            found=f"an error at line {e.position[0]}, column {e.position[1]}",
            path=("libvirt", "xml"),
        ) from None
    if root.tag != "domain":
        raise DecodeError(
            "domain XML is not a <domain>",
            offset=HEADER_SIZE,
            expected="<domain>",
            found=f"<{root.tag[:40]}>",
            path=("libvirt", "xml"),
        )
    os_type = root.find("os/type")
    return Domain(
        name=root.findtext("name", "").strip(),
        uuid=root.findtext("uuid", "").strip(),
        machine=os_type.get("machine", "") if os_type is not None else "",
        arch=os_type.get("arch", "") if os_type is not None else "",
        emulator=root.findtext("devices/emulator", "").strip(),
    )
