"""``vmstate analyze --format qemu`` against QEMU's ``scripts/analyze-migration.py``,
whole process, on the same real streams (target: 10x faster; peak memory at most half).

Each stream goes to the analyzer of the QEMU that wrote it: tests/data/qemu to QEMU
7.2's, tests/data/qemu-10.0 to QEMU 10.0's.  The two outputs are checked equal (as
JSON) first; then both commands run as a user runs them, start-up included, in paired
rounds (see _process.py); the figures are medians.  A stream the peer cannot read
(QEMU 10.0's analyzer crashes on mapped-ram snapshots) is listed, not timed.

    python3 bench/bench_analyze.py [--qemu-7.2 DIR] [--qemu-10.0 DIR] [--rounds N] [STREAM ...]

QEMU's sources: ``apt-get source qemu=1:7.2+dfsg-7+deb12u18`` and the
bookworm-backports ``qemu`` 10.0 source (see tests/data/qemu/README.md); the defaults
are /root/src/qemu-7.2.0 and /root/src/qemu-10.0.2.  Prints a line per stream and the
same as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

from _process import PYTHON, emit, installed_env, pair

ROOT = Path(__file__).resolve().parent.parent
DATA = {"7.2": ROOT / "tests" / "data" / "qemu", "10.0": ROOT / "tests" / "data" / "qemu-10.0"}
SPEED_TARGET = 10.0


def streams_of(series: str) -> list[Path]:
    """The streams of *series* that carry a vmdesc (QEMU's analyzer needs one): those the
    data's make script recorded a ``.state.json`` for."""
    return sorted(
        p.with_name(p.name.removesuffix(".state.json") + ".mig")
        for p in DATA[series].glob("*.state.json")
    )


def output(argv: list[str], env: dict[str, str]) -> object | None:
    done = subprocess.run(argv, capture_output=True, env=env, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("streams", nargs="*", type=Path)
    parser.add_argument("--qemu-7.2", dest="q72", type=Path, default=Path("/root/src/qemu-7.2.0"))
    parser.add_argument("--qemu-10.0", dest="q10", type=Path, default=Path("/root/src/qemu-10.0.2"))
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    scripts = {
        s: d / "scripts" / "analyze-migration.py"
        for s, d in (("7.2", args.q72), ("10.0", args.q10))
    }
    for series, script in scripts.items():
        if not script.exists():
            parser.error(f"{script} not found: give --qemu-{series} (see the module docstring)")
    work = [(s, p) for s in DATA for p in streams_of(s)]
    if args.streams:
        work = [("10.0" if "10.0" in str(p.parent) else "7.2", p) for p in args.streams]
    env = installed_env()
    floor = pair([PYTHON, "-c", "import attrs"], [PYTHON, "-c", "pass"], args.rounds, env)
    ratios, peaks, bests = [], [], []
    for series, stream in work:
        ours = [PYTHON, "-m", "vmstate", "analyze", "--format", "qemu", str(stream)]
        theirs = [PYTHON, str(scripts[series]), "-f", str(stream), "-d", "state"]
        expected = output(theirs, env)
        if expected is None:
            print(f"{stream.name:36s} QEMU {series}'s analyzer cannot read it: not timed")
            emit({"bench": "analyze", "stream": stream.name, "qemu": series, "peer_failed": True})
            continue
        assert output(ours, env) == expected, f"{stream}: outputs differ"
        measured = pair(ours, theirs, args.rounds, env)
        ratios.append(measured.ratio)
        bests.append(measured.b_seconds / floor.a_seconds)
        peaks.append(measured.a_peak_mib / measured.b_peak_mib)
        print(
            f"{stream.name:36s} {stream.stat().st_size / 2**20:4.1f} MiB  vmstate "
            f"{measured.a_seconds * 1e3:6.1f} ms {measured.a_peak_mib:5.1f} MiB   QEMU {series} "
            f"{measured.b_seconds * 1e3:6.1f} ms {measured.b_peak_mib:5.1f} MiB   {measured.ratio:4.1f}x"
        )
        emit(
            {
                "bench": "analyze",
                "stream": stream.name,
                "qemu": series,
                "vmstate_s": round(measured.a_seconds, 4),
                "qemu_s": round(measured.b_seconds, 4),
                "ratio": round(measured.ratio, 2),
                "vmstate_peak_mib": round(measured.a_peak_mib, 1),
                "qemu_peak_mib": round(measured.b_peak_mib, 1),
            }
        )
    summary = {
        "bench": "analyze",
        "streams": len(ratios),
        "floor_s": round(floor.a_seconds, 4),
        "floor_ratio": round(statistics.median(bests), 2),
        "median_ratio": round(statistics.median(ratios), 2),
        "min_ratio": round(min(ratios), 2),
        "max_peak_share": round(max(peaks), 2),
        "target_ratio": SPEED_TARGET,
    }
    print(
        f"{len(ratios)} streams: vmstate is {summary['median_ratio']}x faster than QEMU's analyzer "
        f"(median; slowest {summary['min_ratio']}x; target {SPEED_TARGET:.0f}x); peak memory at most "
        f"{summary['max_peak_share']:.0%} of QEMU's (target 50%)"
    )
    print(
        f"the floor: an interpreter that imports attrs and exits takes {floor.a_seconds * 1e3:.0f} ms "
        f"here (a bare one {floor.b_seconds * 1e3:.0f} ms); against it QEMU's analyzer is "
        f"{summary['floor_ratio']}x slower (median): no attrs-based tool can be faster than that"
    )
    emit(summary)


if __name__ == "__main__":
    main()
