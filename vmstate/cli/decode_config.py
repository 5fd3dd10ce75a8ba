"""``vmstate decode-config SOURCE``: a config space decoded as ``lspci -vvv`` shows it, or as data."""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import Any

    from vmstate.pci.inputs import ConfigInput
    from vmstate.pci.model import ConfigSpace
    from vmstate.stream import Input


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Decode PCI config space as `lspci -vvv` prints it (or as data with --json). "
        "SOURCE is this host's device by address (BDF); a file of raw config bytes (64, 256 "
        "or 4096); a sysfs device folder or its config file; /proc/bus/pci/BB/DD.F; - or "
        "/dev/stdin or a pipe; `lspci -x`/`-xxx`/`-xxxx` text (every function in it, or the "
        "one --slot names); or a file written by vmstate save.  Without root the kernel "
        "shows only the 64-byte header: that is decoded, with a note."
    )
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("--json", action="store_true", help="print the decoded config as JSON")
    p.add_argument(
        "-s",
        "--slot",
        metavar="BDF",
        help="of the functions in an lspci dump, decode only this one ([DDDD:]BB:DD.F)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from vmstate.errors import InputError, UsageError
    from vmstate.pci.model import PciAddress
    from vmstate.pci.render import render_text

    wanted = None
    if args.slot is not None:
        wanted = PciAddress.parse(args.slot)
        if wanted is None:
            raise UsageError(f"--slot {args.slot!r}: not a PCI address like 00:01.0")
    inputs = _inputs(args.source)
    if wanted is not None:
        inputs = tuple(i for i in inputs if i.address == wanted)
        if not inputs:
            raise InputError(f"no function {wanted} in it", args.source)
    spaces = [(i, _decode(i)) for i in inputs]
    for source, _ in spaces:
        if source.note is not None:
            print(f"vmstate: note: {source.origin}: {source.note}", file=sys.stderr)
    if args.json:
        out = [_json(source, space) for source, space in spaces]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    else:
        texts = [render_text(space, source.address, irq=source.irq) for source, space in spaces]
        print("\n".join(texts), end="")
    return 0


def _decode(source: ConfigInput) -> ConfigSpace:
    from vmstate.errors import DecodeError
    from vmstate.pci.decode import decode_config

    try:
        return decode_config(source.data, source.bar_sizes)
    except DecodeError as e:
        raise e.within(source.origin) from None


def _inputs(source: str) -> tuple[ConfigInput, ...]:
    from vmstate.inputs import open_stream
    from vmstate.pci.inputs import SAVED_MAGIC, from_path
    from vmstate.pci_host import normalize_bdf

    bdf = normalize_bdf(source)
    path = Path(source)
    if bdf is not None and not path.exists():
        return (_host_function(bdf),)
    if source != "-":
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "no such file, and no PCI address", source)
        if stat.S_ISREG(os.stat(source).st_mode) and _head(source) == SAVED_MAGIC:
            with open_stream(path) as opened:  # a saved file can be large: mapped, not read
                return (_saved(opened.data, source),)
    return from_path(source, _saved)


def _head(source: str) -> bytes:
    with open(source, "rb") as f:
        return f.read(4)


def _host_function(bdf: str) -> ConfigInput:
    """This host's function as sysfs shows it; through VFIO, which resets it, only where
    sysfs cannot give the whole config space (see pci_host.open_for_reading)."""
    from vmstate import pci_vfio
    from vmstate.device_regions import VfioDevice
    from vmstate.pci.inputs import ConfigInput, from_sysfs
    from vmstate.pci.model import PciAddress
    from vmstate.pci_host import SYSFS_PCI, open_for_reading

    address = PciAddress.parse(bdf)
    device, _ = open_for_reading(bdf)
    with device:
        if not isinstance(device, VfioDevice):
            return from_sysfs(SYSFS_PCI / bdf)
        return ConfigInput(pci_vfio.read_config(device), bdf, address, pci_vfio.bar_sizes(device))


def _saved(buf: Input, origin: str) -> ConfigInput:
    from vmstate.pci.inputs import ConfigInput
    from vmstate.saved_file import read_file

    state = read_file(buf).config.state
    config = state["config"] + state.get("extended_config", b"")
    sizes = {i: bar["size"] for i, bar in enumerate(state["bars"]) if bar["size"]}
    if state.get("rom", {}).get("size"):
        sizes[6] = state["rom"]["size"]
    return ConfigInput(bytes(config), origin, None, sizes)


def _json(source: ConfigInput, space: ConfigSpace) -> dict[str, Any]:
    from vmstate.pci.ids import pci_ids

    ids = pci_ids()
    h, c = space.header, space.header.class_code
    subsystem = None
    if h.endpoint is not None and h.endpoint.subsystem_vendor_id not in (0, 0xFFFF):
        e = h.endpoint
        subsystem = ids.subsystem_name(
            h.vendor_id, h.device_id, e.subsystem_vendor_id, e.subsystem_id
        )
    out: dict[str, Any] = {
        "address": str(source.address) if source.address is not None else None,
        "irq": source.irq,
        "names": {
            "vendor": ids.vendors.get(h.vendor_id),
            "device": ids.devices.get((h.vendor_id, h.device_id)),
            "subsystem": subsystem,
            "class": ids.class_name(c.base, c.sub),
            "prog_if": ids.prog_if_name(c.base, c.sub, c.prog_if),
        },
        **space.to_json(),
    }
    if source.note is not None:
        out["note"] = source.note
    return out
