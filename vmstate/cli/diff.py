"""``vmstate diff A B``: field-level differences of two streams (or saved device states,
which are streams), or of two description sets."""

from __future__ import annotations

import argparse
from contextlib import ExitStack

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import Any

    from vmstate.diff import Difference
    from vmstate.inputs import StreamInput
    from vmstate.stream import Stream


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Compare two migration streams or libvirt save images, two files of vmstate save, "
        "or two description sets (-dump-vmstate, vmdesc, description files), field by field: "
        "each line is a section or device, a field path, old -> new, and for streams the "
        "offset in each. Exit 0 when they are the same, 1 when they differ."
    )
    p.add_argument("a", metavar="A", help="a stream, saved state or description set; - or a pipe")
    p.add_argument("b", metavar="B", help="of the same sort as A")
    p.add_argument("--json", action="store_true", help="one JSON object: every difference")
    p.add_argument(
        "--descriptions",
        metavar="DIR|FILE",
        help="decode both streams with these descriptions (needed for streams without vmdesc: "
        "the source QEMU's -dump-vmstate)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from vmstate.errors import UsageError

    if args.a == "-" and args.b == "-":
        raise UsageError("standard input can be only one of A and B")
    kinds = {_is_stream(args.a), _is_stream(args.b)}
    if kinds == {True}:
        found = _streams(args.a, args.b, args.descriptions)
        sort = "streams"
    elif kinds == {False}:
        if args.descriptions:
            raise UsageError("--descriptions goes with streams")
        from vmstate.diff import diff_descriptions
        from vmstate.sources import load_description_set

        found = diff_descriptions(load_description_set(args.a), load_description_set(args.b))
        sort = "description sets"
    else:
        _refuse_mixed(args.a, args.b, args.descriptions)
    if args.json:
        out: dict[str, Any] = {
            "a": args.a,
            "b": args.b,
            "compared": sort,
            "same": not found,
            "differences": [d.to_json() for d in found],
        }
        print(json.dumps(out, indent=2))
    else:
        _print(args.a, args.b, found)
    return 1 if found else 0


def _is_stream(name: str) -> bool | None:
    """Whether *name* holds a stream (or a libvirt save image), from its first bytes;
    ``-`` and pipes are read as streams (description sets are files)."""
    import os
    import stat

    from vmstate.libvirt_save import is_save_image
    from vmstate.stream import MAGIC

    if name == "-" or (os.path.exists(name) and not stat.S_ISREG(os.stat(name).st_mode)
                       and not os.path.isdir(name)):
        return True
    if os.path.isdir(name) or name.endswith(".toml"):
        return False
    with open(name, "rb") as f:
        head = f.read(16)
    magic = MAGIC.to_bytes(4, "big")
    return (bool(head) and magic.startswith(head[:4])) or is_save_image(head)


def _refuse_mixed(a: str, b: str, descriptions: str | None) -> None:
    """Refuse a stream and something else: a description set is named as such; what is
    none is read as the stream it is meant to be, and refused as one (no stream,
    cut short)."""
    from vmstate.errors import InputError, VMStateError
    from vmstate.sources import load_description_set

    try:
        load_description_set(b if _is_stream(a) else a)
    except VMStateError:
        _streams(a, b, descriptions)
        raise
    raise InputError(f"one of {a} and {b} is a stream, the other a description set")


def _streams(a: str, b: str, descriptions: str | None) -> list[Difference]:
    from vmstate.diff import diff_streams
    from vmstate.inputs import open_stream

    with ExitStack() as stack:
        opened_a = stack.enter_context(open_stream(a))
        opened_b = stack.enter_context(open_stream(b))
        parsed_a, parsed_b = _parse(opened_a, descriptions), _parse(opened_b, descriptions)
        return diff_streams(parsed_a, opened_a.data, parsed_b, opened_b.data)


def _parse(opened: StreamInput, descriptions: str | None) -> Stream:
    import attrs

    from vmstate import stream, vfio_section
    from vmstate.errors import DecodeError
    from vmstate.progress import TerminalProgress
    from vmstate.sources import Decoder, load_decoder

    decoder = load_decoder(descriptions) if descriptions else Decoder()
    with TerminalProgress(f"reading {opened.name}") as progress:
        try:
            return stream.parse(
                opened.data,
                decoder.resolver,
                raw=vfio_section.raw_sections,
                fitter=decoder.layouts,
                progress=progress,
            )
        except DecodeError as e:  # named by its file: "stream" says nothing with two
            inner = e.path[1:] if e.path[:1] == ("stream",) else e.path
            raise attrs.evolve(e, path=(opened.name, *inner)) from None


def _print(a: str, b: str, found: list[Difference]) -> None:
    from vmstate.render import count

    print(f"A: {a}\nB: {b}")
    for difference in found:
        print(difference)
    print(f"{count(len(found), 'difference')}" if found else "the same")
