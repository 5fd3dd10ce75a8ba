"""Targets that feed migration streams: real QEMU 7.2 and 10.0 streams changed where
their structure is, streams without vmdesc fitted to a dump, postcopy commands and
packages, RAM records and mapped-ram files extracted to disk, libvirt save images."""

from __future__ import annotations

import functools
import random
import struct
import tempfile
from pathlib import Path
from typing import Any

from fuzz import corpus
from fuzz import formats as X
from fuzz import generate as G
from fuzz.checks import located, require
from vmstate import analyze, ram_extract, stream
from vmstate.errors import VMStateError
from vmstate.vmdesc import resolver_from_vmdesc


@functools.cache
def _resolver(name: str) -> Any:
    """The descriptions of a real stream's vmdesc, built once: equal to what parsing
    builds from an unchanged vmdesc, without building them again for every input."""
    real = next(r for r in corpus.real_streams() if r.name == name)
    return resolver_from_vmdesc(real.vmdesc or {})


def real_stream(rng: random.Random) -> None:
    """A window of a real stream with a vmdesc, changed where its structure is."""
    w = corpus.window(rng, rng.choice([r for r in corpus.real_streams() if r.vmdesc]))
    data = w.data
    for _ in range(rng.randint(1, 3)):
        data = G.stream_mutation(rng, data, list(w.sections), w.vmdesc_at)
    same_vmdesc = w.vmdesc_at is not None and data[w.vmdesc_at :] == w.data[w.vmdesc_at :]
    resolver = _resolver(w.name) if same_vmdesc and rng.random() < 0.8 else None
    use(data, rng, resolver)


def use(data: bytes, rng: random.Random, resolver: Any = None, **options: Any) -> None:
    """Parse a stream, then use what was decoded the ways the commands do (the slower
    ways now and then: they repeat what the fast ones reach)."""
    from vmstate import qemu_vfio, vfio_section
    from vmstate.render import render_stream

    try:
        parsed = stream.parse(data, resolver, raw=vfio_section.raw_sections, **options)
    except VMStateError as e:
        located(e, len(data))
        return
    if rng.random() < 0.3:  # analyze --format qemu
        analyze.qemu_state(parsed)
    try:
        devices = qemu_vfio.gather(parsed, data, None)
    except VMStateError as e:
        located(e, len(data))
        devices = ()
    if rng.random() < 0.2:
        checked, _ = analyze.verify_roundtrip(parsed, data)
        require(checked == len(parsed.device_sections()), "verify skipped a section")
        qemu_vfio.verify(devices, data)
    if rng.random() < 0.02 and resolver is None and "fitter" not in options:
        render_stream(data)
    if rng.random() < 0.3:  # analyze --format json
        for section in parsed.device_sections():
            assert section.description is not None and section.state is not None
            section.description.to_json(section.state)


def _dump_for(w: corpus.Window) -> Path | None:
    """The -dump-vmstate of the QEMU and machine type that wrote a real stream."""
    if w.dump is not None:
        return w.dump
    machine = stream.stream_machine(w.data)
    directory = corpus.DATA / ("qemu-10.0" if "10.0" in w.name or "7.2-" in w.name else "qemu")
    path = directory / f"dump-{machine}.json"
    return path if machine and path.exists() else None


def fitted(rng: random.Random) -> None:
    """A stream without vmdesc read with its source QEMU's dump: QEMU 10.0's own, or a
    real stream's vmdesc cut off; the fitting sees changed sections."""
    from vmstate.dump_layout import DumpLayouts

    w = corpus.window(rng, most=3)
    dump = _dump_for(w)
    if dump is None:
        return
    data = w.data[: w.vmdesc_at] if w.vmdesc_at is not None else w.data
    for _ in range(rng.randint(0, 2)):
        data = G.stream_mutation(rng, data, list(w.sections), None)
    use(data, rng, fitter=DumpLayouts(corpus.description_set(dump), max_steps=500))


def _command(number: int, data: bytes = b"") -> bytes:
    return b"\x08" + struct.pack(">HH", number, len(data)) + data


def commands(rng: random.Random) -> None:
    """Postcopy as QEMU 10.0 writes it: OPEN_RETURN_PATH, PING, POSTCOPY_ADVISE before
    the RAM, device sections in a PACKAGED command with LISTEN and RUN, no vmdesc;
    commands changed, added, and packages of the wrong size."""
    real = rng.choice([r for r in corpus.real_streams() if r.vmdesc])
    w = corpus.window(rng, real, most=3)
    first, last = w.sections[0][0], w.sections[-1][1]
    ram_start = w.data[len(real.head) : first]
    sections = w.data[first:last]
    package = _command(4) + sections + _command(5)
    size = len(package) + G.pick(rng, [0, 0, 0, -1, 1, -5, 2**31])
    advise = struct.pack(">QQ", 4096, 4096)
    out = bytearray(real.head + _command(1) + _command(2, b"\0\0\0\1") + _command(3, advise)
                    + ram_start + _command(7, struct.pack(">I", size % 2**32)))
    package_at = len(out)
    out += package
    out += w.data[last:] if w.vmdesc_at is None else w.data[last : w.vmdesc_at]
    for _ in range(rng.randint(0, 3)):
        at = rng.randrange(len(real.head), len(out))
        op = rng.randrange(3)
        if op == 0:
            number = G.pick(rng, [*range(13), 0xFFFF])
            out[at:at] = _command(number, rng.randbytes(G.pick(rng, [0, 0, 4, 8, 16, 3])))
        elif op == 1:
            out[at] = G.pick(rng, [0, 1, 2, 3, 7, 8, 0xFF, rng.randrange(256)])
        else:
            span = (package_at, min(package_at + len(package), len(out)))
            out = bytearray(G.stream_mutation(rng, bytes(out), [span], None))
    use(bytes(out), rng, _resolver(real.name))


def ram(rng: random.Random) -> None:
    """RAM sections with hostile blocks and records, extracted to files; or well-formed
    ones of several passes, extracted exactly as QEMU would load them."""
    if rng.random() < 0.5:
        extract(G.ram_section(rng))
    else:
        extract(*G.ram_passes(rng))


def extract(data: bytes, expected: dict[str, bytes] | None = None) -> None:
    """Parse with a RamExtractor: only vmstate errors, no file outside its directory,
    one file per block, and (given *expected*) exactly the pages the stream holds."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "ram"
        extractor = ram_extract.RamExtractor(target, data)
        try:
            parsed = stream.parse(data, page_sink=extractor)
        except VMStateError as e:
            extractor.abandon()
            located(e, len(data))
            require(list(Path(tmp).iterdir()) == [], "a refused stream left files behind")
            return
        except BaseException:
            extractor.abandon()
            raise
        files = extractor.finish(parsed.ram_blocks)
        require(len(files) == len(parsed.ram_blocks), "a RAM block has no file of its own")
        require(all(p.parent == target for p in files), "a file written outside its directory")
        for block in parsed.ram_blocks:
            path = target / ram_extract.ram_file_name(block)
            require(path.stat().st_size == block.length, f"{path.name}: not the block's length")
            if expected is not None:
                require(path.read_bytes() == expected[block.name], f"{block.name}: other pages")


def mapped_ram(rng: random.Random) -> None:
    """A mapped-ram file (QEMU 9.0+, file: URIs): block headers, bitmaps and pages at
    fixed offsets, device sections after them; extracted, it gives the pages it holds."""
    data, pages, spans = G.mapped_ram_stream(rng)
    if rng.random() < 0.7:
        start, end = G.pick(rng, spans)
        if rng.random() < 0.5 and end - start == 28:  # a header field to an edge value
            at = start + G.pick(rng, [0, 4, 12, 20])
            width = 4 if at == start else 8
            value = G.pick(rng, [0, 1, 2, 511, 4096, len(data), len(data) - 8, 2**(8 * width) - 1,
                                 G.interesting_int(rng) % 2**(8 * width)])
            data = data[:at] + value.to_bytes(width, "big") + data[at + width :]
        else:
            data = X.mutate_bytes(rng, data, start, end)
        pages = None
    extract(data, pages)


def libvirt_image(rng: random.Random) -> None:
    """A libvirt save image around a real stream window, raw or compressed, broken in
    its header, XML or compressed data; read as analyze and check --stream read it."""
    from vmstate.inputs import open_stream

    w = corpus.window(rng, rng.choice([r for r in corpus.real_streams() if r.vmdesc]), most=2)
    fmt = G.pick(rng, ["raw", "raw", "gzip", "bzip2", "xz", "zstd"] * 20 + ["lzop", "sparse"])
    image, intact = X.save_image(rng, w.data, fmt)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vm.save"
        path.write_bytes(image)
        try:
            with open_stream(path) as opened:
                inner = bytes(opened.data)
        except VMStateError as e:
            require(not intact, f"a well-formed {fmt} image refused: {e}")
            located(e, len(image))
            return
    require(inner == w.data or not intact, f"a well-formed {fmt} image read otherwise")
    if inner == w.data:
        use(inner, rng, _resolver(w.name))
    else:
        use(inner, rng)
