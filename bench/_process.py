"""Whole-process measures for the benchmarks: paired runs, medians, peak memory.

A command is timed as a user feels it, from ``exec`` to exit, start-up included:
each round runs the two commands of a pair back to back (in alternating order, so a
machine that drifts affects both alike), the ratio is taken pair by pair, and the
medians are reported.  Peak memory is the child's maximum resident set, from the
kernel's accounting of the reaped process (``wait4``).

Linux counts in a process's maximum resident set the memory of whatever it was
before ``exec``: a command started straight from this (large) process would be
charged this process's size.  Each command is therefore started by a small
launcher (an isolated interpreter without site packages) that forks it, times it
from fork to exit and reports its ``wait4`` figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

#: the interpreter that starts each measured command (see _LAUNCHER)
PYTHON = sys.executable
ROOT = Path(__file__).resolve().parent.parent
#: where commands run: not the checkout, whose vmstate/ would shadow the installed one
NEUTRAL = "/"


@attrs.frozen
class Run:
    seconds: float
    peak_mib: float


@attrs.frozen
class Pair:
    """Medians of *rounds* paired runs of command A (ours) and command B (the peer)."""

    a: tuple[Run, ...]
    b: tuple[Run, ...]

    @property
    def a_seconds(self) -> float:
        return statistics.median(r.seconds for r in self.a)

    @property
    def b_seconds(self) -> float:
        return statistics.median(r.seconds for r in self.b)

    @property
    def ratio(self) -> float:
        """B's time over A's, the median of the per-round ratios (>1: A is faster)."""
        return statistics.median(b.seconds / a.seconds for a, b in zip(self.a, self.b, strict=True))

    @property
    def a_peak_mib(self) -> float:
        return max(r.peak_mib for r in self.a)

    @property
    def b_peak_mib(self) -> float:
        return max(r.peak_mib for r in self.b)


#: forks argv[1:] with its output discarded; prints seconds, exit status, peak KiB
_LAUNCHER = """\
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def run_once(argv: Sequence[str], env: dict[str, str] | None = None) -> Run:
    """One whole process, its output discarded; a failing command is a failed benchmark."""
    done = subprocess.run(
        [PYTHON, "-I", "-S", "-c", _LAUNCHER, *argv],
        capture_output=True, env=env, check=False, cwd=NEUTRAL,
    )
    seconds, status, peak_kib = done.stdout.split()
    if done.returncode != 0 or int(status) != 0:
        raise SystemExit(
            f"{' '.join(argv)} exited {int(status)}: {done.stderr.decode(errors='replace')[-500:]}"
        )
    return Run(float(seconds), int(peak_kib) / 1024)


def pair(
    a: Sequence[str], b: Sequence[str], rounds: int, env: dict[str, str] | None = None
) -> Pair:
    """*rounds* rounds of A and B after one warm-up of each, alternating which goes first."""
    runs_a, runs_b = in_rounds([a, b], rounds, env)
    return Pair(runs_a, runs_b)


def in_rounds(
    commands: Sequence[Sequence[str]], rounds: int, env: dict[str, str] | None = None
) -> list[tuple[Run, ...]]:
    """Each command's runs in *rounds* rounds after one warm-up of each; every round runs
    them all back to back, the order rotated round by round, so that runs of one round
    can be compared with each other."""
    for argv in commands:
        run_once(argv, env)
    runs: list[list[Run]] = [[] for _ in commands]
    for i in range(rounds):
        for j in range(len(commands)):
            k = (i + j) % len(commands)
            runs[k].append(run_once(commands[k], env))
    return [tuple(r) for r in runs]


@attrs.frozen
class Installed:
    """vmstate as a user installs it: its interpreter, its ``vmstate`` console script,
    and the environment they run in."""

    python: str
    vmstate: str
    env: dict[str, str]


def installed() -> Installed:
    """A virtual environment of the benchmarks' own, this checkout ``pip install``-ed
    into it (byte-compiled, as pip leaves it; dependencies from the index once).

    Its interpreter starts as a user's does: none of this machine's site packages and
    ``.pth`` files run (here a sandbox's ``.pth`` imports certifi at every start of the
    system interpreter, about 55 ms, a floor under every Python command that no user
    has).  QEMU's analyzers, which need only the standard library, run on it too."""
    venv = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vmstate-bench" / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, str(ROOT)], check=True, env=env)  # dependencies, when missing
    subprocess.run([*pip, "--force-reinstall", "--no-deps", str(ROOT)], check=True, env=env)
    return Installed(str(python), str(venv / "bin" / "vmstate"), env)


def emit(record: dict[str, Any]) -> None:
    """One JSON line per measure, for comparing commits (``grep '^{'``)."""
    print(json.dumps(record, sort_keys=True))
