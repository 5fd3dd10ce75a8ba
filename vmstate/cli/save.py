"""``vmstate save NAME -o FILE``: a device's state into a file."""

from __future__ import annotations

import argparse
import sys


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Save a device's state. A PCI function is read from sysfs: opening it "
        "through VFIO would reset it first (vfio-pci resets a function when it is opened), so "
        "its config is saved as it is, with the MSI-X table where it can be read (root, "
        "memory decoding on, D0); only without root, where sysfs gives 64 bytes of config, "
        "is a function bound to vfio-pci opened through VFIO, and the output says it was "
        "reset. A mediated device is opened through VFIO, and gives its device data in the "
        "same file when it has VFIO migration."
    )
    p.add_argument("name", metavar="BDF|UUID", help="a PCI address or a mediated device's UUID")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="written atomically; - or /dev/stdout writes to standard output",
    )
    p.add_argument(
        "--qemu",
        action="store_true",
        help="also write QEMU's own VFIOPCIDevice state (PCIDevice + msix) of the device",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vmstate._files import writes_stdout
    from vmstate.device_save import save
    from vmstate.pci_host import driver_of, normalize_name, open_for_reading, title
    from vmstate.progress import reporter

    name = normalize_name(args.name)
    device, how = open_for_reading(name)
    with device:
        saved = save(
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
    for warning in saved.warnings:
        print(f"vmstate: warning: {name}: {warning}", file=sys.stderr)
    report = sys.stderr if writes_stdout(args.output) else sys.stdout
    print(
        f"saved {name} ({title(name)}) {how}: config state, {data}; "
        f"{saved.size} bytes to {args.output}",
        file=report,
    )
    return 0
