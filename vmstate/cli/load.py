"""``vmstate load FILE NAME [-- COMMAND]``: restore a saved state, after checking all of it."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import subprocess
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from vmstate.device_load import LoadPlan


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Check the whole file against the device (identity, BAR kinds and sizes, "
        "capability layout, MSI-X size, read-only bits, device data framing and format), then "
        "load it as QEMU does: the device data (its driver checks it), the config while the "
        "device is stopped (decoding off, BARs, MSI, MSI-X, enables), then RUNNING. A rejected "
        "load writes nothing; a load that fails midway puts the config back. vfio-pci resets "
        "a PCI function when it is opened and restores its old config when it is closed, so "
        "a load into one lasts only while vmstate holds it open: give a COMMAND after --, "
        "which runs while the device is held, or the load is refused. A mediated device "
        "keeps what it is given."
    )
    p.add_argument("file", metavar="FILE", help="a file written by vmstate save, - or a pipe")
    p.add_argument("name", metavar="BDF|UUID")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check only: the device is read without being opened through VFIO (no reset)",
    )
    p.add_argument(
        "command",
        nargs="*",
        metavar="-- COMMAND",
        help="run COMMAND while the loaded device is held open; exit with its status",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vmstate.device_load import apply, plan_load
    from vmstate.errors import UsageError
    from vmstate.pci_host import is_mdev, normalize_name, open_for_reading, open_for_writing
    from vmstate.progress import reporter
    from vmstate.saved_file import read_file, snapshot

    name = normalize_name(args.name)
    if args.dry_run and args.command:
        raise UsageError("--dry-run writes nothing, so there is nothing to hold: drop COMMAND")
    if not args.dry_run and not args.command and not is_mdev(name):
        raise UsageError(
            f"{name} is a PCI function: vfio-pci restores its config when it is closed, so a "
            "load would be undone when vmstate exits; give a command to run while it is held "
            f"(vmstate load {args.file} {name} -- COMMAND), or --dry-run to check only"
        )
    if args.dry_run:
        with snapshot(args.file) as buf:
            saved = read_file(buf)
            device, how = open_for_reading(name)
            with device:
                plan = plan_load(device, saved)
        plan.raise_refusal()
        print(f"checked (dry run, nothing written): {args.file} -> {name}, read {how}{_what(plan)}")
        return 0
    with contextlib.ExitStack() as holding:
        with snapshot(args.file) as buf:
            saved = read_file(buf)  # parsed before the device is opened (and reset)
            device = holding.enter_context(open_for_writing(name))
            plan = plan_load(device, saved)
            apply(device, plan, reporter(f"{name} device data"))
        print(f"loaded: {args.file} -> {name}{_what(plan)}", flush=True)
        if not args.command:
            return 0
        print(f"vmstate: holding {name} open while {shlex.join(args.command)} runs", file=sys.stderr)
        status = subprocess.run(args.command, check=False).returncode
    return status if status >= 0 else 128 - status  # killed by a signal: as a shell says


def _what(plan: LoadPlan) -> str:
    state = plan.saved.config.state
    data = plan.saved.data
    more = f", {data.size} bytes of device data" if data is not None else ""
    return f" ({state['vendor_id']:04x}:{state['device_id']:04x}{more})"
