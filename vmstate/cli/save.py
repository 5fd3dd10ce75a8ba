"""``vmstate save NAME -o FILE``: a device's state into a file."""

from __future__ import annotations

import argparse
from typing import Any

from vmstate import vfio_state
from vmstate.pci_host import driver_of, normalize_name, open_device, title
from vmstate.progress import reporter


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "save",
        help="save a device's config state, and its device data when it can migrate",
        description="Save a device's state: through VFIO when it is bound to vfio-pci (or is a "
        "mediated device), else read-only from sysfs (config space and BAR sizes). A device "
        "with VFIO migration also gives its device data, in the same file.",
    )
    p.add_argument("name", metavar="BDF|UUID", help="a PCI address or a mediated device's UUID")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="written atomically")
    p.add_argument(
        "--qemu",
        action="store_true",
        help="also write QEMU's own VFIOPCIDevice state (PCIDevice + msix) of the device",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    name = normalize_name(args.name)
    device, how = open_device(name)
    with device:
        saved = vfio_state.save(
            device,
            args.output,
            driver=driver_of(name),
            qemu=args.qemu,
            progress=reporter(f"{name} device data"),
        )
    data = (
        f"device data {saved.data_size} bytes"
        if saved.data_size is not None
        else f"no device data ({saved.reason})"
    )
    print(
        f"saved {name} ({title(name)}) {how}: config state, {data}; {saved.size} bytes to {args.output}"
    )
    return 0
