"""``vmstate devices``: this host's PCI devices, their drivers, IOMMU groups and VFIO status."""

from __future__ import annotations

import argparse


def register(p: argparse.ArgumentParser) -> None:
    p.description = "List this host's PCI devices (read from sysfs; names from pci.ids when installed)."
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="one JSON list")
    group.add_argument("--bdf-only", action="store_true", help="addresses only, one per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    import attrs

    from vmstate.pci_host import host_devices

    devices = list(host_devices())
    if args.json:
        print(json.dumps([attrs.asdict(d) | {"vfio": d.vfio_status} for d in devices], indent=2))
    elif args.bdf_only:
        for d in devices:
            print(d.bdf)
    else:
        print(f"{'BDF':12}  {'ID':9}  {'CLASS':5}  {'DRIVER':12}  {'GROUP':5}  {'VFIO':5}  NAME")
        for d in devices:
            group = "-" if d.iommu_group is None else str(d.iommu_group)
            print(
                f"{d.bdf:12}  {d.vendor_id:04x}:{d.device_id:04x}  {d.class_code >> 8:04x}   "
                f"{d.driver or '-':12}  {group:5}  {d.vfio_status:5}  {d.name}"
            )
    return 0
