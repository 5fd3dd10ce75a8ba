"""``vmstate load FILE NAME``: restore a saved state, after checking all of it."""

from __future__ import annotations

import argparse
from typing import Any

from vmstate import vfio_state
from vmstate.inputs import open_stream
from vmstate.pci_host import normalize_name, open_for_writing
from vmstate.progress import reporter


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "load",
        help="restore a saved state into a device bound to vfio-pci (or a mediated device)",
        description="Check the whole file against the device (identity, BAR kinds and sizes, "
        "capability layout, MSI-X size, read-only bits, device data framing and format), then "
        "write the device data (its driver checks it) and program the config: decoding off, "
        "BARs, MSI, MSI-X, enables. A rejected load writes nothing. Note: vfio-pci restores a "
        "PCI function's config when the last user closes it, so for those a load that is to "
        "last is done by the program that keeps the device open (the library's "
        "vfio_state.load); mediated devices keep what they are given.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("name", metavar="BDF|UUID")
    p.add_argument("--dry-run", action="store_true", help="check only; write nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    name = normalize_name(args.name)
    with open_stream(args.file) as opened, open_for_writing(name) as device:
        saved = vfio_state.load(
            device, opened.data, dry_run=args.dry_run, progress=reporter(f"{name} device data")
        )
    config = saved.config.state or {}
    what = f"{config.get('vendor_id', 0):04x}:{config.get('device_id', 0):04x}"
    data = f", {saved.payload.data_size} bytes of device data" if saved.payload else ""
    verb = "checked (dry run, nothing written)" if args.dry_run else "loaded"
    print(f"{verb}: {args.file} -> {name} ({what}{data})")
    return 0
