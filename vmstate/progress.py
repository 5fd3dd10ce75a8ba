"""Progress of long transfers: a bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from vmstate.device_data import Progress

_BAR = 30
_LINE_STEP = 64 << 20  # plain output: a line per 64 MiB (and at the end)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def reporter(label: str, out: TextIO | None = None) -> Progress:
    """A progress callback for (done, total or None) that draws on *out* (stderr)."""
    out = sys.stderr if out is None else out
    tty = out.isatty()
    state = {"last": -1.0, "printed": -_LINE_STEP}

    def report(done: int, total: int | None) -> None:
        assert out is not None
        final = total is not None and done >= total
        if tty:
            now = time.monotonic()
            if not final and now - state["last"] < 0.1:
                return
            state["last"] = now
            if total:
                filled = min(_BAR, _BAR * done // total)
                bar = "#" * filled + "-" * (_BAR - filled)
                out.write(f"\r{label} [{bar}] {_size(done)} / {_size(total)}")
            else:
                out.write(f"\r{label} {_size(done)}")
            if final:
                out.write("\n")
            out.flush()
        elif final or done - state["printed"] >= _LINE_STEP:
            state["printed"] = done
            of = f" of {_size(total)}" if total else ""
            out.write(f"{label}: {_size(done)}{of}{' done' if final else ''}\n")

    return report
