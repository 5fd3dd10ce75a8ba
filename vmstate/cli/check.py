"""``vmstate check``: will the destination take the source's state?  Checked before launch."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from vmstate.findings import Finding


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Compare two description sets (--src/--dst), dry-run a saved stream "
        "against destination descriptions (--stream/--dst), or a saved device state against a "
        "device (--state/--device). Exit 0 when compatible, 1 when not."
    )
    p.add_argument(
        "--src",
        metavar="SET",
        help="source descriptions: -dump-vmstate JSON, vmdesc, stream, libvirt save image, "
        ".toml or a directory; with --stream, the source QEMU's -dump-vmstate (it tells which "
        "sections are devices the destination must have)",
    )
    p.add_argument("--dst", metavar="SET", help="destination descriptions (same forms as --src)")
    p.add_argument(
        "--stream",
        metavar="FILE",
        help="a saved migration stream or libvirt save image (virsh save, managedsave; raw or "
        "compressed) to dry-run against --dst: will it load, will it restore?",
    )
    p.add_argument(
        "--state",
        metavar="FILE",
        help="a saved device state (vmstate save) to check against --device",
    )
    p.add_argument(
        "--device", metavar="BDF|UUID", help="the target of --state; nothing is written to it"
    )
    p.add_argument(
        "--device-data",
        metavar="FORMAT",
        help="with --stream: check VFIO devices' device data against this description "
        "(e.g. mtty-migration-data)",
    )
    p.add_argument(
        "--bidirectional", action="store_true", help="also check migrating back from --dst to --src"
    )
    p.add_argument(
        "--waivers",
        metavar="FILE|NAME",
        action="append",
        default=[],
        help="renames and accepted differences (repeatable), besides the shipped QEMU ones: "
        "a file, or a shipped waiver file by name (qemu)",
    )
    p.add_argument(
        "--no-shipped-waivers",
        action="store_true",
        help="leave out the shipped waivers for QEMU's own devices (--waivers qemu)",
    )
    p.add_argument("--strict", action="store_true", help="warnings fail the check too (exit 1)")
    p.add_argument(
        "--json", action="store_true", help="one JSON object: compatible flag and every problem"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vmstate import registry
    from vmstate.compat import DUMP, compare
    from vmstate.errors import InputError, UsageError
    from vmstate.pci_host import normalize_name
    from vmstate.progress import TerminalProgress
    from vmstate.sources import load_description_set
    from vmstate.state_check import check_state
    from vmstate.stream_check import check_stream
    from vmstate.waivers import Waivers, shipped_waivers, waivers_named

    waivers = Waivers() if args.no_shipped_waivers else shipped_waivers()
    for argument in args.waivers:
        waivers = waivers + waivers_named(argument)
    if args.device_data and not args.stream:
        raise UsageError("--device-data goes with --stream")
    if args.state or args.device:
        if not (args.state and args.device) or args.src or args.dst or args.stream:
            raise UsageError("--state and --device go together, without --src, --dst or --stream")
        problems = check_state(args.state, normalize_name(args.device))
    elif args.stream:
        if not args.dst:
            raise UsageError("--stream needs --dst")
        src = load_description_set(args.src) if args.src else None
        if src is not None and src.kind != DUMP:
            raise InputError("with --stream, --src is the source QEMU's -dump-vmstate", args.src)
        data_format = registry.get(args.device_data) if args.device_data else None
        dst = load_description_set(args.dst)
        with TerminalProgress(f"reading {args.stream}") as progress:
            problems = check_stream(
                args.stream, dst, waivers, data_format, src=src, progress=progress
            )
    else:
        if not (args.src and args.dst):
            raise UsageError("give --src and --dst, --stream and --dst, or --state and --device")
        src, dst = load_description_set(args.src), load_description_set(args.dst)
        problems = [
            _direction(p, "src->dst") if args.bidirectional else p
            for p in compare(src, dst, waivers)
        ]
        if args.bidirectional:
            problems += [_direction(p, "dst->src") for p in compare(dst, src, waivers)]
    return report(problems, args.json, strict=args.strict)


def _direction(problem: Finding, direction: str) -> Finding:
    import attrs

    return attrs.evolve(problem, reason=f"{direction}: {problem.reason}")


def report(problems: list[Finding], as_json: bool, *, strict: bool = False) -> int:
    """Print *problems*; the exit status says whether the migration can go ahead (with
    *strict*, only when nothing at all was found)."""
    import json

    from vmstate.findings import ERROR

    compatible = not any(p.severity == ERROR for p in problems)
    if as_json:
        print(
            json.dumps(
                {"compatible": compatible, "problems": [p.to_json() for p in problems]}, indent=2
            )
        )
    else:
        for line in _lines(problems):
            print(line)
        errors = sum(p.severity == ERROR for p in problems)
        warnings = len(problems) - errors
        verdict = "compatible" if compatible else "NOT compatible"
        if compatible and strict and warnings:
            verdict = "compatible with warnings, refused by --strict"
        print(f"{verdict}: {_count(errors, 'error')}, {_count(warnings, 'warning')}")
    return 0 if compatible and not (strict and problems) else 1


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _lines(problems: list[Finding]) -> list[str]:
    """One line per finding, except that sections found for one and the same reason
    (the machine's timer, cpu, apic... that a dump does not list) share a line."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    lines: list[str | tuple[str, str, str]] = []
    for p in problems:
        if p.path:
            lines.append(str(p))
            continue
        key = (p.severity, p.rule, p.reason)
        if key not in grouped:
            grouped[key] = []
            lines.append(key)
        grouped[key].append(p.section)
    return [
        line
        if isinstance(line, str)
        else f"{line[0]}: {', '.join(grouped[line])}: {line[2]} [{line[1]}]"
        for line in lines
    ]
