"""The ``vmstate`` command line.

Each command lives in its own module under ``vmstate.cli`` with
``register(parser)``, which adds its arguments, and ``run(args)``, which imports
what it uses of the library and does the work.  This module knows the commands'
names and one-line help without importing them: ``vmstate --help`` and an
argument error import nothing of the library, a command imports its own module
only.

Exit status, the same for every command:

- 0: done (for ``check``: compatible; for ``diff``: no differences);
- 1: what the arguments name cannot be read or is rejected: a missing or
  unreadable file, malformed contents, a device that is absent or not usable
  (and ``check`` found an incompatibility, ``diff`` a difference);
- 2: the command line itself is wrong, whatever the files hold: an unknown
  command or option, a missing argument, options that do not go together, a
  value that is malformed (not a PCI address, not a known description name);
- 70: a bug (an exception no input should cause), one line;
- 130: interrupted (^C), one line; files being written are left as they were.

Every failure is one line on standard error; ``--debug`` (before or after the
command) shows the traceback too.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

#: typing.TYPE_CHECKING without importing typing: ``vmstate --help`` needs none of it
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn

#: command -> (its module under vmstate.cli, one-line help), in the order ``--help`` lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "devices": ("devices", "list PCI devices with driver, IOMMU group and VFIO status"),
    "decode-config": ("decode_config", "decode a PCI config space as lspci -vvv shows it"),
    "save": ("save", "save a device's config state, and its device data when it can migrate"),
    "show": ("show", "show a saved state file as a decoded tree"),
    "load": ("load", "restore a saved state into a device bound to vfio-pci (or a mediated device)"),
    "analyze": ("analyze", "decode a QEMU migration stream"),
    "encode": ("encode", "write a migration stream from analyze --format json (edited or not)"),
    "diff": ("diff", "field-by-field differences of two streams, saved states or description sets"),
    "check": ("check", "check migration compatibility before launch"),
    "lint": ("lint", "list every problem of description files"),
    "describe": ("describe", "show a description as a tree"),
}

EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_BUG = 70
EXIT_INTERRUPTED = 130
#: allocations between two passes of the cyclic collector in the program (Python: 700)
GC_THRESHOLD = 70_000


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, looked up only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("vmstate")
        except PackageNotFoundError:
            text = "(not installed)"
        print(f"vmstate {text}")
        parser.exit(0)


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, its width found without ``shutil`` (which argparse imports
    for ``get_terminal_size``, and with it bz2 and lzma: 4.5 ms of ``vmstate --help``)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_columns() - 2)


def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` finds it: ``$COLUMNS``, then
    standard output's terminal, then 80."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


def _command_of(argv: Sequence[str]) -> str | None:
    """The command word: the first argument that is no option (the top level's options
    take no values)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of *command* (a known one): the others are left out, as each costs
    an ArgumentParser; with no command, every command stands as its name and help
    (``vmstate --help``).  Only *command*'s module is imported, to add its arguments."""
    parser = argparse.ArgumentParser(
        prog="vmstate",
        formatter_class=_HelpFormatter,
        description="Describe, serialise and check VM device state (QEMU VMState encoding).",
        epilog="Exit status: 0 done, 1 input rejected or unreadable (check: not compatible; "
        "diff: different), 2 usage error, 130 interrupted.",
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        if command is not None and name != command:
            continue
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)
        if name == command:
            p.add_argument(
                "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
            )
            _module(module).register(p)
    return parser


def _module(name: str) -> Any:
    import importlib

    return importlib.import_module(f"vmstate.cli.{name}")


def _unknown_command(parser: argparse.ArgumentParser, word: str) -> NoReturn:
    import difflib

    close = difflib.get_close_matches(word, COMMANDS, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (commands: {', '.join(COMMANDS)})"
    parser.print_usage(sys.stderr)
    parser.exit(EXIT_USAGE, f"vmstate: error: unknown command {word!r}{hint}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command *argv* names (default: ``sys.argv[1:]``); its exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    ours = arguments[: arguments.index("--")] if "--" in arguments else arguments
    debug = "--debug" in ours
    try:
        command = _command_of(ours)
        parser = build_parser(command if command in COMMANDS else None)
        if command is not None and command not in COMMANDS:
            _unknown_command(parser, command)
        args = parser.parse_args(arguments)
        return int(args.func(args) or 0)
    except SystemExit as e:  # argparse: --help, --version, an argument error
        return e.code if isinstance(e.code, int) else EXIT_REJECTED if e.code else 0
    except KeyboardInterrupt:
        if debug:
            _traceback()
        print("vmstate: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()  # the reader went away (| head): nothing more to say, not even at exit
        return EXIT_REJECTED
    except Exception as e:  # every failure is one line; --debug shows where
        if debug:
            _traceback()
        status, text = failure(e)
        print(f"vmstate: {text}", file=sys.stderr)
        return status


def program() -> NoReturn:
    """The ``vmstate`` program: :func:`main`, its output flushed (output that cannot be
    written is exit 1 with its line, as any error), then the process ends without
    tearing the interpreter down.  Freeing every object of a decoded stream at exit
    took 24 ms of a 250 ms analysis; nothing of vmstate runs at exit (files are complete
    and renamed, devices released, before main returns).  The cyclic collector runs a
    hundredth as often as Python's default: a command's objects are freed by reference
    counting, and its passes over the objects of imports and of a decoded stream took
    5-8 ms of an analysis."""
    gc.set_threshold(GC_THRESHOLD)
    status = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (| head): nothing more to say
        status = status or EXIT_REJECTED
    except OSError as e:  # output lost (a full disk): said, as main says errors
        print(f"vmstate: cannot write the output: {e.strerror or e}", file=sys.stderr)
        status = status or EXIT_REJECTED
    except ValueError:  # standard output closed: nothing to flush
        pass
    os._exit(status)  # standard error is line-buffered: every line said is out


def _traceback() -> None:
    """The traceback of the exception being handled (``--debug``; only then imported)."""
    import traceback

    traceback.print_exc()


def failure(error: Exception) -> tuple[int, str]:
    """The exit status of *error* and the line that says it."""
    from vmstate.errors import UsageError, VMStateError

    if isinstance(error, UsageError):
        return EXIT_USAGE, f"usage error: {error}"
    if isinstance(error, VMStateError):
        return EXIT_REJECTED, f"error: {error}"
    if isinstance(error, OSError):
        from vmstate.errors import printable

        where = f"{error.filename}: " if error.filename else ""
        return EXIT_REJECTED, printable(f"error: {where}{error.strerror or error}")
    if isinstance(error, MemoryError):
        return EXIT_REJECTED, "error: out of memory"
    name = type(error).__name__
    return EXIT_BUG, f"internal error (a bug: --debug shows where): {name}: {error}"


def _quiet_stdout() -> None:
    """Point standard output at /dev/null so the interpreter's flush at exit stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real descriptor (captured in tests): nothing to flush
        pass


__all__ = ["COMMANDS", "build_parser", "failure", "main", "program"]
