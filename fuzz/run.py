#!/usr/bin/env python3
"""Run the structure-aware fuzzer for a number of inputs and report what came out.

    python3 fuzz/run.py [--inputs 1000000] [--seed S] [--targets a,b] [--jobs 2]
                        [--seconds T]

Each input is made from ``(seed, target, index)``, so any failure is replayed
with ``--seed S --replay TARGET:INDEX``.  A fresh seed is drawn when none is
given and printed first.  Exit status 1 when any input raised anything but a
vmstate error or broke an invariant (see fuzz/targets.py); each such input's
seed, target, index and traceback are printed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.targets import TARGETS, WEIGHTS, InvariantError
from vmstate.errors import VMStateError


def rng_for(seed: int, target: str, index: int) -> random.Random:
    return random.Random(f"{seed}:{target}:{index}")


def signature(details: str) -> str:
    """What tells one bug from another: the exception line (numbers dropped) and the
    innermost frame inside vmstate/ or fuzz/."""
    lines = details.strip().splitlines()
    last = re.sub(r"0x[0-9a-f]+|\d+", "N", lines[-1] if lines else "")[:120]
    frames = [line.strip() for line in lines if line.strip().startswith('File "')]
    inner = next((f for f in reversed(frames) if "/vmstate/" in f), frames[-1] if frames else "")
    where = re.sub(r'^File ".*/(vmstate|fuzz)/', r"\1/", inner)
    return f"{last} @ {where}"


def run_one(seed: int, target: str, index: int) -> tuple[str, str]:
    """("ok" | "foreign" | "invariant", details) of one input."""
    try:
        TARGETS[target](rng_for(seed, target, index))
    except InvariantError as e:
        return "invariant", f"{e}\n{traceback.format_exc()}"
    except VMStateError as e:  # targets catch their own; one escaping is still ours
        return "ok", str(e)
    except KeyboardInterrupt:
        raise
    except BaseException:
        return "foreign", traceback.format_exc()
    return "ok", ""


def _work(job: tuple[int, str, int, int]) -> tuple[str, Counter[str], list[tuple[int, str, str]]]:
    seed, target, start, count = job
    outcomes: Counter[str] = Counter()
    failures = []
    for index in range(start, start + count):
        outcome, details = run_one(seed, target, index)
        outcomes[outcome] += 1
        if outcome != "ok":
            failures.append((index, outcome, details))
    return target, outcomes, failures


def plan(total: int, targets: list[str], chunk: int = 200) -> list[tuple[str, int, int]]:
    """(target, first index, count) chunks; *total* split by WEIGHTS, the targets'
    chunks interleaved so that a run cut short by --seconds has covered each of them
    in proportion."""
    weight = sum(WEIGHTS[t] for t in targets)
    jobs = []
    for target in targets:
        n = max(1, -(-total * WEIGHTS[target] // weight))  # rounded up: at least *total* in all
        jobs += [(start / n, target, start, min(chunk, n - start)) for start in range(0, n, chunk)]
    return [(target, start, count) for _, target, start, count in sorted(jobs)]


def _ignore_interrupts() -> None:
    """In a worker: ^C is for the parent, which stops and reports what finished."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _results(jobs: list[tuple[int, str, int, int]], processes: int) -> Iterator[
        tuple[str, Counter[str], list[tuple[int, str, str]]]]:
    """Each chunk's results as they come: in this process for one job (no pool to
    start, exactly one core), else from a pool of *processes*."""
    if processes == 1:
        yield from map(_work, jobs)
        return
    with multiprocessing.Pool(processes, _ignore_interrupts) as pool:
        yield from pool.imap_unordered(_work, jobs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, help="stop after this long (what ran is reported)")
    parser.add_argument("--replay", metavar="TARGET:INDEX", help="run one input and show it")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(8), "big")
    if args.replay:
        target, _, index = args.replay.partition(":")
        if target not in TARGETS or not index.isdigit():
            parser.error(f"--replay takes TARGET:INDEX (targets: {', '.join(TARGETS)})")
        outcome, details = run_one(seed, target, int(index))
        print(outcome, details, sep="\n")
        return 0 if outcome == "ok" else 1
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)} (known: {', '.join(TARGETS)})")
    print(f"seed {seed}", flush=True)
    started = last_report = time.monotonic()
    totals: dict[str, Counter[str]] = {t: Counter() for t in targets}
    failures: list[tuple[str, int, str, str]] = []
    jobs = [(seed, target, start, count) for target, start, count in plan(args.inputs, targets)]
    results = _results(jobs, args.jobs)
    seen: set[str] = set()
    interrupted = False
    try:
        for target, outcomes, found in results:
            totals[target] += outcomes
            failures += [(target, index, outcome, details) for index, outcome, details in found]
            for index, outcome, details in found:  # each new kind of failure at once
                if signature(details) not in seen:
                    seen.add(signature(details))
                    print(f"  {outcome}: python3 fuzz/run.py --seed {seed} --replay "
                          f"{target}:{index}\n    {signature(details)}", flush=True)
            now = time.monotonic()
            if now - last_report >= 60:
                last_report = now
                done = sum(sum(c.values()) for c in totals.values())
                print(f"  {now - started:6.0f} s  {done} inputs  {len(failures)} failed", flush=True)
            if args.seconds is not None and now - started >= args.seconds:
                break
    except KeyboardInterrupt:  # ^C: report the chunks that finished
        interrupted = True
        print("  interrupted: what follows counts the inputs that finished", flush=True)
    finally:
        results.close()  # the pool, if any, is terminated with the generator
    seconds = time.monotonic() - started
    for target in targets:
        counts = totals[target]
        print(f"{target:18s} {sum(counts.values()):>9d} inputs  "
              f"{counts['foreign']:>4d} foreign  {counts['invariant']:>4d} invariant")
    total = sum(sum(c.values()) for c in totals.values())
    foreign = sum(c["foreign"] for c in totals.values())
    broken = sum(c["invariant"] for c in totals.values())
    print(f"total {total} inputs in {seconds:.0f} s: {foreign} foreign exceptions, "
          f"{broken} broken invariants (seed {seed})")
    kinds: dict[tuple[str, str, str], list[tuple[int, str]]] = {}
    for target, index, outcome, details in sorted(failures):
        kinds.setdefault((target, outcome, signature(details)), []).append((index, details))
    for (target, outcome, _), found in sorted(kinds.items(), key=lambda k: -len(k[1])):
        index, details = found[0]
        print(f"\n--- {outcome} x{len(found)}: python3 fuzz/run.py --seed {seed} "
              f"--replay {target}:{index}\n{details}")
    return 1 if failures else 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
