"""The ``vmstate`` command line.

Each command lives in its own module under ``vmstate.cli`` and exposes
``register(subparsers)``.  Rejected input exits 1 with one line on stderr;
usage errors exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from vmstate.errors import UsageError, VMStateError

#: command modules, in the order ``vmstate --help`` lists them
COMMANDS: tuple[str, ...] = (
    "devices",
    "decode_config",
    "save",
    "show",
    "load",
    "analyze",
    "check",
    "lint",
    "describe",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmstate",
        description="Describe, serialise and check VM device state (QEMU VMState encoding).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"vmstate.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        if args.debug:
            traceback.print_exc()
        parser.exit(2, f"vmstate: usage error: {e}\n")
    except VMStateError as e:
        if args.debug:
            traceback.print_exc()
        print(f"vmstate: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (| head): nothing to say
        sys.stderr.close()
        return 1
    except OSError as e:
        if args.debug:
            traceback.print_exc()
        where = f"{e.filename}: " if e.filename else ""
        print(f"vmstate: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    return 0
