"""Progress of long work: a bar on a terminal, plain lines otherwise (transfers to and
from devices, whose logs want them), or a bar on a terminal only (reading streams)."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from vmstate.device_data import Progress

_BAR = 30
_LINE_STEP = 64 << 20  # plain output: a line per 64 MiB (and at the end)
#: seconds of work before TerminalProgress draws: quicker runs show no bar
DELAY = 0.5


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


class TerminalProgress:
    """A bar on a terminal, for work that is long only sometimes (a stream of gigabytes):
    drawn once the work has taken *delay* seconds, erased when it ends, so quick runs
    and output that is no terminal see nothing of it.  Use as a context manager; call
    it with (done, total or None)."""

    def __init__(self, label: str, out: TextIO | None = None, delay: float | None = None) -> None:
        self.out = sys.stderr if out is None else out
        self.label = label
        self.live = self.out.isatty()
        self.start = time.monotonic()
        self.delay = DELAY if delay is None else delay
        self.last = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int | None) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if now - self.start < self.delay or now - self.last < 0.1:
            return
        self.last = now
        if total:
            filled = min(_BAR, _BAR * done // total)
            bar = "#" * filled + "-" * (_BAR - filled)
            text = f"\r{self.label} [{bar}] {_size(done)} / {_size(total)}"
        else:
            text = f"\r{self.label} {_size(done)}"
        self.out.write(text + "\033[K")
        self.out.flush()
        self.drawn = True

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.drawn:
            self.out.write("\r\033[K")
            self.out.flush()
