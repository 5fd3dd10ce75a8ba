"""``vmstate describe NAME|FILE [SECTION]``: a description as a readable tree.

FILE is any description source (vmstate.sources): a description file, a QEMU
``-dump-vmstate``, a vmdesc, a migration stream or libvirt save image (its
vmdesc), ``-`` or a pipe; SECTION picks one of the descriptions it holds (a
device type of a dump, a section of a stream), else every one is described.
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from vmstate.description import Description


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Show a description field by field: kinds, sizes on the wire, since-versions, "
        "exists-tests, nested structs, subsections and hooks. It comes from a description "
        "file, a QEMU -dump-vmstate, a vmdesc or a migration stream, or is a shipped or "
        "registered description named by NAME."
    )
    p.add_argument(
        "target",
        metavar="NAME|FILE",
        help="a description file, -dump-vmstate JSON, vmdesc, stream or libvirt save image "
        "(any existing file, - or a pipe; a .toml path even when missing), else a known "
        "description's name (shipped or registered)",
    )
    p.add_argument(
        "section",
        nargs="?",
        metavar="SECTION",
        help="of the descriptions FILE holds, this one only: a device type of a dump, a "
        "section of a stream or vmdesc (its id string), or a description's name",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="the description as data, in the layout of a description file",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from vmstate.describe import describe
    from vmstate.description_file import description_document

    found, single = _find(args.target, args.section)
    if args.json:
        documents = {key: description_document(desc) for key, desc in found}
        print(json.dumps(documents[found[0][0]] if single else documents, indent=2))
        return 0
    for n, (key, desc) in enumerate(found):
        head = "\n" if n else ""
        print(
            head + (describe(desc) if key == desc.name else f"== {key}\n{describe(desc)}"), end=""
        )
    return 0


def _is_path(target: str) -> bool:
    """A path, even a missing one ("cannot read" is then the error to show), rather than a
    description's name: those have no ``/`` and no file suffix."""
    from pathlib import Path

    suffixes = (".toml", ".json", ".gz", ".mig", ".save")
    return target == "-" or "/" in target or target.endswith(suffixes) or Path(target).exists()


def _find(target: str, section: str | None) -> tuple[list[tuple[str, Description]], bool]:
    """The descriptions *target* names, keyed as its source keys them, and whether it is
    one description by nature (a name, a description file) rather than a set."""
    from vmstate import registry
    from vmstate.errors import InputError, UsageError
    from vmstate.sources import load_description_set

    if not _is_path(target):
        if section is not None:
            raise UsageError(f"{target!r} is a description's name: it has no sections to pick")
        return [(target, registry.get(target))], True
    described = load_description_set(target)
    found = described.sections
    if section is None:
        return list(found.items()), target.endswith(".toml")
    if section in found:
        return [(section, found[section])], False
    named = [(key, desc) for key, desc in found.items() if desc.name == section]
    if named:
        return named, False
    import difflib

    close = difflib.get_close_matches(section, list(found), n=3)
    hint = f" (close: {', '.join(close)})" if close else ""
    raise InputError(f"no section or description {section!r} in it{hint}", target)
