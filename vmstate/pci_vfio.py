"""A PCI function's config state, read from and written to a device through its regions.

The layout is the ``vfio-pci-config`` description (descriptions/vfio-pci-config.toml).
This module fills it from a device (:func:`read_state`), checks a saved one against a
destination (:func:`check_config`: identity and layout as "equal" fields against the
destination's own state, QEMU's read-only byte rule on the raw config) and programs
it in a safe order (:func:`program`), every write journaled by a
:class:`ConfigWriter` so that a failed load puts back what was there.  It also gives
the same state in QEMU's own VFIOPCIDevice layout (:func:`qemu_state`).  Devices are
reached through the type-independent :class:`~vmstate.device_regions.Device` protocol.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from vmstate import registry
from vmstate._lowlevel import vfio
from vmstate.description import Description
from vmstate.errors import DecodeError, DeviceError, IncompatibleError, VMStateError
from vmstate.pci.capabilities import PowerManagement
from vmstate.pci.compat import check_compatible
from vmstate.pci.decode import decode_config
from vmstate.pci.masks import build_masks
from vmstate.pci.model import Bar, ConfigSpace
from vmstate.pci.problems import ConfigProblem, Difference
from vmstate.pci.registers import CAP_PM, EXT_DSN

if TYPE_CHECKING:  # the bindings load only where a device is opened
    from vmstate.device_regions import Device

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
        _msix_reachable(device, space, i) for i in (msix.table_bir, msix.pba_bir)
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


def _msix_reachable(device: Device, space: ConfigSpace, index: int) -> bool:
    """Whether MSI-X structures in region *index* can be read as the device holds them.

    vfio-pci hides the MSI-X table from read()/write() (reads give all ones); it
    can be reached only through a mapping, which the kernel allows when it sets
    MSIX_MAPPABLE (interrupt remapping is there), and only while memory decoding
    is on: else the access faults (SIGBUS).  Through sysfs the same holds, and a
    function in a low-power state (vfio-pci puts idle ones in D3hot) answers no
    memory reads at all.  In-memory devices are read as they are."""
    try:
        info = device.region(index)
    except DeviceError:
        return False
    if not callable(getattr(device, "mmap", None)):
        return info.readable
    decoding = bool(space.header.command & COMMAND_MEMORY)
    return info.msix_mappable and info.mappable and decoding and _powered(space)


def _powered(space: ConfigSpace) -> bool:
    """Whether the function is in D0 (or has no power management)."""
    pm = space.capability(CAP_PM)
    return pm is None or not isinstance(pm.body, PowerManagement) or pm.body.power_state == 0


def _bar_io(device: Device, index: int, offset: int, data: bytes | int) -> bytes:
    """Read *data* bytes (an int) or write *data* at *offset* of BAR *index*, in 32-bit
    accesses through a mapping where the device has them (see :func:`_msix_reachable`)."""
    mapper = getattr(device, "mmap", None)
    if not callable(mapper):
        if isinstance(data, int):
            return device.read(index, offset, data)
        device.write(index, offset, data)
        return data
    size = data if isinstance(data, int) else len(data)
    start = offset - offset % mmap.PAGESIZE
    length = -(-(offset + size - start) // mmap.PAGESIZE) * mmap.PAGESIZE
    first = (offset - start) // 4
    with mapper(index, start, length) as mapped, memoryview(mapped) as raw, raw.cast("I") as words:
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
    (see :func:`_msix_reachable`)."""
    config = state["config"] + state.get("extended_config", b"")
    if not express and len(config) != 256:
        raise DeviceError(
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


# -- a saved config state against a destination ----------------------------------------


def check_config(
    saved: Mapping[str, Any],
    data: bytes,
    version: int,
    base: int,
    held: Mapping[str, Any],
    sizes: Mapping[int, int],
) -> list[DecodeError]:
    """Every reason the saved config state would not load into a destination whose
    own state is *held* and whose BAR sizes are *sizes*; empty when it would.

    *saved* is the state decoded from the section's payload *data*, which starts at
    file offset *base*: the "equal" fields are checked by decoding *data* again
    against *held*, so each error names its field and file offset as a load would."""
    src_config = saved["config"] + saved.get("extended_config", b"")
    dst_config = held["config"] + held.get("extended_config", b"")
    found = check_compatible(src_config, dst_config, build_masks(dst_config, sizes))
    serial = _serial_number_bytes(dst_config)
    at = base + _CONFIG_FIELD_OFFSET
    problems = [_config_problem(p, at) for p in found if p.offset not in serial]
    try:
        description().load(data, version, held=held)
    except DecodeError as e:  # the first identity or layout field that differs, by name
        if not problems:  # else it restates one of them (device_id is config bytes 2-3)
            problems.append(attrs.evolve(e, offset=e.offset + base))
    msix_control = _msix_control(saved)
    if msix_control & MSIX_ENABLE and not saved["msix_saved"]:
        problems.append(
            IncompatibleError(
                "MSI-X was enabled but its table was not saved (it could not be read)",
                offset=base,
                expected="the MSI-X table of an enabled MSI-X",
                found="none",
                path=(DESCRIPTION_NAME, "msix_saved"),
            )
        )
    return problems


def msix_enabled(state: Mapping[str, Any]) -> bool:
    """Whether MSI-X was enabled when *state* was saved."""
    return bool(_msix_control(state) & MSIX_ENABLE)


def _msix_control(state: Mapping[str, Any]) -> int:
    """The saved MSI-X message control word (0 when there is no MSI-X)."""
    base = state["msix_offset"]
    if not base:
        return 0
    config = state["config"] + state.get("extended_config", b"")
    return int(struct.unpack_from("<H", config, base + 2)[0])


def _config_problem(problem: ConfigProblem, base: int) -> IncompatibleError:
    """A config-space problem as a load error at file offset *base* + its offset."""
    if isinstance(problem, Difference):
        expected, found = problem.destination, problem.source
    else:  # one side's own decoding problem (its message says which side)
        expected, found = "a config space that decodes cleanly", problem.code
    return IncompatibleError(
        problem.message,
        offset=base + problem.offset,
        expected=expected,
        found=found,
        path=(DESCRIPTION_NAME, *_config_path(problem)),
    )


def _serial_number_bytes(config: bytes) -> range:
    """Where the Device Serial Number's serial lies, if the device has one.

    QEMU's masks check it like any capability body, but it names one device,
    not its type: two devices of one type never share it, so a load from one to
    the other must not be refused for it."""
    cap = decode_config(config).extended_capability(EXT_DSN)
    return range(cap.offset + 4, cap.offset + 12) if cap is not None else range(0)


def _config_path(problem: ConfigProblem) -> tuple[str] | tuple[str, int]:
    """Where *problem* lives in the state: the ``config_size`` field for the sizes, else
    its byte in ``config`` or ``extended_config``."""
    if problem.code == "size":
        return ("config_size",)
    offset = problem.offset
    return ("config", offset) if offset < 256 else ("extended_config", offset - 256)


# -- programming a device --------------------------------------------------------------


class ConfigWriter:
    """Writes to a device's config space and BARs, remembering what each write replaced,
    so that :meth:`rollback` can put it all back, newest first."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self._undo: list[tuple[int, int, bytes]] = []

    @property
    def written(self) -> bool:
        return bool(self._undo)

    def config(self, at: int, value: int, width: int) -> None:
        """Write *value* (little endian, *width* bytes) at config offset *at*."""
        old = self.device.read(CONFIG, at, width)
        self._undo.append((CONFIG, at, old))
        self.device.write(CONFIG, at, value.to_bytes(width, "little"))

    def bar(self, index: int, offset: int, data: bytes) -> None:
        """Write *data* at *offset* of BAR *index* in 32-bit accesses (the MSI-X table)."""
        old = _bar_io(self.device, index, offset, len(data))
        self._undo.append((index, offset, old))
        _bar_io(self.device, index, offset, data)

    def rollback(self) -> str:
        """Undo every write, newest first (the reverse of a safe order is a safe order);
        what was done, for an error message."""
        if not self._undo:
            return "nothing had been written to its config"
        try:
            while self._undo:
                index, at, old = self._undo[-1]
                if index == CONFIG:
                    self.device.write(CONFIG, at, old)
                else:
                    _bar_io(self.device, index, at, old)
                self._undo.pop()
        except VMStateError as exc:
            return f"restoring its config failed too, {len(self._undo)} writes not undone: {exc}"
        return "its config was restored as it was before the load"


def program(writer: ConfigWriter, state: Mapping[str, Any], held: Mapping[str, Any]) -> None:
    """Program a checked config *state* into the device whose own state is *held*, in an
    order that never lets it decode at half-programmed addresses or interrupt
    half-programmed: decoding and bus mastering off, BARs, the command without bus
    mastering (memory decoding on where the MSI-X table must be written: it lives in
    a BAR), MSI with its enable clear, MSI-X masked and disabled with its table, then
    the saved MSI/MSI-X controls and command."""
    command = int(struct.unpack("<H", writer.device.read(CONFIG, _COMMAND, 2))[0])
    writer.config(_COMMAND, command & ~COMMAND_DECODE, 2)  # bitwise not: the 2019 bug was `!`
    for index, bar in enumerate(state["bars"]):
        if bar["kind"] in (KIND_MEM32, KIND_IO):
            writer.config(_BAR0 + 4 * index, bar["address"] & 0xFFFFFFFF, 4)
        elif bar["kind"] == KIND_MEM64:
            writer.config(_BAR0 + 4 * index, bar["address"] & 0xFFFFFFFF, 4)
            writer.config(_BAR0 + 4 * index + 4, bar["address"] >> 32, 4)
    rom = state.get("rom")
    if rom is not None and rom["kind"] != KIND_NONE and held["rom"]["kind"] != KIND_NONE:
        writer.config(_rom_register(state), rom["address"], 4)
    writer.config(_INTERRUPT_LINE, state["interrupt_line"], 1)
    msi = state.get("vfio-pci-config/msi-vectors")
    msix = state.get("vfio-pci-config/msix-table")
    staged = state["command"] & ~COMMAND_MASTER | (COMMAND_MEMORY if msix is not None else 0)
    writer.config(_COMMAND, staged, 2)
    if msi is not None:
        base = state["msi_offset"]
        writer.config(base + 2, msi["control"] & ~MSI_ENABLE, 2)
        for name, at in _msi_layout(msi["control"], base).items():
            if name != "pending":  # read-only
                writer.config(at, msi[name], 2 if name == "data" else 4)
    if msix is not None:
        writer.config(
            state["msix_offset"] + 2, (msix["control"] & ~MSIX_ENABLE) | MSIX_FUNCTION_MASK, 2
        )
        table = b"".join(
            MSIX_ENTRY.pack(e["address"], e["address_hi"], e["data"], e["vector_control"])
            for e in msix["table"]
        )
        writer.bar(msix["table_bir"], msix["table_offset"], table)
    if msi is not None:
        writer.config(state["msi_offset"] + 2, msi["control"], 2)
    if state["msix_offset"]:  # without its table (MSI-X was off), still its enables
        writer.config(state["msix_offset"] + 2, _msix_control(state), 2)
    writer.config(_COMMAND, state["command"], 2)


def _rom_register(state: Mapping[str, Any]) -> int:
    return 0x38 if state["header_type"] & 0x7F == 1 else 0x30
