"""``vmstate save BDF -o FILE``: a device's config state into a file."""

from __future__ import annotations

import argparse
from typing import Any

from vmstate import pci_device_state
from vmstate._files import write_atomic
from vmstate.errors import UsageError
from vmstate.pci_host import host_device, normalize_bdf, open_device


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "save",
        help="save a PCI device's config state to a file",
        description="Save a device's config state: through VFIO when it is bound to vfio-pci, "
        "else read-only from sysfs (config space and BAR sizes; no MSI-X table).",
    )
    p.add_argument("bdf", metavar="BDF")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="written atomically")
    p.add_argument(
        "--qemu",
        action="store_true",
        help="also write QEMU's own VFIOPCIDevice state (PCIDevice + msix) of the device",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    bdf = normalize_bdf(args.bdf)
    if bdf is None:
        raise UsageError(f"{args.bdf!r} is not a PCI address like 0000:00:02.0")
    device, how = open_device(bdf)
    with device:
        data = pci_device_state.save(device, qemu=args.qemu)
    write_atomic(args.output, data)
    print(f"saved {bdf} ({host_device(bdf).name}) {how}: {len(data)} bytes to {args.output}")
    return 0
