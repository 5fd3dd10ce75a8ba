"""``vmstate analyze --extract-ram`` against QEMU's ``analyze-migration.py -x``, whole
process, on the streams of booted Linux guests (bench/guest_streams.py; tests/data's
guests have almost no RAM that is not zero).

Both write one file per RAM block (QEMU's also its desc.json and state.json); the
files are checked equal first.  Each run writes into a directory of its own, made
under one temporary directory removed at the end; the stream goes to the analyzer of
the QEMU that wrote it.  Prints a line per stream and the same as one JSON line.

    python3 bench/bench_extract.py [--qemu-7.2 DIR] [--qemu-10.0 DIR] [--rounds N]
                                   [--guest-mib N ...]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from _process import Pair, emit, in_rounds, installed
from guest_streams import guest_stream

from vmstate.inputs import open_stream
from vmstate.ram_extract import ram_file_name
from vmstate.stream import parse

SERIES = ("7.2", "10.0")
#: each run in a directory of its own ($$: the shell's pid, which exec hands on)
OURS = 'exec "$0" analyze --extract-ram "$1/ours.$$" "$2"'
THEIRS = 'mkdir "$1/qemu.$$" && cd "$1/qemu.$$" && exec "$0" "$2" -x -f "$3"'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qemu-7.2", dest="q72", type=Path, default=Path("/root/src/qemu-7.2.0"))
    parser.add_argument("--qemu-10.0", dest="q10", type=Path, default=Path("/root/src/qemu-10.0.2"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--guest-mib", type=int, action="append", metavar="N",
                        help="the booted guests' memory in MiB (repeatable; default 1024)")  # fmt: skip
    args = parser.parse_args()
    scripts = {"7.2": args.q72, "10.0": args.q10}
    venv = installed()
    for mib in args.guest_mib or [1024]:
        for series in SERIES:
            stream = guest_stream(series, mib)
            script = scripts[series] / "scripts" / "analyze-migration.py"
            work = Path(tempfile.mkdtemp(prefix="vmstate-bench-extract-"))
            try:
                ours = ["sh", "-c", OURS, venv.vmstate, str(work), str(stream)]
                theirs = ["sh", "-c", THEIRS, venv.python, str(work), str(script), str(stream)]
                check_equal(ours, theirs, stream, work, venv.env)
                measured = Pair(*in_rounds([ours, theirs], args.rounds, venv.env))
            finally:
                shutil.rmtree(work)
            print(
                f"{stream.name:24s} {stream.stat().st_size / 2**20:5.1f} MiB  vmstate "
                f"{measured.a_seconds * 1e3:6.1f} ms {measured.a_peak_mib:5.1f} MiB   QEMU {series} "
                f"{measured.b_seconds * 1e3:6.1f} ms {measured.b_peak_mib:5.1f} MiB   "
                f"{measured.ratio:4.1f}x"
            )
            emit({
                "bench": "extract", "stream": stream.name, "qemu": series,
                "vmstate_s": round(measured.a_seconds, 4), "qemu_s": round(measured.b_seconds, 4),
                "ratio": round(measured.ratio, 2), "vmstate_peak_mib": round(measured.a_peak_mib, 1),
                "qemu_peak_mib": round(measured.b_peak_mib, 1),
            })  # fmt: skip


def check_equal(
    ours: list[str], theirs: list[str], stream: Path, work: Path, env: dict[str, str]
) -> None:
    """One run of each; every block's file the same bytes."""
    for argv in (ours, theirs):
        subprocess.run(argv, check=True, env=env, capture_output=True)
    (mine,) = work.glob("ours.*")
    (qemu,) = work.glob("qemu.*")
    with open_stream(stream) as opened:
        blocks = parse(opened.data).ram_blocks
    for block in blocks:
        a, b = mine / ram_file_name(block), qemu / block.name.lstrip("/")
        if a.read_bytes() != b.read_bytes():
            raise SystemExit(f"{stream.name}: block {block.name} differs from QEMU's")
    shutil.rmtree(mine)
    shutil.rmtree(qemu)


if __name__ == "__main__":
    main()
