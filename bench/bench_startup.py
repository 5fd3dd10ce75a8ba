"""Start-up of the command line: ``vmstate --help`` and ``vmstate analyze --help``, whole
process, against a bare ``python3 -c pass`` (target: ``--help`` within 0.04 s); and an
interpreter that only imports attrs, the floor of every command that decodes.

    python3 bench/bench_startup.py [--rounds N]

Prints a line per measure and the same as one JSON line.
"""

from __future__ import annotations

import argparse

from _process import PYTHON, emit, installed_env, pair

TARGET_SECONDS = 0.04


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    env = installed_env()
    bare = [PYTHON, "-c", "pass"]
    for name, argv in (
        ("vmstate --help", [PYTHON, "-m", "vmstate", "--help"]),
        ("vmstate analyze --help", [PYTHON, "-m", "vmstate", "analyze", "--help"]),
        ("python3 -c 'import attrs'", [PYTHON, "-c", "import attrs"]),
    ):
        measured = pair(argv, bare, args.rounds, env)
        print(
            f"{name:26s} {measured.a_seconds * 1e3:6.1f} ms   python3 -c pass "
            f"{measured.b_seconds * 1e3:6.1f} ms   peak {measured.a_peak_mib:5.1f} MiB   "
            f"(target <= {TARGET_SECONDS * 1e3:.0f} ms)"
        )
        emit(
            {
                "bench": "startup",
                "command": name,
                "vmstate_s": round(measured.a_seconds, 4),
                "python_pass_s": round(measured.b_seconds, 4),
                "vmstate_peak_mib": round(measured.a_peak_mib, 1),
                "target_s": TARGET_SECONDS,
            }
        )


if __name__ == "__main__":
    main()
