"""What the fuzzer feeds inputs to, and what it requires of the result.

A target makes one input from a seed and runs it through the library.  The
promise under test is the README's: whatever the input, only a
:class:`~vmstate.errors.VMStateError` comes out, a decode error names a path
and an offset inside the input, and the command line answers in one line with
exit status 0 or 1.  Targets also check the invariants that hold whenever an
input is accepted (what loads re-encodes the same way, what a description file
reads back is equal), since those are where wrong answers hide.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fuzz import generate as G
from vmstate import analyze, stream
from vmstate.errors import DecodeError, VMStateError
from vmstate.predicates import parse_condition


class InvariantError(AssertionError):
    """An accepted input broke a promise (not a foreign exception, but as bad)."""


def require(ok: bool, what: str) -> None:
    if not ok:
        raise InvariantError(what)


def located(e: VMStateError, size: int) -> None:
    """A decode error must say where: a path, and an offset inside the input."""
    if isinstance(e, DecodeError):
        require(bool(e.path), f"decode error without a path: {e}")
        require(0 <= e.offset <= size, f"offset {e.offset} outside 0..{size}: {e}")
    require("\n" not in str(e), f"error text spans lines: {e!r}")


# -- targets ------------------------------------------------------------------------


def interpreter(rng: random.Random) -> None:
    """A random description on random or saved-then-broken bytes, both paths."""
    desc = G.description(rng)
    version = rng.randint(desc.minimum_version_id, desc.version_id)
    if rng.random() < 0.5:
        data = rng.randbytes(rng.randint(0, 120))
    else:
        try:
            data = desc.save(G.state(rng, desc), version)
        except VMStateError:
            return
        if data and rng.random() < 0.8:
            broken = bytearray(data)
            broken[rng.randrange(len(broken))] = rng.randrange(256)
            data = bytes(broken[: rng.randint(0, len(broken))] if rng.random() < 0.3 else broken)
    try:
        state, end = desc.load_from(data, 0, version, checks=False)
    except VMStateError as e:
        located(e, len(data))
        try:
            desc.trace(data, 0, version)
        except VMStateError as again:
            require((type(again), again.path, again.offset) == (type(e), e.path, e.offset),
                    f"paths disagree: {e} / {again}")
            return
        raise InvariantError(f"only the fast path refused: {e}") from None
    span = desc.trace(data, 0, version)
    require(repr(span.value) == repr(state) and span.end == end, "paths decode differently")
    again = desc.save(state, version)
    require(repr(desc.load(again, version)) == repr(state), "a loaded state re-encodes otherwise")
    require(repr(desc.from_json(json.loads(json.dumps(desc.to_json(state))))) == repr(state),
            "the JSON round trip changes the state")


def description_file(rng: random.Random) -> None:
    """Description-file text: lint lists problems, a file that loads reads back equal."""
    from vmstate.description_file import (
        check_description_text,
        dump_description,
        load_description_text,
    )

    text = G.description_file(rng)
    problems = check_description_text(text, "fuzz.toml")
    try:
        desc = load_description_text(text, "fuzz.toml")
    except VMStateError:
        require(any(p.severity == "error" for p in problems), "refused without a lint error")
        return
    require(all(p.severity != "error" for p in problems), "loaded despite a lint error")
    require(load_description_text(dump_description(desc)) == desc, "dump does not read back")
    data = rng.randbytes(rng.randint(0, 64))
    try:
        desc.load(data)
    except VMStateError as e:
        located(e, len(data))


def condition(rng: random.Random) -> None:
    """A condition on values of every type a field can hold."""
    names = ["a", "b", "c"]
    try:
        cond = parse_condition(G.condition(rng, names))
    except VMStateError:
        return
    values = {n: G.pick(rng, [G.interesting_int(rng), b"\x01", [1, 2], {"x": 1}, 1.5,
                              float("nan"), True, 2]) for n in names if rng.random() < 0.9}

    class Scope:
        version_id = rng.randint(0, 5)

        def lookup(self, name: str) -> Any:
            return self.version_id if name == "version_id" else values[name]

        def has(self, name: str) -> bool:
            return name in values

    with contextlib.suppress(VMStateError):
        cond(Scope())


def vmdesc(rng: random.Random) -> None:
    """A stream of one section described by a generated vmdesc tree."""
    entry = G.vmdesc_entry(rng)
    entry.update(name="dev", instance_id=0)
    tree: Any = {"page_size": G.pick(rng, [4096, 4096, 0, 3, "x"]), "devices": [entry]}
    if rng.random() < 0.05:
        tree = G.pick(rng, [[], None, {"devices": {}}, {"devices": [1]}])
    data = G.one_section_stream(rng, rng.randbytes(rng.randint(0, 80)), tree,
                                version=entry.get("version", 1) if isinstance(entry.get("version"), int) else 1)
    _parse_and_use(data, rng)


def real_stream(rng: random.Random) -> None:
    """A real QEMU stream (device sections only) changed where its structure is."""
    _name, data, sections, vmdesc_at = G.pick(rng, _real_streams())
    for _ in range(rng.randint(1, 3)):
        data = G.stream_mutation(rng, data, sections, vmdesc_at)
    _parse_and_use(data, rng)


def ram(rng: random.Random) -> None:
    """RAM sections with hostile blocks and records, extracted to files."""
    data = G.ram_section(rng)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "ram"
        extractor = analyze.RamExtractor(target)
        try:
            parsed = stream.parse(data, page_sink=extractor)
        except VMStateError as e:
            extractor.abandon()
            located(e, len(data))
            return
        except BaseException:
            extractor.abandon()
            raise
        try:
            files = extractor.finish(parsed.ram_blocks)
        except VMStateError:
            return
        require(len(files) == len(parsed.ram_blocks), "a RAM block has no file of its own")
        for path in files:
            require(path.parent == target, f"{path} written outside {target}")


def qemu_dump(rng: random.Random) -> None:
    """-dump-vmstate JSON: a real dump with nodes changed, then compared with itself."""
    from vmstate.compat import DescriptionSet, compare
    from vmstate.qemu_dump import parse_qemu_dump

    tree = json.loads(json.dumps(_real_dump()))
    for _ in range(rng.randint(1, 4)):
        G._mutate_json(rng, tree, 0)
    try:
        dump = parse_qemu_dump(tree, "fuzz.json")
    except VMStateError:
        return
    sections = {dev.type_name: dev.description for dev in dump.devices}
    compare(DescriptionSet(sections, kind="dump"), DescriptionSet(sections, kind="dump"))


def cli(rng: random.Random) -> None:
    """The command line on generated files: one line and exit status 0 or 1."""
    from vmstate.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input"
        kind = rng.randrange(3)
        if kind == 0:
            _, data, sections, at = G.pick(rng, _real_streams())
            path.write_bytes(G.stream_mutation(rng, data, sections, at))
            argv = G.pick(rng, [["analyze", str(path)], ["analyze", str(path), "--format", "qemu"],
                                ["analyze", str(path), "--format", "json"],
                                ["analyze", str(path), "--verify-roundtrip"],
                                ["show", str(path)]])
        elif kind == 1:
            path = path.with_suffix(".toml")
            path.write_text(G.description_file(rng))
            argv = G.pick(rng, [["lint", str(path)], ["describe", str(path)]])
        else:
            path.write_bytes(G.ram_section(rng))
            argv = ["analyze", str(path), "--extract-ram", str(Path(tmp) / "ram")]
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:
                code = int(e.code or 0)
        text = err.getvalue()
        require(code in (0, 1), f"{argv[0]} exited {code}: {text}")
        require("Traceback" not in text and text.count("\n") <= 1,
                f"{argv[0]} wrote more than one line: {text!r}")


def _parse_and_use(data: bytes, rng: random.Random) -> None:
    """Parse a stream, then use what was decoded the ways the commands do (the
    slower ways now and then: they repeat what the fast ones reach)."""
    from vmstate.render import render_stream

    try:
        parsed = stream.parse(data)
    except VMStateError as e:
        located(e, len(data))
        return
    analyze.qemu_state(parsed)
    if rng.random() < 0.3:
        checked, _ = analyze.verify_roundtrip(parsed, data)
        require(checked == len(parsed.device_sections()), "verify skipped a section")
    if rng.random() < 0.05:
        render_stream(data)
    for section in parsed.device_sections():
        assert section.description is not None and section.state is not None
        section.description.to_json(section.state)


@functools.cache
def _real_streams() -> list[tuple[str, bytes, list[tuple[int, int]], int | None]]:
    """Real streams with the RAM section cut out: (name, bytes, section spans, vmdesc)."""
    out = []
    for directory in G.QEMU_DATA:
        for path in sorted(directory.glob("*.mig")):
            full = path.read_bytes()
            try:
                parsed = stream.parse(full)
            except VMStateError:
                continue
            if parsed.vmdesc_offset is None:
                continue
            first = min(s.header_offset for s in parsed.sections)
            data = bytearray(full[:first])
            spans = []
            for s in parsed.device_sections():
                start = len(data)
                end = s.end + (5 if s.end < len(full) and full[s.end] == stream.FOOTER else 0)
                data += full[s.header_offset : end]
                spans.append((start, start + (s.end - s.header_offset)))
            data.append(stream.EOF)
            at = len(data)
            data += full[parsed.vmdesc_offset :]
            out.append((path.name, bytes(data), spans, at))
    return out


@functools.cache
def _real_dump() -> Any:
    import gzip

    path = G.QEMU_DATA[0] / "dump-pc-q35-7.2.json"
    raw = path.read_bytes() if path.exists() else gzip.decompress(path.with_suffix(
        ".json.gz").read_bytes())
    tree = json.loads(raw)
    keep = ["vmschkmachine", "e1000", "piix4_pm", "usb-ehci-pci", "ich9-ahci", "virtio-net-pci"]
    return {k: v for k, v in tree.items() if k in keep}


TARGETS: dict[str, Callable[[random.Random], None]] = {
    "interpreter": interpreter,
    "description_file": description_file,
    "condition": condition,
    "vmdesc": vmdesc,
    "real_stream": real_stream,
    "ram": ram,
    "qemu_dump": qemu_dump,
    "cli": cli,
}
#: how many inputs of each a run makes per 100 (cheap targets more, slow ones fewer)
WEIGHTS = {"interpreter": 150, "description_file": 80, "condition": 400, "vmdesc": 300,
           "real_stream": 20, "ram": 30, "qemu_dump": 15, "cli": 5}
