"""``vmstate encode DOCUMENT -o FILE``: a migration stream from what ``vmstate analyze
--format json`` printed, edited or not (see vmstate.stream_document)."""

from __future__ import annotations

import argparse

#: the largest document read (it is held in memory; RAM belongs in references)
MAX_DOCUMENT = 1 << 30


def register(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Write the migration stream a document of `vmstate analyze --format json` describes: "
        "unedited, the very bytes of the analyzed stream; edited, the stream with the edits, "
        "each section encoded from its state. The result is parsed again before it is "
        "written (atomically), so an edit that breaks the stream is refused, naming the field."
    )
    p.add_argument(
        "document",
        metavar="DOCUMENT",
        help="the JSON of analyze --format json (a file, - or a pipe; at most 1 GiB)",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="the stream, written atomically; - writes to standard output",
    )
    p.add_argument(
        "--source",
        metavar="FILE",
        help="read bytes kept by reference from FILE instead of the file the document names "
        "(their checksums must still match)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from vmstate._files import atomic_output, writes_stdout
    from vmstate.encode import encode
    from vmstate.errors import InputError, LimitError
    from vmstate.inputs import open_stream
    from vmstate.progress import TerminalProgress

    with open_stream(args.document, max_size=MAX_DOCUMENT) as opened:
        if len(opened.data) > MAX_DOCUMENT:
            raise LimitError("document too large", offset=MAX_DOCUMENT, path=(args.document,))
        try:
            doc = json.loads(bytes(opened.data))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"not JSON: {e}", args.document) from None
        except RecursionError:
            raise InputError("JSON nests too deeply", args.document) from None
    with TerminalProgress("encoding") as progress, atomic_output(args.output) as out:
        parsed = encode(doc, out, source=args.source, progress=progress)
    report = sys.stderr if writes_stdout(args.output) else sys.stdout
    from vmstate.render import count

    sections = count(len(parsed.sections), "section")
    print(f"encoded {parsed.size} bytes, {sections}, to {args.output}", file=report)
    return 0
