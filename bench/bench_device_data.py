"""Saving and loading 1 GiB of device data, against a plain file copy of the same bytes.

An emulated migration-v2 device streams its data through a real pipe; save_device_data
writes it to a file, and load_device_data feeds that file to a second emulated device,
which checks every byte.  Each direction's throughput is reported as a ratio to copying
the saved file to another file in the same run with the same 1 MiB reads and writes
(target >= 0.8; the best of several interleaved rounds, as the machine may be
busy), and the peak memory growth of both, by the process's maximum resident
set and by tracemalloc (target < 64 MiB: the stream is never held in memory), also as
one JSON line.  Exits 1 when a target is missed.

    python3 bench/bench_device_data.py [--size-mib N] [--rounds N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from _process import emit

from vmstate.device_data import CHUNK_SIZE, load_device_data, save_device_data
from vmstate.testing.migration import EmulatedMigrationDevice

MIB = 1 << 20
MEMORY_TARGET = 64 * MIB
RATIO_TARGET = 0.8


def save(path: Path, size: int) -> None:
    path.unlink(missing_ok=True)  # freeing the last round's pages is not this round's work
    source = EmulatedMigrationDevice("source", seed=11, size=size, precopy=(24, 4 * MIB))
    with path.open("wb") as sink:
        saved = save_device_data(source, sink)
    assert saved.size == path.stat().st_size == source.stream_size


def load(path: Path, size: int) -> None:
    destination = EmulatedMigrationDevice("destination")
    with path.open("rb") as source:
        load_device_data(destination, source, path.stat().st_size)
    assert (destination.seed, destination.size) == (11, size), "the device took other data"


def copy(source: Path, target: Path) -> None:
    """The baseline: the same bytes, file to file, in the same 1 MiB chunks."""
    target.unlink(missing_ok=True)
    buffer = memoryview(bytearray(CHUNK_SIZE))
    with source.open("rb", buffering=0) as reader, target.open("wb", buffering=0) as writer:
        while count := reader.readinto(buffer):
            data = buffer[:count]
            while data:
                data = data[writer.write(data) :]


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="device data size")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (best kept)")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    args = parser.parse_args()
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="bench-device-data-", dir=args.dir) as tmp:
        saved, copied = Path(tmp) / "device.data", Path(tmp) / "copy.data"
        rss_before = max_rss()
        times: dict[str, list[float]] = {"save": [], "load": [], "copy": []}
        for _ in range(args.rounds):  # interleaved, so a busy spell hits all three
            times["save"].append(timed(lambda: save(saved, size)))
            times["copy"].append(timed(lambda: copy(saved, copied)))
            times["load"].append(timed(lambda: load(saved, size)))
        rss_growth = max_rss() - rss_before
        tracemalloc.start()
        save(saved, size)
        load(saved, size)
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        total = saved.stat().st_size

    best = {name: min(values) for name, values in times.items()}
    rate = {name: total / seconds / MIB for name, seconds in best.items()}
    ratios = {name: best["copy"] / best[name] for name in ("save", "load")}
    print(f"device data: {total} bytes ({args.size_mib} MiB + header), best of {args.rounds}")
    for name in ("save", "load", "copy"):
        spread = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"  {name:4}: {best[name]:6.3f} s  {rate[name]:7.0f} MiB/s  (rounds: {spread})")
    for name, ratio in ratios.items():
        verdict = "ok" if ratio >= RATIO_TARGET else "BELOW TARGET"
        print(f"  {name} / file copy throughput: {ratio:.2f} (target >= {RATIO_TARGET}) {verdict}")
    for name, growth in (("max RSS growth", rss_growth), ("tracemalloc peak", traced_peak)):
        verdict = "ok" if growth < MEMORY_TARGET else "OVER TARGET"
        print(f"  {name}: {growth / MIB:.1f} MiB (target < {MEMORY_TARGET // MIB}) {verdict}")
    emit(
        {
            "bench": "device_data",
            "bytes": total,
            **{f"{name}_s": round(seconds, 3) for name, seconds in best.items()},
            **{f"{name}_vs_copy": round(ratio, 3) for name, ratio in ratios.items()},
            "rss_growth_mib": round(rss_growth / MIB, 1),
            "tracemalloc_peak_mib": round(traced_peak / MIB, 1),
        }
    )
    missed = min(ratios.values()) < RATIO_TARGET or max(rss_growth, traced_peak) >= MEMORY_TARGET
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
