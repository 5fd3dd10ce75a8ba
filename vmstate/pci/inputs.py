"""Config spaces from where they are: files, sysfs, procfs, pipes and ``lspci -x`` text.

Everything is read with plain bounded reads: sysfs and procfs files, pipes and
process substitutions cannot be memory-mapped.  A sysfs device folder (or its
``config`` file) also gives the function's address and BAR sizes, as lspci takes
them from sysfs.  Without root the kernel shows only the 64-byte header; that is
decoded as lspci decodes it, with a note that the rest was not readable.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import attrs

from vmstate.device_regions import SysfsPciDevice
from vmstate.errors import DecodeError, InputError, LimitError
from vmstate.pci.model import PciAddress
from vmstate.pci.registers import CONFIG_SIZES, EXPRESS_SIZE, HEADER_SIZE
from vmstate.stream import MAGIC

#: the most bytes a text source may have: ``lspci -xxxx`` of 256 functions is ~4 MiB
MAX_TEXT = 16 << 20
#: how a file written by vmstate save (a QEMU migration stream) begins
SAVED_MAGIC = MAGIC.to_bytes(4, "big")
#: ROM and BAR indexes in sysfs ``resource`` (BAR0-5, then the expansion ROM)
_ROM_INDEX = 6

_DEVICE_LINE = re.compile(r"^(?:([0-9a-fA-F]{4,5}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7]) ")
_DATA_LINE = re.compile(r"^([0-9a-fA-F]{2,8}): (.*)$")
_HEX_BYTE = re.compile(r"[0-9a-fA-F]{2}")
_PROC_BUS = re.compile(r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2})$")
_PROC_SLOT = re.compile(r"^([0-9a-fA-F]{2})\.([0-7])$")


@attrs.frozen
class ConfigInput:
    """One function's config space as read, with what the source tells about it."""

    data: bytes
    origin: str  # for messages: the path, "stdin", or the path and the function in it
    address: PciAddress | None = None
    bar_sizes: dict[int, int] | None = None  # index (6: ROM) -> bytes, where the source has them
    irq: int | None = None  # the IRQ the kernel routed the pin to (sysfs), as lspci shows it
    note: str | None = None  # something the reader must know, e.g. that bytes were not readable


def read_bounded(source: str, limit: int) -> bytes:
    """All of *source* ("-" for stdin), with plain reads; LimitError past *limit* bytes."""
    if source == "-":
        return _read_fd(sys.stdin.buffer.fileno(), limit, "stdin")
    fd = os.open(source, os.O_RDONLY)
    try:
        return _read_fd(fd, limit, source)
    finally:
        os.close(fd)


def _read_fd(fd: int, limit: int, origin: str) -> bytes:
    out = bytearray()
    while len(out) <= limit:
        chunk = os.read(fd, min(1 << 16, limit + 1 - len(out)))
        if not chunk:
            return bytes(out)
        out += chunk
    raise LimitError(
        "input too large for a config space or an lspci dump",
        offset=limit,
        expected=f"at most {limit} bytes",
        found="more",
        path=(origin,),
    )


def from_path(
    source: str, saved: Callable[[bytes, str], ConfigInput] | None = None
) -> tuple[ConfigInput, ...]:
    """The config space(s) at *source*: a file, sysfs device folder or ``config`` file,
    a procfs ``/proc/bus/pci/BB/DD.F`` file, "-", ``/dev/stdin`` or a pipe.  Bytes that
    begin like a saved state file go to *saved*, which finds the config in them."""
    path = Path(source)
    if source != "-" and path.is_dir():
        return (from_sysfs(path),)
    if source != "-" and path.name == "config" and (path.parent / "resource").is_file():
        return (from_sysfs(path.parent),)
    data = read_bounded(source, MAX_TEXT)
    origin = "stdin" if source in ("-", "/dev/stdin") else source
    if saved is not None and data.startswith(SAVED_MAGIC):
        return (saved(data, origin),)
    address = _proc_address(path) if source != "-" else None
    return from_bytes(data, origin, address, _unreadable_note(source, data))


def from_bytes(
    data: bytes, origin: str, address: PciAddress | None = None, note: str | None = None
) -> tuple[ConfigInput, ...]:
    """Raw config bytes, or ``lspci -x``/``-xxx``/``-xxxx`` text of one or more functions."""
    text = _as_text(data)
    if text is not None:
        return parse_lspci_dump(text, origin)
    if b"\0" not in data and data.isascii() and len(data) not in CONFIG_SIZES:
        first = data.decode("ascii").strip().splitlines()[:1] or ["empty"]
        raise DecodeError(
            "neither config space bytes nor lspci -x text",
            offset=0,
            expected="64, 256 or 4096 bytes, or lines like '00:01.0 ...' and '00: 86 80 ...'",
            found=first[0][:60],
            path=(origin,),
        )
    if len(data) > EXPRESS_SIZE:
        raise DecodeError(
            "not a config space: too long, and not lspci -x text",
            offset=EXPRESS_SIZE,
            expected=f"at most {EXPRESS_SIZE} bytes of config space",
            found=f"{len(data)} bytes",
            path=(origin,),
        )
    return (ConfigInput(data, origin, address, note=note),)


def _as_text(data: bytes) -> str | None:
    """*data* as text if it is text with at least one ``OFFSET: xx xx ...`` line; config
    spaces have NUL bytes (reserved registers), text does not."""
    if b"\0" in data:
        return None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if any(_DATA_LINE.match(line) for line in text.splitlines()) else None


def parse_lspci_dump(text: str, origin: str) -> tuple[ConfigInput, ...]:
    """Functions in ``lspci -x`` text, read as ``lspci -F`` reads a dump: a device line
    (``[DDDD:]BB:DD.F ...``), its ``OFFSET: xx xx ...`` lines, a blank line between
    devices; other lines are ignored."""
    functions: list[tuple[PciAddress, bytearray, int]] = []
    inside = False  # a device line started a block that no blank line has ended
    for number, line in enumerate(text.splitlines(), 1):
        device = _DEVICE_LINE.match(line)
        data = _DATA_LINE.match(line)
        if device is not None:
            domain, bus, slot, fn = device.groups()
            address = PciAddress(int(domain or "0", 16), int(bus, 16), int(slot, 16), int(fn))
            functions.append((address, bytearray(EXPRESS_SIZE), 0))
            inside = True
        elif not line.strip():
            inside = False
        elif inside and data is not None:
            address, config, length = functions[-1]
            offset = int(data[1], 16)
            values = data[2].split()
            if (
                not all(_HEX_BYTE.fullmatch(v) for v in values)
                or offset + len(values) > EXPRESS_SIZE
            ):
                raise DecodeError(
                    "malformed lspci dump line",
                    offset=number,
                    expected="OFFSET: followed by hex bytes, all below 4096",
                    found=line[:60],
                    path=(origin, f"line {number}"),
                )
            config[offset : offset + len(values)] = bytes(int(v, 16) for v in values)
            functions[-1] = (address, config, max(length, offset + len(values)))
    if not functions:
        raise DecodeError(
            "no function in the lspci dump",
            offset=0,
            expected="a line like '00:01.0 ...' followed by 'OFFSET: xx xx ...' lines",
            found=text.splitlines()[0][:60] if text.strip() else "empty text",
            path=(origin,),
        )
    return tuple(
        _dumped(address, bytes(config[:length]), origin) for address, config, length in functions
    )


def _dumped(address: PciAddress, data: bytes, origin: str) -> ConfigInput:
    """A dumped function cut to the config size it covers (lspci -x: 64, -xxx: 256, -xxxx: 4096)."""
    size = max((s for s in CONFIG_SIZES if s <= len(data)), default=len(data))
    note = None
    if size != len(data):
        note = f"the dump has {len(data)} bytes: decoding the first {size}"
    return ConfigInput(data[:size], f"{origin}: {address}", address, note=note)


def from_sysfs(folder: Path) -> ConfigInput:
    """A sysfs PCI device folder: its config space (all of it as root, the header otherwise),
    its address and its BAR sizes, as lspci reads them."""
    name = Path(os.path.realpath(folder)).name
    address = PciAddress.parse(name)
    if address is None or not (folder / "config").is_file():
        raise InputError(
            "not a PCI device folder (no config, or not named like 0000:00:01.0)", str(folder)
        )
    data = read_bounded(str(folder / "config"), EXPRESS_SIZE)
    with SysfsPciDevice.open(name, Path(os.path.realpath(folder)).parent) as device:
        sizes = {r.index: r.size for r in device.regions() if r.index <= _ROM_INDEX and r.size}
    note = _unreadable_note(str(folder / "config"), data)
    return ConfigInput(data, str(folder), address, sizes, _sysfs_irq(folder), note)


def _sysfs_irq(folder: Path) -> int | None:
    """sysfs ``irq``: the kernel's number for the function's interrupt, which lspci shows
    instead of the config space's Interrupt Line (firmware's number, often another)."""
    try:
        text = read_bounded(str(folder / "irq"), 32).decode("ascii").strip()
    except (OSError, LimitError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _unreadable_note(source: str, data: bytes) -> str | None:
    """Why a sysfs or procfs config file gave fewer bytes than it has."""
    if source == "-" or len(data) != HEADER_SIZE:
        return None
    try:
        info = os.stat(source)
    except OSError:
        return None
    if stat.S_ISREG(info.st_mode) and info.st_size > len(data):
        return (
            f"only the first {len(data)} of {info.st_size} bytes were readable: the kernel "
            "shows the rest of config space to root only"
        )
    return None


def _proc_address(path: Path) -> PciAddress | None:
    """The address of a ``/proc/bus/pci/[DDDD:]BB/DD.F`` file."""
    if path.parent.parent != Path("/proc/bus/pci"):
        return None
    bus, slot = _PROC_BUS.match(path.parent.name), _PROC_SLOT.match(path.name)
    if bus is None or slot is None:
        return None
    domain = int(bus[1], 16) if bus[1] else 0
    return PciAddress(domain, int(bus[2], 16), int(slot[1], 16), int(slot[2]))
