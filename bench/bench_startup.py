"""Start-up of the command line: ``vmstate --help`` and ``vmstate analyze --help``, whole
process, against a bare ``python -c pass`` (target: ``--help`` within 0.04 s); and two
floors measured the same way: the smallest argparse program printing its help (that of
every argparse command line), and an interpreter that only imports attrs (that of every
command that decodes).  Commands run from the benchmarks' virtual environment
(_process.installed).

    python3 bench/bench_startup.py [--rounds N]

Prints a line per measure and the same as one JSON line.
"""

from __future__ import annotations

import argparse

from _process import emit, installed, pair

TARGET_SECONDS = 0.04
#: the floor of a command line built on argparse: the smallest program that prints its
#: help (argparse brings re and gettext with it)
ARGPARSE_HELP = (
    "import argparse; p = argparse.ArgumentParser(prog='x', description='y'); "
    "p.add_argument('--a'); p.parse_args(['-h'])"
)


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
        ("argparse program --help", [python, "-c", ARGPARSE_HELP]),
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
