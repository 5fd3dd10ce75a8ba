"""A PCI device's config state: read it from a device, check it against another,
and restore it in a safe order.

The layout is the ``vfio-pci-config`` description (descriptions/vfio-pci-config.toml);
this module only fills it from a device and applies it to one, through the
type-independent :class:`~vmstate.device_regions.Device` protocol.  A load
validates the whole input first (stream framing, versions, identity and layout
as "equal" fields against the destination's own state, QEMU's read-only byte
rule on the raw config) and writes nothing unless all of it passes.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Mapping
from typing import Any

import attrs

from vmstate import registry
from vmstate._lowlevel import vfio
from vmstate.description import Description
from vmstate.device_regions import Device, VfioDevice
from vmstate.errors import DecodeError, DeviceError, IncompatibleError, UsageError
from vmstate.pci.compat import check_compatible
from vmstate.pci.decode import decode_config
from vmstate.pci.masks import build_masks
from vmstate.pci.model import Bar, ConfigSpace
from vmstate.pci.problems import Problem
from vmstate.pci.registers import EXT_DSN
from vmstate.stream import (
    DeviceState,
    Input,
    RawResolver,
    Section,
    Stream,
    find_vmdesc,
    parse,
    resolver_from,
    write,
)

DESCRIPTION_NAME = "vfio-pci-config"
CONFIG = vfio.VFIO_PCI_CONFIG_REGION_INDEX
ROM = vfio.VFIO_PCI_ROM_REGION_INDEX

KIND_NONE, KIND_IO, KIND_MEM32, KIND_MEM64, KIND_UPPER = range(5)

_COMMAND = 0x04
_BAR0 = 0x10
_INTERRUPT_LINE = 0x3C
COMMAND_IO, COMMAND_MEMORY, COMMAND_MASTER = 0x1, 0x2, 0x4
#: what turns decoding and DMA off while BARs and vectors are programmed
COMMAND_DECODE = COMMAND_IO | COMMAND_MEMORY | COMMAND_MASTER
MSI_ENABLE = 0x0001
MSI_64BIT = 0x0080
MSI_MASKABLE = 0x0100
MSIX_ENABLE = 0x8000
MSIX_FUNCTION_MASK = 0x4000
MSIX_ENTRY = struct.Struct("<IIII")
#: (offset of the config field in the section, from the fields before it)
_CONFIG_FIELD_OFFSET = 2


def description() -> Description:
    return registry.get(DESCRIPTION_NAME)


def bar_sizes(device: Device) -> dict[int, int]:
    """Region sizes of BARs 0-5 and the ROM, as the device's backend reports them."""
    return {r.index: r.size for r in device.regions() if r.index <= ROM and r.size}


def read_config(device: Device) -> bytes:
    """The device's config space: 256 or 4096 bytes.

    A mediated device may expose a shorter config region (mtty's is 0xff bytes);
    it is padded with zeros to 256, as reads past its end would give."""
    info = device.region(CONFIG)
    config = device.read(CONFIG, 0, info.size)
    if 64 < len(config) < 256:
        config += bytes(256 - len(config))
    if len(config) not in (256, 4096):
        raise DeviceError(
            f"{device.name}: config space reads {len(config)} bytes, not 256 or 4096 "
            "(sysfs gives unprivileged users only 64: run as root)"
        )
    return config


def read_state(device: Device) -> dict[str, Any]:
    """The device's config state as ``vfio-pci-config`` plain data."""
    config = read_config(device)
    sizes = bar_sizes(device)
    space = decode_config(config, sizes)
    h = space.header
    endpoint = h.endpoint
    state: dict[str, Any] = {
        "config_size": len(config),
        "config": config[:256],
        "vendor_id": h.vendor_id,
        "device_id": h.device_id,
        "subsystem_vendor_id": endpoint.subsystem_vendor_id if endpoint else 0,
        "subsystem_id": endpoint.subsystem_id if endpoint else 0,
        "revision_id": h.revision_id,
        "class_code": h.class_code.base << 16 | h.class_code.sub << 8 | h.class_code.prog_if,
        "header_type": config[0x0E],
        "command": h.command,
        "interrupt_line": h.interrupt_line,
        "interrupt_pin": h.interrupt_pin,
        "bars": [_bar_state(space, i, sizes) for i in range(6)],
        "rom": _rom_state(space, sizes),
        "msi_offset": _offset(space, "msi"),
        "msix_offset": _offset(space, "msix"),
        "msix_saved": False,
    }
    if len(config) == 4096:
        state["extended_config"] = config[256:]
    if space.msi is not None:
        state["vfio-pci-config/msi-vectors"] = _msi_state(config, state["msi_offset"])
    msix = space.msix
    if msix is not None and all(
        _readable(device, i, h.command) for i in (msix.table_bir, msix.pba_bir)
    ):
        state["msix_saved"] = True
        state["vfio-pci-config/msix-table"] = _msix_state(device, config, state["msix_offset"])
    return state


def _offset(space: ConfigSpace, which: str) -> int:
    cap_id = 0x05 if which == "msi" else 0x11
    cap = space.capability(cap_id)
    return cap.offset if cap is not None else 0


def _bar_state(space: ConfigSpace, index: int, sizes: Mapping[int, int]) -> dict[str, int]:
    bar = space.bar(index)
    if bar is None:
        below = space.bar(index - 1) if index else None
        kind = KIND_UPPER if below is not None and below.is_64bit else KIND_NONE
        return {"kind": kind, "prefetchable": 0, "size": 0, "address": 0}
    return {
        "kind": _bar_kind(bar),
        "prefetchable": int(bar.prefetchable),
        "size": sizes.get(index, 0),
        "address": bar.address,
    }


def _bar_kind(bar: Bar) -> int:
    if bar.kind == "io":
        return KIND_IO
    return KIND_MEM64 if bar.is_64bit else KIND_MEM32


def _rom_state(space: ConfigSpace, sizes: Mapping[int, int]) -> dict[str, int]:
    rom = space.expansion_rom
    if rom is None:
        return {"kind": KIND_NONE, "prefetchable": 0, "size": 0, "address": 0}
    return {
        "kind": KIND_MEM32,
        "prefetchable": 0,
        "size": sizes.get(ROM, 0),
        "address": rom.address | int(rom.enabled),
    }


def _msi_layout(control: int, base: int) -> dict[str, int]:
    """Config offsets of the MSI registers for this control word (PCI spec 6.8.1)."""
    wide = bool(control & MSI_64BIT)
    data = base + (12 if wide else 8)
    layout = {"address": base + 4, "data": data}
    if wide:
        layout["address_hi"] = base + 8
    if control & MSI_MASKABLE:
        layout["mask"] = data + 4
        layout["pending"] = data + 8
    return layout


def _msi_state(config: bytes, base: int) -> dict[str, int]:
    (control,) = struct.unpack_from("<H", config, base + 2)
    out = {"control": control}
    for name, at in _msi_layout(control, base).items():
        fmt = "<H" if name == "data" else "<I"
        (out[name],) = struct.unpack_from(fmt, config, at)
    return out


def _readable(device: Device, index: int, command: int) -> bool:
    """Whether MSI-X structures in region *index* can be read as the device holds them.

    vfio-pci hides the MSI-X table from read()/write() (reads give all ones); it
    can be reached only through a mapping, which the kernel allows when it sets
    MSIX_MAPPABLE (interrupt remapping is there), and only while memory decoding
    is on: else the access faults (SIGBUS)."""
    try:
        info = device.region(index)
    except (DeviceError, UsageError, KeyError):
        return False
    if isinstance(device, VfioDevice):
        return info.msix_mappable and info.mappable and bool(command & COMMAND_MEMORY)
    return info.readable


def _bar_io(device: Device, index: int, offset: int, data: bytes | int) -> bytes:
    """Read *data* bytes (an int) or write *data* at *offset* of BAR *index*, in 32-bit
    accesses through a mapping for VFIO devices (see :func:`_readable`)."""
    if not isinstance(device, VfioDevice):
        if isinstance(data, int):
            return device.read(index, offset, data)
        device.write(index, offset, data)
        return data
    size = data if isinstance(data, int) else len(data)
    start = offset - offset % mmap.PAGESIZE
    length = -(-(offset + size - start) // mmap.PAGESIZE) * mmap.PAGESIZE
    first = (offset - start) // 4
    with (
        device.mmap(index, start, length) as mapped,
        memoryview(mapped) as raw,
        raw.cast("I") as words,
    ):
        if isinstance(data, int):
            return struct.pack(f"<{size // 4}I", *words[first : first + size // 4])
        for i, (value,) in enumerate(struct.iter_unpack("<I", data)):
            words[first + i] = value  # one 32-bit store each, as MSI-X registers want
        return data


def _msix_state(device: Device, config: bytes, base: int) -> dict[str, Any]:
    control, table, pba = struct.unpack_from("<HII", config, base + 2)
    size = (control & 0x7FF) + 1
    table_bir, table_offset = table & 0x7, table & ~0x7
    pba_bir, pba_offset = pba & 0x7, pba & ~0x7
    raw = _bar_io(device, table_bir, table_offset, size * MSIX_ENTRY.size)
    entries = [
        dict(zip(("address", "address_hi", "data", "vector_control"), e, strict=True))
        for e in MSIX_ENTRY.iter_unpack(raw)
    ]
    pba_size = (size + 63) // 64 * 8
    return {
        "control": control,
        "table_size": size,
        "table_bir": table_bir,
        "table_offset": table_offset,
        "pba_bir": pba_bir,
        "pba_offset": pba_offset,
        "table": entries,
        "pba_size": pba_size,
        "pba": _bar_io(device, pba_bir, pba_offset, pba_size),
    }


# -- QEMU's own layout ---------------------------------------------------------------

QEMU_DESCRIPTION_NAME = "VFIOPCIDevice"
#: the PCIDevice version QEMU 7.2 stores in its version_id field
PCI_DEVICE_VERSION = 2


def qemu_express(config_region_size: int) -> bool:
    """Whether QEMU's vfio-pci saves 4096 config bytes for a device (PCIDevice's
    ``config[1]``): always, unless the device's config region is exactly 256 bytes
    (hw/vfio/pci.c clears QEMU_PCI_CAP_EXPRESS only then).  So it follows the region's
    size, not a PCI Express capability: mtty's 0xff-byte region gets 4096 bytes."""
    return config_region_size != 256


def qemu_held(config: bytes, express: bool) -> dict[str, Any]:
    """What QEMU's VFIOPCIDevice layout depends on: *express* (see :func:`qemu_express`)
    and how many MSI-X vectors, which the first 256 bytes of config space say."""
    space = decode_config(config[:256])
    vectors = space.msix.table_size if space.msix is not None else 0
    return {
        "msix_present": space.msix is not None,
        "pdev[0]": {"express": express},
        "pdev[1]": {"msix_bytes": vectors * MSIX_ENTRY.size + (vectors + 7) // 8},
    }


def qemu_state(state: Mapping[str, Any], express: bool) -> dict[str, Any]:
    """Our config state as QEMU's VFIOPCIDevice state (PCIDevice + msix).

    With *express*, the config is padded with zeros to 4096 bytes, as QEMU's own copy
    of a shorter config space is.  INTx levels are QEMU's emulation state, not the
    device's: they are saved low, and so is an MSI-X table that could not be read
    (see :func:`_readable`)."""
    config = state["config"] + state.get("extended_config", b"")
    if not express and len(config) != 256:
        raise UsageError(
            "QEMU saves 256 config bytes only of a device whose config region "
            f"is 256 bytes, not {len(config)}"
        )
    held = qemu_held(config, express)
    out: dict[str, Any] = {
        "pdev[0]": {
            "version_id": PCI_DEVICE_VERSION,
            "config[1]" if express else "config[0]": config.ljust(4096 if express else 256, b"\0"),
            "irq_state": bytes(16),
        }
    }
    if held["msix_present"]:
        msix = state.get("vfio-pci-config/msix-table")
        size = held["pdev[1]"]["msix_bytes"]
        if msix is None:
            out["pdev[1]"] = {"msix": bytes(size)}
        else:
            table = b"".join(
                MSIX_ENTRY.pack(e["address"], e["address_hi"], e["data"], e["vector_control"])
                for e in msix["table"]
            )
            out["pdev[1]"] = {"msix": (table + msix["pba"])[:size]}
    return out


# -- files ------------------------------------------------------------------------


def save(device: Device, *, qemu: bool = False, machine: str = "vmstate") -> bytes:
    """A stream file holding *device*'s config state, as ``vmstate save`` writes it;
    with *qemu*, QEMU's own VFIOPCIDevice state of the device too."""
    state = read_state(device)
    sections = [DeviceState(f"{device.name}/{DESCRIPTION_NAME}", description(), state)]
    if qemu:
        qemu_desc = registry.get(QEMU_DESCRIPTION_NAME)
        idstr = f"{device.name}/{QEMU_DESCRIPTION_NAME}"
        config = state["config"] + state.get("extended_config", b"")
        express = qemu_express(device.region(CONFIG).size)
        held = qemu_held(config, express)
        sections.append(DeviceState(idstr, qemu_desc, qemu_state(state, express), held=held))
    return write(sections, machine)


def find_section(buf: Input, raw: RawResolver | None = None) -> Section:
    """The config-state section of a saved file.

    Sections are delimited with the file's vmdesc (which describes every section
    exactly), else with the shipped descriptions; *raw* walks non-VMState ones."""
    return config_section(parse_file(buf, raw))


def parse_file(buf: Input, raw: RawResolver | None = None) -> Stream:
    """A saved file parsed with its vmdesc, else with the shipped descriptions."""
    if find_vmdesc(buf) is not None:
        return parse(buf, raw=raw)
    return parse(buf, resolver_from({n: registry.get(n) for n in registry.names()}), raw=raw)


def config_section(parsed: Stream) -> Section:
    for section in parsed.device_sections():
        assert section.description is not None
        if section.description.name == DESCRIPTION_NAME:
            return section
    raise DecodeError(
        "no PCI config state in this file",
        offset=0,
        expected=f"a section named <device>/{DESCRIPTION_NAME}",
        found=", ".join(s.idstr for s in parsed.sections) or "no sections",
        path=("stream",),
    )


# -- load -------------------------------------------------------------------------


@attrs.frozen
class Checked:
    """A saved state that passed every check against one destination."""

    state: dict[str, Any]
    held: dict[str, Any]


def check(device: Device, buf: Input, raw: RawResolver | None = None) -> Checked:
    """Validate the saved state in *buf* against *device*; raise the first problem.

    Reads the destination, writes nothing."""
    checked, problems = _examine(device, buf, raw)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise attrs.evolve(first, message=first.message + more)
    assert checked is not None
    return checked


def problems_with(device: Device, buf: Input, raw: RawResolver | None = None) -> list[DecodeError]:
    """Every reason the saved state in *buf* would not load into *device*."""
    return _examine(device, buf, raw)[1]


def _examine(
    device: Device, buf: Input, raw: RawResolver | None
) -> tuple[Checked | None, list[DecodeError]]:
    section = find_section(buf, raw)
    held = read_state(device)
    desc = description()
    problems: list[DecodeError] = []
    try:
        state, _ = desc.load_from(buf, section.start, section.version_id, held=held, checks=False)
    except DecodeError as e:
        return None, [e]
    try:
        desc.load_from(buf, section.start, section.version_id, held=held)
    except DecodeError as e:
        problems.append(e)  # the first identity or layout field that differs, by name
    src_config = state["config"] + state.get("extended_config", b"")
    dst_config = held["config"] + held.get("extended_config", b"")
    found = check_compatible(src_config, dst_config, build_masks(dst_config, bar_sizes(device)))
    base = section.start + _CONFIG_FIELD_OFFSET
    serial = _serial_number_bytes(dst_config)
    problems += [
        _config_problem(p, src_config, dst_config, base) for p in found if p.offset not in serial
    ]
    if held["msix_saved"] and not state["msix_saved"]:
        problems.append(
            IncompatibleError(
                "the saved state has no MSI-X table (it was saved read-only from sysfs)",
                offset=section.start,
                expected="an MSI-X table",
                found="none",
                path=(DESCRIPTION_NAME, "msix_saved"),
            )
        )
    return Checked(state, held), problems


def _config_problem(problem: Problem, src: bytes, dst: bytes, base: int) -> IncompatibleError:
    """A config-space problem as a load error: QEMU's byte rule names bytes, the
    layout checks name what differs ("capability at 0xc8: source none, destination 0x1")."""
    at = problem.offset
    if problem.code == "config-byte":
        expected, found = f"{dst[at]:#04x}", f"{src[at]:#04x}"
    else:
        _, _, sides = problem.message.partition(": source ")
        found, _, expected = sides.partition(", destination ")
    return IncompatibleError(
        problem.message,
        offset=base + at,
        expected=expected,
        found=found,
        path=(DESCRIPTION_NAME, *_config_path(at)),
    )


def _serial_number_bytes(config: bytes) -> range:
    """Where the Device Serial Number's serial lies, if the device has one.

    QEMU's masks check it like any capability body, but it names one device,
    not its type: two devices of one type never share it, so a load from one to
    the other must not be refused for it."""
    cap = decode_config(config).extended_capability(EXT_DSN)
    return range(cap.offset + 4, cap.offset + 12) if cap is not None else range(0)


def _config_path(offset: int) -> tuple[str, int]:
    """Where config byte *offset* lives in the state: ``config`` or ``extended_config``."""
    return ("config", offset) if offset < 256 else ("extended_config", offset - 256)


def apply(device: Device, checked: Checked) -> None:
    """Program *device* from a checked state, in an order that never lets it decode at
    half-programmed addresses or interrupt half-programmed: decoding and bus mastering
    off, BARs, the command without bus mastering (memory decoding on where the MSI-X
    table must be written: it lives in a BAR), MSI with its enable clear, MSI-X masked
    and disabled with its table, then the saved MSI/MSI-X enables and command."""
    state = checked.state
    command = _read16(device, _COMMAND)
    _write16(device, _COMMAND, command & ~COMMAND_DECODE)  # bitwise not: the 2019 bug was `!`
    for index, bar in enumerate(state["bars"]):
        if bar["kind"] in (KIND_MEM32, KIND_IO):
            _write32(device, _BAR0 + 4 * index, bar["address"] & 0xFFFFFFFF)
        elif bar["kind"] == KIND_MEM64:
            _write32(device, _BAR0 + 4 * index, bar["address"] & 0xFFFFFFFF)
            _write32(device, _BAR0 + 4 * index + 4, bar["address"] >> 32)
    rom = state.get("rom")
    if rom is not None and rom["kind"] != KIND_NONE and checked.held["rom"]["kind"] != KIND_NONE:
        _write32(device, _rom_register(state), rom["address"])
    _write8(device, _INTERRUPT_LINE, state["interrupt_line"])
    msi = state.get("vfio-pci-config/msi-vectors")
    msix = state.get("vfio-pci-config/msix-table")
    staged = state["command"] & ~COMMAND_MASTER | (COMMAND_MEMORY if msix is not None else 0)
    _write16(device, _COMMAND, staged)
    if msi is not None:
        base = state["msi_offset"]
        _write16(device, base + 2, msi["control"] & ~MSI_ENABLE)
        for name, at in _msi_layout(msi["control"], base).items():
            if name == "pending":
                continue  # read-only
            (_write16 if name == "data" else _write32)(device, at, msi[name])
    if msix is not None:
        base = state["msix_offset"]
        _write16(device, base + 2, (msix["control"] & ~MSIX_ENABLE) | MSIX_FUNCTION_MASK)
        table = b"".join(
            MSIX_ENTRY.pack(e["address"], e["address_hi"], e["data"], e["vector_control"])
            for e in msix["table"]
        )
        _bar_io(device, msix["table_bir"], msix["table_offset"], table)
    if msi is not None:
        _write16(device, state["msi_offset"] + 2, msi["control"])
    if msix is not None:
        _write16(device, state["msix_offset"] + 2, msix["control"])
    _write16(device, _COMMAND, state["command"])


def load(device: Device, buf: Input, *, dry_run: bool = False) -> Checked:
    """Check, then (unless *dry_run*) apply: a rejected load writes nothing."""
    checked = check(device, buf)
    if not dry_run:
        apply(device, checked)
    return checked


def _rom_register(state: Mapping[str, Any]) -> int:
    return 0x38 if state["header_type"] & 0x7F == 1 else 0x30


def _read16(device: Device, at: int) -> int:
    (value,) = struct.unpack("<H", device.read(CONFIG, at, 2))
    return value


def _write8(device: Device, at: int, value: int) -> None:
    device.write(CONFIG, at, struct.pack("<B", value))


def _write16(device: Device, at: int, value: int) -> None:
    device.write(CONFIG, at, struct.pack("<H", value))


def _write32(device: Device, at: int, value: int) -> None:
    device.write(CONFIG, at, struct.pack("<I", value))
