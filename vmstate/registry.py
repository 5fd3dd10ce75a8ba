"""Descriptions by name: the shipped description files plus any registered in Python.

Device types are added by dropping a description file into ``descriptions/``
(shipped in the wheel as ``vmstate/_descriptions``) or by calling
:func:`register`, never by editing code that lists them.  Shipped files are
read on first use, so importing vmstate stays cheap.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from vmstate.description import Description
from vmstate.description_file import load_description_file
from vmstate.errors import DescriptionError, UsageError

__all__ = ["get", "load_directory", "names", "register", "shipped_directory"]

_REGISTERED: dict[str, Description] = {}
#: where each registered description came from, for messages about clashes
_ORIGIN: dict[str, str] = {}
_shipped_loaded = False


def shipped_directory() -> Path | None:
    """The shipped descriptions: in the wheel, else the source checkout's ``descriptions/``."""
    packaged = importlib.resources.files("vmstate") / "_descriptions"
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "descriptions"
    return checkout if checkout.is_dir() else None


def register(desc: Description, origin: str = "Python") -> None:
    """Make *desc* available under its name; a different one of the same name is an error."""
    old = _REGISTERED.get(desc.name)
    if old is None:
        _REGISTERED[desc.name] = desc
        _ORIGIN[desc.name] = origin
    elif old != desc:
        raise DescriptionError(
            f"a different description named {desc.name!r} is already registered "
            f"(from {_ORIGIN[desc.name]})",
            location=origin,
        )


def load_directory(path: str | os.PathLike[str]) -> list[Description]:
    """Register every ``*.toml`` description file in *path* (sorted by name)."""
    loaded = []
    for file in sorted(Path(path).glob("*.toml")):
        desc = load_description_file(file)
        register(desc, str(file))
        loaded.append(desc)
    return loaded


def _ensure_shipped() -> None:
    global _shipped_loaded
    if not _shipped_loaded:
        directory = shipped_directory()
        if directory is not None:
            load_directory(directory)
        _shipped_loaded = True


def get(name: str) -> Description:
    """The description named *name*."""
    _ensure_shipped()
    try:
        return _REGISTERED[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTERED)) or "none"
        raise UsageError(f"no description named {name!r} (known: {known})") from None


def names() -> list[str]:
    """Names of every known description, sorted."""
    _ensure_shipped()
    return sorted(_REGISTERED)
