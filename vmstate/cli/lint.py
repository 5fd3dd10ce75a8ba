"""``vmstate lint FILES...``: every problem of every description file, in one run.

Loading stops at a file's first error; authors want the whole list, each at
its ``file:line:col``, so they can fix them all before the next run.  A file
that cannot be read as text is one problem of that file; the others are
still checked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import Any

    from vmstate.description_file import Diagnostic


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Check description files and list every problem, one line each "
        "(file:line:col: error|warning: message [code]). Exit 1 when there is an error, "
        "0 when there are only warnings or none."
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="description files (.toml); a directory stands for the *.toml files in it; "
        "- reads standard input",
    )
    p.add_argument("--json", action="store_true", help="one JSON object: counts and every problem")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from vmstate.description_file import check_description_file

    files = _expand(args.files)
    problems = sorted(
        (p for f in files for p in check_description_file(f)),
        key=lambda p: (p.source, p.line, p.col),
    )
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    if args.json:
        print(
            json.dumps(
                {
                    "files": len(files),
                    "errors": errors,
                    "warnings": warnings,
                    "problems": [_to_json(p) for p in problems],
                },
                indent=2,
            )
        )
    else:
        for p in problems:
            print(p)
        print(
            f"{_count(errors, 'error')}, {_count(warnings, 'warning')} in {_count(len(files), 'file')}"
        )
    return 1 if errors else 0


def _expand(paths: list[str]) -> list[str]:
    """*paths* with each directory replaced by its ``*.toml`` files."""
    from vmstate.errors import InputError

    files: list[str] = []
    for text in paths:
        path = Path(text)
        if text != "-" and path.is_dir():
            found = sorted(path.glob("*.toml"))
            if not found:
                raise InputError("no .toml files in this directory", text)
            files.extend(map(str, found))
        else:
            files.append(text)
    return files


def _to_json(p: Diagnostic) -> dict[str, Any]:
    return {
        "file": p.source,
        "line": p.line,
        "col": p.col,
        "severity": p.severity,
        "code": p.code,
        "message": p.message,
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
