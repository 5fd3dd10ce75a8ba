"""What every target requires of the library's answer, whatever the input.

The promise under test is the README's: only a :class:`~vmstate.errors.VMStateError`
comes out of any input, a decode error names a path and an offset inside the input
and fits on one line, and the command line answers in one line with exit status 0
or 1 (2 only for usage it was not given here).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

from vmstate.errors import DecodeError, VMStateError


class InvariantError(AssertionError):
    """An input broke a promise other than "no foreign exception" (as bad)."""


def require(ok: bool, what: str) -> None:
    if not ok:
        raise InvariantError(what)


def located(e: VMStateError, size: int) -> None:
    """A decode error must say where: a path, and an offset inside the input."""
    if isinstance(e, DecodeError):
        require(bool(e.path), f"decode error without a path: {e}")
        require(0 <= e.offset <= size, f"offset {e.offset} outside 0..{size}: {e}")
    require("\n" not in str(e), f"error text spans lines: {e!r}")


#: usage errors a generated command line may earn: an argument the input does not
#: match (a --slot it lacks, a directory without description files, a device no host
#: has), or an option the input needs (--src for a stream without vmdesc)
USAGE = ("has no function", "no *.toml description files", "the stream has no vmdesc; give",
         "has no vmdesc (QEMU writes one", "no PCI device 0000:ff:1f.7")


def cli(argv: Sequence[str]) -> tuple[int, str]:
    """Run ``vmstate ARGV``; it must exit 0 or 1 (2 only for a usage error of
    :data:`USAGE`) and write at most one line to stderr (notes and --verify-roundtrip's
    list of differing sections aside), never a traceback.  Returns the exit status and
    standard output."""
    from vmstate.cli import EXIT_BUG, main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1 if e.code else 0
    text = err.getvalue()
    if code == EXIT_BUG:  # an exception escaped the library: a foreign one, with its traceback
        at = list(argv).index("--") if "--" in argv else len(argv)
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            main([*argv[:at], "--debug", *argv[at:]])
        raise RuntimeError(f"vmstate {' '.join(argv)} exited {code} (a bug):\n{err.getvalue()}")
    lines = [line for line in text.splitlines() if not line.startswith("vmstate: note:")
             and not (" re-encoding differs at offset " in line and "--verify-roundtrip" in argv)]
    require(code in (0, 1) or (code == 2 and any(u in text for u in USAGE)),
            f"vmstate {argv[0]} exited {code}: {text[-400:]!r}")
    require("Traceback" not in text and len(lines) <= 1,
            f"vmstate {argv[0]} wrote more than one line: {text[-400:]!r}")
    require(code == 0 or len(lines) == 1 or argv[0] in ("check", "analyze", "lint", "diff"),
            f"vmstate {argv[0]} exited {code} without saying why")
    return code, out.getvalue()
