"""Structure-aware changes to the other inputs the project takes: PCI config spaces,
``lspci -x`` text, saved device files (QEMU's vfio framing), libvirt save images
and their compressed payloads.

As in :mod:`fuzz.generate`, each change is made where the format has structure (a
capability pointer, a chunk size, a header word, a line's offset), so that most
inputs get past the first check and reach the code behind it.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import random
import struct

from fuzz.generate import interesting_int, pick

try:
    from compression import zstd  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from backports import zstd  # type: ignore[import-not-found,no-redef,unused-ignore]


def mutate_bytes(rng: random.Random, data: bytes, lo: int = 0, hi: int | None = None) -> bytes:
    """A few byte-level changes inside ``data[lo:hi]``: set, flip, insert, delete, cut."""
    out = bytearray(data)
    hi = len(out) if hi is None else min(hi, len(out))
    for _ in range(rng.randint(1, 3)):
        if hi <= lo:
            break
        at = rng.randrange(lo, hi)
        op = rng.randrange(6)
        if op == 0:
            out[at] = pick(rng, [0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif op == 1:
            out[at] ^= 1 << rng.randrange(8)
        elif op == 2:
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 3:
            del out[at : at + rng.randint(1, 8)]
        elif op == 4 and at + 4 <= len(out):
            out[at : at + 4] = struct.pack("<I", interesting_int(rng) % 2**32)
        else:
            del out[at:]
        hi = min(hi, len(out))
    return bytes(out)


# -- PCI config spaces ----------------------------------------------------------------

#: where a config space has structure: command/status, header type, BARs, ROM,
#: capability pointer, bridge windows, interrupt pin
_HEADER_SPOTS = [0x04, 0x06, 0x07, 0x0E, 0x10, 0x14, 0x18, 0x1C, 0x20, 0x24, 0x30, 0x34, 0x38,
                 0x3D, 0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x24, 0x26]


def _capabilities(data: bytes) -> list[int]:
    """Offsets of the capability list's entries (at most 48, as a loop guard)."""
    found: list[int] = []
    if len(data) < 64 or not data[0x06] & 0x10:
        return found
    at = data[0x34] & 0xFC
    while 0x40 <= at < min(len(data), 256) - 1 and at not in found and len(found) < 48:
        found.append(at)
        at = data[at + 1] & 0xFC
    return found


def _extended(data: bytes) -> list[int]:
    found: list[int] = []
    at = 0x100
    while 0x100 <= at <= len(data) - 4 and at not in found and len(found) < 96:
        header = struct.unpack_from("<I", data, at)[0]
        if header in (0, 0xFFFFFFFF):
            break
        found.append(at)
        at = (header >> 20) & 0xFFC
    return found


def config_space(rng: random.Random, data: bytes) -> bytes:
    """A captured config space with its structure changed: capability chains (ids,
    pointers, loops), capability bodies, extended headers, BARs, header fields; cut to
    another config size now and then."""
    out = bytearray(data)
    caps, ext = _capabilities(data), _extended(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        if op == 0 and caps:  # a capability's id or next pointer
            at = pick(rng, caps) + rng.randrange(2)
            out[at] = pick(rng, [0, 1, 5, 0x10, 0x11, 0x09, 0x13, 0x14, 0xFF, at & 0xFC,
                                 pick(rng, caps), 0x40, 0x3C, rng.randrange(256)])
        elif op == 1 and caps:  # bytes of a capability body
            at = pick(rng, caps) + rng.randrange(2, 24)
            if at < len(out):
                out[at] = pick(rng, [0, 0xFF, 0x80, 0x7F, rng.randrange(256)])
        elif op == 2 and ext:  # an extended capability header
            at = pick(rng, ext)
            header = pick(rng, [rng.randrange(2**32), (at << 20) | 1, 0x00010001, 0xFFFF0000,
                                (0xFFC << 20) | rng.randrange(0x30)])
            out[at : at + 4] = struct.pack("<I", header)
        elif op == 3 and ext:  # an extended capability body
            at = pick(rng, ext) + rng.randrange(4, 64)
            if at < len(out):
                out[at] = rng.randrange(256)
        elif op == 4:  # a header field
            at = pick(rng, _HEADER_SPOTS)
            out[at] = pick(rng, [0, 1, 2, 0x7F, 0x80, 0x81, 0xFF, 0x10, 0x04, rng.randrange(256)])
        elif op == 5:  # a BAR
            at = pick(rng, [0x10, 0x14, 0x18, 0x1C, 0x20, 0x24, 0x30])
            out[at : at + 4] = struct.pack("<I", pick(rng, [0, 0xFFFFFFFF, 0xFFFFFFFC, 4, 0xC,
                                                            1, rng.randrange(2**32)]))
        elif op == 6 and len(out) > 0x100:  # the first extended header itself
            out[0x100:0x104] = struct.pack("<I", rng.randrange(2**32))
        else:
            out[rng.randrange(len(out))] = rng.randrange(256)
    if rng.random() < 0.1:  # another size: cut, grown with zeros, or no config size
        out = (out + bytes(4096))[: pick(rng, [64, 256, 4096, 63, 100, len(out) + 1])]
    return bytes(out)


def bar_sizes(rng: random.Random) -> dict[int, int] | None:
    """BAR sizes as a backend reports them (VFIO regions, a saved file's state)."""
    if rng.random() < 0.5:
        return None
    return {rng.randrange(8): pick(rng, [0, 1, 3, 16, 4096, 1 << 20, 1 << 32, 1 << 63,
                                         2**64 - 1, interesting_int(rng) % 2**64])
            for _ in range(rng.randint(0, 4))}


def lspci_text(rng: random.Random, spaces: list[bytes]) -> str:
    """``lspci -x``/``-xxx``/``-xxxx`` text of *spaces*, one function each, then broken
    where lines have structure: offsets, hex bytes, device lines, blank lines."""
    lines: list[str] = []
    for n, data in enumerate(spaces):
        size = pick(rng, [64, 256, 4096, len(data)])
        address = pick(rng, [f"00:{n:02x}.0", f"0000:00:{n:02x}.{rng.randrange(8)}",
                             "10000:ff:1f.7", f"{n:02x}:00.0"])
        lines.append(f"{address} Device {rng.randrange(2**16):04x}")
        lines += [f"{o:02x}: " + " ".join(f"{b:02x}" for b in data[o : o + 16])
                  for o in range(0, min(size, len(data)), 16)]
        lines.append("")
    for _ in range(rng.randint(0, 4)):
        if not lines:
            break
        i = rng.randrange(len(lines))
        op = rng.randrange(7)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])
        elif op == 2:
            lines[i] = pick(rng, ["ff0: 00", "1000: 00", "fff: 00 00", "zz: 00", "00: 0", "00:",
                                  "00: 00 0g", "0: 00", "00: " + "00 " * 300, "\t00: 00",
                                  "00:01.0", "00:1f.8 x", ""])
        elif op == 3:
            lines[i] = lines[i].replace(" ", pick(rng, ["  ", "\t", " 00 "]), 1)
        elif op == 4:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        elif op == 5:
            lines.insert(i, rng.randbytes(rng.randint(1, 20)).decode("latin-1"))
        else:
            lines[i] += pick(rng, [" 00", " ff ff", "\r", " x"])
    return pick(rng, ["\n", "\r\n"]).join(lines) + pick(rng, ["\n", ""])


# -- saved device files (QEMU's vfio framing) -------------------------------------------

_TAGS = [0xFFFFFFFFEF100001, 0xFFFFFFFFEF100002, 0xFFFFFFFFEF100003, 0xFFFFFFFFEF100004]


def vfio_framing(rng: random.Random, data: bytes) -> bytes:
    """A change to the vfio section's framing: a tag replaced, a chunk size changed."""
    out = bytearray(data)
    spots = [i for tag in _TAGS for i in _find_all(data, struct.pack(">Q", tag))]
    if not spots:
        return mutate_bytes(rng, data)
    at = pick(rng, spots)
    if rng.random() < 0.5:
        out[at : at + 8] = struct.pack(">Q", pick(rng, [*_TAGS, 0, 2**64 - 1]))
    elif at + 16 <= len(out):  # the size after a DEV_DATA_STATE
        out[at + 8 : at + 16] = struct.pack(">Q", pick(rng, [
            0, 1, 2**63, 2**64 - 1, (64 << 20) + 1, (struct.unpack_from(">Q", out, at + 8)[0] + 1) % 2**64,
            max(0, struct.unpack_from(">Q", out, at + 8)[0] - 1), interesting_int(rng) % 2**64]))
    return bytes(out)


def _find_all(data: bytes, needle: bytes) -> list[int]:
    found, at = [], data.find(needle)
    while at >= 0 and len(found) < 64:
        found.append(at)
        at = data.find(needle, at + 1)
    return found


# -- libvirt save images --------------------------------------------------------------

FORMATS = ("raw", "gzip", "bzip2", "xz", "lzop", "zstd", "sparse")


def domain_xml(rng: random.Random) -> tuple[bytes, bool]:
    """A domain XML as libvirt saves it, or one of the ways one goes wrong; and
    whether it is the former."""
    machine = pick(rng, ["pc-i440fx-7.2", "pc-q35-10.0", "", "x" * 300])
    xml = (f"<domain type='kvm'><name>vm{rng.randrange(10)}</name>"
           f"<uuid>{rng.randbytes(16).hex()}</uuid><os><type arch='x86_64' machine='{machine}'>"
           f"hvm</type></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>"
           f"</devices></domain>")
    choice = rng.randrange(14)
    if choice == 0:
        xml = "<!DOCTYPE d [<!ENTITY a 'aaaa'>]>" + xml
    elif choice == 1:
        xml = xml[: rng.randrange(len(xml))]
    elif choice == 2:
        xml = "<notdomain/>"
    elif choice == 3:
        xml = "<?xml version='1.0' encoding='" + pick(rng, ["utf-16", "latin-1", "x"]) + "'?>" + xml
    elif choice == 4:
        xml = "<a>" * 2000 + "</a>" * 2000
    elif choice == 5:
        return xml.encode()[:40] + b"\xff\xfe" + xml.encode()[40:], False
    elif choice == 6:
        xml = xml.replace("<name>", "<name>&#0;&amp;&#xD800;", 1)
    return xml.encode(), choice > 6


def compress(fmt: str, data: bytes) -> bytes:
    """*data* as libvirt's compressor for *fmt* writes it (lzop excepted: the data stays
    as it is, which lzop refuses)."""
    if fmt == "gzip":
        return gzip.compress(data, 1, mtime=0)
    if fmt == "bzip2":
        return bz2.compress(data, 1)
    if fmt == "xz":
        return lzma.compress(data, preset=0)
    if fmt == "zstd":
        return zstd.compress(data)  # type: ignore[no-any-return]
    return data


def save_image(rng: random.Random, payload: bytes, fmt: str) -> tuple[bytes, bool]:
    """A libvirt save image (libvirt's qemu_saveimage.c layout) around *payload*,
    compressed as *fmt*, with one thing in it changed now and then; and whether it is
    a well-formed image of *payload* (then it must read back as *payload*)."""
    xml, intact = domain_xml(rng)
    data_len = pick(rng, [len(xml) + 1, len(xml) + 1 + rng.randrange(64), 65536, len(xml)])
    cookie = pick(rng, [0, 0, len(xml) + 1, data_len, data_len + 1])
    version = pick(rng, [2, 2, 2, 1, 3, 0, 0x02000000])
    code = FORMATS.index(fmt) if rng.random() < 0.95 else rng.randrange(9)
    order = "<" if rng.random() < 0.9 else ">"
    magic = pick(rng, [b"LibvirtQemudSave"] * 8 + [b"LibvirtQemudPart"])
    header = magic + struct.pack(order + "5I", version, data_len, rng.randrange(2), code, cookie)
    header += bytes(56)
    area = (xml + bytes(max(0, data_len - len(xml))))[:data_len]
    body = compress(fmt, payload)
    intact &= (magic.endswith(b"Save") and version == 2 and data_len > len(xml)
               and cookie <= data_len and code == FORMATS.index(fmt)
               and fmt not in ("lzop", "sparse"))
    if rng.random() < 0.3:
        body, intact = mutate_bytes(rng, body), False
    elif rng.random() < 0.05:  # concatenated streams: read one after the other
        body += compress(fmt, payload[: rng.randrange(len(payload) + 1)])
        intact = False
    image = header + area + body
    if rng.random() < 0.15:
        image, intact = mutate_bytes(rng, image, 0, 92 + data_len), False
    return image, intact
