"""``vmstate analyze --format qemu`` against QEMU's ``scripts/analyze-migration.py``,
whole process, on the same real streams (target: 10x faster; peak memory at most half).

Each stream goes to the analyzer of the QEMU that wrote it: tests/data/qemu to QEMU
7.2's, tests/data/qemu-10.0 to QEMU 10.0's.  The two outputs are checked equal (as
JSON) first; then both commands run as a user runs them, start-up included, with the
stream's floor (analyze_floor.py) in the same rounds (see _process.py); the figures are
medians, the ratios taken round by round.  A stream the peer cannot read
(QEMU 10.0's analyzer crashes on mapped-ram snapshots) is listed, not timed.

tests/data's streams are small (a guest stopped in SeaBIOS, 0.7-1.2 MiB): on them
start-up is most of either tool's time.  ``--guest`` adds the streams of a booted
1 GiB Linux guest saved by each QEMU (about 100 MiB; bench/guest_streams.py makes
them once, which needs QEMU 7.2, 10.0 and the test guest's kernel as the tests do);
``--guest-mib N`` (repeatable) boots guests of N MiB instead: both analyzers take
longer the more memory a guest has, at very different rates.

    python3 bench/bench_analyze.py [--qemu-7.2 DIR] [--qemu-10.0 DIR] [--rounds N]
                                   [--guest] [--guest-mib N ...] [STREAM ...]

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
import tempfile
from pathlib import Path

from _process import NEUTRAL, Pair, emit, in_rounds, installed, pair
from analyze_floor import INHERENT_PROBE, MODEL_PROBE

ROOT = Path(__file__).resolve().parent.parent
DATA = {"7.2": ROOT / "tests" / "data" / "qemu", "10.0": ROOT / "tests" / "data" / "qemu-10.0"}
SPEED_TARGET = 10.0


def series_of(stream: Path) -> str:
    """The QEMU that wrote a stream given by path, as its directory (tests/data/qemu-10.0)
    or its name (guest_streams' guest-2048m-10.0.mig) says: 10.0's analyzer refuses
    7.2's streams of some machines and 7.2's cannot read 10.0's."""
    return "10.0" if "10.0" in stream.parent.name or stream.stem.endswith("-10.0") else "7.2"


def streams_of(series: str) -> list[Path]:
    """The streams of *series* that carry a vmdesc (QEMU's analyzer needs one): those the
    data's make script recorded a ``.state.json`` for."""
    return sorted(
        p.with_name(p.name.removesuffix(".state.json") + ".mig")
        for p in DATA[series].glob("*.state.json")
    )


def output(argv: list[str], env: dict[str, str]) -> bytes | None:
    done = subprocess.run(argv, capture_output=True, env=env, check=False, cwd=NEUTRAL)
    return done.stdout if done.returncode == 0 else None


def probe(python: str, script: str, args: list[str], env: dict[str, str]) -> str:
    """What *script* (analyze_floor's probes) prints, run by the venv's interpreter."""
    argv = [python, "-c", script, *args]
    return subprocess.run(argv, capture_output=True, env=env, check=True, cwd=NEUTRAL, text=True).stdout


def floor_of(python: str, stream: Path, text: bytes, env: dict[str, str], work: Path) -> tuple[list[str], float]:
    """analyze_floor.py for *stream* (the classes vmstate builds for it, *text* out), and
    the seconds of the work inherent to any analyzer of it (INHERENT_PROBE)."""
    model = probe(python, MODEL_PROBE, [str(stream)], env).strip()
    prepared = work / (stream.name + ".txt")
    prepared.write_bytes(text)
    here = Path(__file__).resolve().parent / "analyze_floor.py"
    inherent = float(probe(python, INHERENT_PROBE, [str(stream), str(prepared)], env))
    return [python, str(here), "--model", model, str(prepared)], inherent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("streams", nargs="*", type=Path)
    parser.add_argument("--qemu-7.2", dest="q72", type=Path, default=Path("/root/src/qemu-7.2.0"))
    parser.add_argument("--qemu-10.0", dest="q10", type=Path, default=Path("/root/src/qemu-10.0.2"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--guest", action="store_true",
        help="also the streams of a booted 1 GiB Linux guest (bench/guest_streams.py)",
    )  # fmt: skip
    parser.add_argument(
        "--guest-mib", type=int, action="append", metavar="N",
        help="the booted guests' memory in MiB (repeatable; implies --guest; default 1024)",
    )  # fmt: skip
    args = parser.parse_args()
    scripts = {
        s: d / "scripts" / "analyze-migration.py"
        for s, d in (("7.2", args.q72), ("10.0", args.q10))
    }
    for series, script in scripts.items():
        if not script.exists():
            parser.error(f"{script} not found: give --qemu-{series} (see the module docstring)")
    work = [("tests/data", s, p) for s in DATA for p in streams_of(s)]
    if args.streams:
        work = [("given", series_of(p), p.resolve()) for p in args.streams]
    if args.guest or args.guest_mib:
        from guest_streams import guest_stream

        for mib in args.guest_mib or [1024]:
            work += [(f"booted {mib} MiB guest", s, guest_stream(s, mib)) for s in DATA]
    venv = installed()
    env, python, vmstate = venv.env, venv.python, venv.vmstate
    bare = pair([python, "-c", "import attrs"], [python, "-c", "pass"], args.rounds, env)
    results: dict[str, list[tuple[Pair, Pair, float]]] = {}
    work_dir = Path(tempfile.mkdtemp(prefix="vmstate-bench-"))
    for group, series, stream in work:
        ours = [vmstate, "analyze", "--format", "qemu", str(stream)]
        theirs = [python, str(scripts[series]), "-f", str(stream), "-d", "state"]
        expected = output(theirs, env)
        if expected is None:
            print(f"{stream.name:36s} QEMU {series}'s analyzer cannot read it: not timed")
            emit({"bench": "analyze", "stream": stream.name, "qemu": series, "peer_failed": True})
            continue
        mine = output(ours, env)
        assert mine is not None and json.loads(mine) == json.loads(expected), f"{stream}: outputs differ"
        floor_argv, inherent = floor_of(python, stream, mine, env, work_dir)
        ours_runs, theirs_runs, floor_runs = in_rounds([ours, theirs, floor_argv], args.rounds, env)
        measured, floor = Pair(ours_runs, theirs_runs), Pair(floor_runs, theirs_runs)
        floor_ratio = floor.ratio
        best_ratio = statistics.median(
            t.seconds / (f.seconds + inherent) for f, t in zip(floor_runs, theirs_runs, strict=True)
        )
        results.setdefault(group, []).append((measured, floor, best_ratio))
        print(
            f"{stream.name:36s} {stream.stat().st_size / 2**20:5.1f} MiB  vmstate "
            f"{measured.a_seconds * 1e3:6.1f} ms {measured.a_peak_mib:5.1f} MiB   QEMU {series} "
            f"{measured.b_seconds * 1e3:6.1f} ms {measured.b_peak_mib:5.1f} MiB   {measured.ratio:4.1f}x"
            f"   floor {floor.a_seconds * 1e3:6.1f} ms {floor_ratio:4.1f}x, with the inherent "
            f"{inherent * 1e3:4.1f} ms {best_ratio:4.1f}x"
        )
        emit(
            {
                "bench": "analyze",
                "group": group,
                "stream": stream.name,
                "qemu": series,
                "vmstate_s": round(measured.a_seconds, 4),
                "qemu_s": round(measured.b_seconds, 4),
                "ratio": round(measured.ratio, 2),
                "vmstate_peak_mib": round(measured.a_peak_mib, 1),
                "qemu_peak_mib": round(measured.b_peak_mib, 1),
                "floor_s": round(floor.a_seconds, 4),
                "floor_ratio": round(floor_ratio, 2),
                "floor_peak_mib": round(floor.a_peak_mib, 1),
                "inherent_s": round(inherent, 4),
                "floor_inherent_ratio": round(best_ratio, 2),
            }
        )
    for group, pairs in results.items():
        summarize(group, pairs)
    print(
        f"an interpreter that imports attrs and exits takes {bare.a_seconds * 1e3:.0f} ms "
        f"and {bare.a_peak_mib:.1f} MiB here (a bare one {bare.b_seconds * 1e3:.0f} ms, "
        f"{bare.b_peak_mib:.1f} MiB)"
    )


def summarize(group: str, results: list[tuple[Pair, Pair, float]]) -> None:
    """One line and one JSON line for a group of streams (each: vmstate against QEMU, the
    floor against QEMU, and the ratio of the floor with the inherent work): median and
    slowest ratio, the largest share of QEMU's peak memory, and the ratios the floor
    would reach (analyze_floor.py; with the inherent work: INHERENT_PROBE)."""
    floors = [f.ratio for _, f, _ in results]
    bests = [best for _, _, best in results]
    summary = {
        "bench": "analyze",
        "group": group,
        "streams": len(results),
        "median_ratio": round(statistics.median(p.ratio for p, _, _ in results), 2),
        "min_ratio": round(min(p.ratio for p, _, _ in results), 2),
        "max_peak_share": round(max(p.a_peak_mib / p.b_peak_mib for p, _, _ in results), 2),
        "floor_median_ratio": round(statistics.median(floors), 2),
        "floor_max_ratio": round(max(floors), 2),
        "floor_inherent_median_ratio": round(statistics.median(bests), 2),
        "floor_inherent_max_ratio": round(max(bests), 2),
        "floor_max_peak_share": round(max(f.a_peak_mib / p.b_peak_mib for p, f, _ in results), 2),
        "target_ratio": SPEED_TARGET,
    }
    print(
        f"{group}, {len(results)} streams: vmstate is {summary['median_ratio']}x faster than "
        f"QEMU's analyzer (median; slowest {summary['min_ratio']}x; target {SPEED_TARGET:.0f}x); "
        f"peak memory at most {summary['max_peak_share']:.0%} of QEMU's (target 50%).  The floor "
        f"(analyze_floor.py: start, argparse, attrs, the same attrs classes, the output written, "
        f"nothing decoded) would be {summary['floor_median_ratio']}x (median, best "
        f"{summary['floor_max_ratio']}x), {summary['floor_inherent_median_ratio']}x (best "
        f"{summary['floor_inherent_max_ratio']}x) with the vmdesc read and the text written by "
        f"the json module's C code; its peak memory up to "
        f"{summary['floor_max_peak_share']:.0%} of QEMU's"
    )
    emit(summary)


if __name__ == "__main__":
    main()
