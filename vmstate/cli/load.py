"""``vmstate load FILE BDF``: restore a saved config state, after checking all of it."""

from __future__ import annotations

import argparse
from typing import Any

from vmstate import pci_device_state
from vmstate.analyze import open_stream
from vmstate.errors import UsageError
from vmstate.pci_host import normalize_bdf, open_for_writing


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "load",
        help="restore a saved config state into a device bound to vfio-pci",
        description="Check the whole saved state against the device (identity, BAR kinds and "
        "sizes, capability layout, MSI-X size, read-only bits), then program it: decoding off, "
        "BARs, MSI, MSI-X, enables. A rejected load writes nothing.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("bdf", metavar="BDF")
    p.add_argument("--dry-run", action="store_true", help="check only; write nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    bdf = normalize_bdf(args.bdf)
    if bdf is None:
        raise UsageError(f"{args.bdf!r} is not a PCI address like 0000:00:02.0")
    with open_stream(args.file) as buf, open_for_writing(bdf) as device:
        checked = pci_device_state.load(device, buf, dry_run=args.dry_run)
    what = f"{checked.state['vendor_id']:04x}:{checked.state['device_id']:04x}"
    verb = "checked (dry run, nothing written)" if args.dry_run else "loaded"
    print(f"{verb}: {args.file} -> {bdf} ({what})")
    return 0
