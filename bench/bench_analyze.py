"""``vmstate analyze --format qemu`` against QEMU 7.2's scripts/analyze-migration.py.

Both run in this process on the same stream files, each producing the
analyzer's JSON text; the outputs are checked equal after parsing, then
timed.  The ratio is QEMU's time over ours (target: >= 5).

    python3 bench/bench_analyze.py [--qemu-src DIR] [--rounds N] [STREAM ...]

Streams default to those in tests/data/qemu that have a vmdesc.  QEMU's sources: ``--qemu-src``,
else ``$QEMU_SRC``, else /root/src/qemu-7.2.0 — get them with
``apt-get source qemu=1:7.2+dfsg-7+deb12u18`` (see tests/data/qemu/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import runpy
import sys
import timeit
from pathlib import Path

from vmstate.cli import main as vmstate_main

ROOT = Path(__file__).resolve().parent.parent


def qemu_analyzer(script: Path, stream: Path) -> str:
    out = io.StringIO()
    argv = sys.argv
    sys.argv = [str(script), "-f", str(stream), "-d", "state"]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    return out.getvalue()


def ours(stream: Path) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = vmstate_main(["analyze", str(stream), "--format", "qemu"])
    assert code == 0
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("streams", nargs="*", type=Path)
    parser.add_argument(
        "--qemu-src", type=Path, default=Path(os.environ.get("QEMU_SRC", "/root/src/qemu-7.2.0"))
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    script = args.qemu_src / "scripts" / "analyze-migration.py"
    if not script.exists():
        parser.error(f"{script} not found: pass --qemu-src (see the module docstring)")
    # QEMU's analyzer needs a vmdesc: take the streams it could analyze when the data was made
    data = ROOT / "tests" / "data" / "qemu"
    streams = args.streams or sorted((data / p.name).with_suffix("").with_suffix(".mig") for p in data.glob("*.state.json"))
    if not streams:
        parser.error("no streams given and none in tests/data/qemu")
    total_ours = total_theirs = 0.0
    for stream in streams:
        assert json.loads(ours(stream)) == json.loads(qemu_analyzer(script, stream)), stream
        t_ours = min(timeit.repeat(lambda s=stream: ours(s), number=1, repeat=args.rounds))
        t_theirs = min(
            timeit.repeat(lambda s=stream: qemu_analyzer(script, s), number=1, repeat=args.rounds)
        )
        total_ours += t_ours
        total_theirs += t_theirs
        print(
            f"{stream.name:40s} {stream.stat().st_size:>9d} B  vmstate {t_ours * 1e3:7.1f} ms  "
            f"QEMU {t_theirs * 1e3:7.1f} ms  ratio {t_theirs / t_ours:5.1f}x"
        )
    print(
        f"all streams: vmstate is {total_theirs / total_ours:.1f}x faster than analyze-migration.py (target >= 5x)"
    )


if __name__ == "__main__":
    main()
