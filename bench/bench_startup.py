"""Start-up of the command line: ``vmstate --help`` and ``vmstate analyze --help``, whole
process, against a bare ``python3 -c pass`` (target: ``--help`` within 0.04 s); and an
interpreter that only imports attrs, the floor of every command that decodes.

    python3 bench/bench_startup.py [--rounds N]

Prints a line per measure and the same as one JSON line.
"""

from __future__ import annotations

import argparse

from _process import emit, installed, pair

TARGET_SECONDS = 0.04


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    venv = installed()
    env, python, vmstate = venv.env, venv.python, venv.vmstate
    bare = [python, "-c", "pass"]
    for name, argv in (
        ("vmstate --help", [vmstate, "--help"]),
        ("vmstate analyze --help", [vmstate, "analyze", "--help"]),
        ("python3 -c 'import attrs'", [python, "-c", "import attrs"]),
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
