"""``vmstate describe NAME|FILE``: a description as a readable tree."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vmstate import registry
from vmstate.describe import describe
from vmstate.description import Description
from vmstate.description_file import load_description_file


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "describe",
        help="show a description as a tree",
        description="Show a description field by field: kinds, sizes on the wire, since-versions, "
        "exists-tests, nested structs, subsections and hooks.",
    )
    p.add_argument(
        "target",
        metavar="NAME|FILE",
        help="a description file (a .toml path or any existing file), else a known description's "
        "name (shipped or registered)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(describe(_find(args.target)), end="")
    return 0


def _find(target: str) -> Description:
    """A ``.toml`` path is a file even when missing: "cannot read" is the error to show."""
    if target.endswith(".toml") or Path(target).is_file():
        return load_description_file(target)
    return registry.get(target)
