"""Inputs that used to escape as foreign exceptions or drive writes (issue 12): each
test here failed before its fix.  The fuzzer (fuzz/, tests/test_fuzz.py) looks for
more of them; these pin the ones it and the issue found."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from vmstate import analyze, ram_extract, sources, stream
from vmstate.cli import main
from vmstate.description_file import check_description_text
from vmstate.errors import DecodeError, DescriptionError, LimitError, VMStateError
from vmstate.inputs import open_stream
from vmstate.waivers import load_waivers

QEMU = Path(__file__).parent / "data" / "qemu"


def one_section(fields: list[dict[str, Any]], payload: bytes) -> bytes:
    """QEVM, one FULL section "dev" with a footer, EOF, and a vmdesc describing it."""
    out = b"QEVM" + struct.pack(">I", 3)
    out += b"\x04" + struct.pack(">IB", 0, 3) + b"dev" + struct.pack(">II", 0, 1)
    out += payload + b"\x7e" + struct.pack(">I", 0)
    entry = {"name": "dev", "instance_id": 0, "vmsd_name": "dev", "version": 1, "fields": fields}
    body = json.dumps({"page_size": 4096, "devices": [entry]}).encode()
    return out + b"\x00\x06" + struct.pack(">I", len(body)) + body


def test_an_array_of_structs_of_no_bytes_decodes() -> None:
    """vmdesc: an array whose element is a struct of total size 0 (its only field an
    empty array) once escaped from the fast array path as a ValueError."""
    empty = {"vmsd_name": "s", "version": 1, "fields": [
        {"name": "x", "type": "uint8", "size": 1, "array_len": 0}]}
    data = one_section(
        [{"name": "a", "type": "struct", "size": 0, "array_len": 3, "struct": empty},
         {"name": "b", "type": "uint8", "size": 1}],
        b"\x2a",
    )
    parsed = stream.parse(data)
    (section,) = parsed.device_sections()
    assert section.state == {"a": [{"x": []}] * 3, "b": 42}
    assert analyze.verify_roundtrip(parsed, data) == (1, ())


# -- RAM: pages, block names, files ---------------------------------------------------

RAM_EOS, RAM_MEM_SIZE, RAM_PAGE, RAM_ZERO, RAM_CONTINUE = 0x10, 0x04, 0x08, 0x02, 0x20


def ram_stream(blocks: list[tuple[bytes, int]], records: list[tuple[int, int, bytes | None, bytes]]
               ) -> tuple[bytes, list[int]]:
    """A stream whose ram section lists *blocks* (name, length), then has *records*
    (address, flags, block name or None for CONTINUE, payload); also the offset of
    every record."""
    out = bytearray(b"QEVM" + struct.pack(">I", 3))
    out += b"\x01" + struct.pack(">IB", 0, 3) + b"ram" + struct.pack(">II", 0, 4)
    out += struct.pack(">Q", sum(size for _, size in blocks) | RAM_MEM_SIZE)
    for name, size in blocks:
        out += bytes([len(name)]) + name + struct.pack(">Q", size)
    at = []
    for addr, flags, name, payload in records:
        at.append(len(out))
        out += struct.pack(">Q", addr | flags)
        if name is not None:
            out += bytes([len(name)]) + name
        out += payload
    out += struct.pack(">Q", RAM_EOS) + b"\x7e" + struct.pack(">I", 0)
    body = b'{"page_size": 4096, "devices": []}'
    out += b"\x00\x06" + struct.pack(">I", len(body)) + body
    return bytes(out), at


def extract(data: bytes, target: Path) -> list[Path]:
    extractor = ram_extract.RamExtractor(target, data)
    try:
        parsed = stream.parse(data, page_sink=extractor)
    except BaseException:
        extractor.abandon()
        raise
    return extractor.finish(parsed.ram_blocks)


def test_a_page_past_its_block_is_refused_where_its_record_is(tmp_path: Path) -> None:
    data, at = ram_stream(
        [(b"pc.ram", 8192)],
        [(0, RAM_PAGE, b"pc.ram", b"\x11" * 4096), (1 << 50, RAM_ZERO | RAM_CONTINUE, None, b"\x22")],
    )
    with pytest.raises(DecodeError) as info:
        extract(data, tmp_path / "ram")
    e = info.value
    assert (e.offset, e.path, e.found) == (at[1], ("ram", "pc.ram"), f"{1 << 50:#x}")
    assert "outside its block" in str(e)
    assert not (tmp_path / "ram").exists() and list(tmp_path.iterdir()) == []


#: a block length whose addresses are checked a byte column at a time, and one whose are not
BLOCK_LENGTHS = [8 << 20, (8 << 20) + 3 * 4096]


def _run(count: int, bad: int, word: int, page: bool = False) -> list[tuple[int, int, bytes | None, bytes]]:
    """*count* zero pages (or whole pages) continuing pc.ram, record *bad* of them with
    *word* as its address and flags instead."""
    flags, payload = (RAM_PAGE, b"\x44" * 4096) if page else (RAM_ZERO, b"\x00")
    records = [(0, RAM_PAGE, b"pc.ram", b"\x11" * 4096)]
    records += [((1 + i % 2047) * 4096, flags | RAM_CONTINUE, None, payload) for i in range(count)]
    records[1 + bad] = (word, 0, None, payload)
    return records


#: the two kinds of run skipped in bulk: flags, records in the test's run, the bad
#: records' places (either side of the edges of the chunks looked at together: 4096
#: zero-page records, 255 page records, after the first 16 of a run)
RUNS = {
    "zero pages": (RAM_ZERO, 9000, (0, 15, 16, 17, 4111, 4112, 4113, 8000, 8999)),
    "pages": (RAM_PAGE, 600, (0, 15, 16, 17, 270, 271, 272, 525, 599)),
}


@pytest.mark.parametrize(
    ("word", "error"),
    [
        (lambda length, flags: (1 << 30) | flags | RAM_CONTINUE, "outside its block"),
        (lambda length, flags: length | flags | RAM_CONTINUE, "outside its block"),
        (lambda length, flags: 4096 | 0x100 | flags | RAM_CONTINUE, "unsupported RAM record flags"),
        (lambda length, flags: 4096 | flags, "does not list"),
    ],
)
@pytest.mark.parametrize("length", BLOCK_LENGTHS)
@pytest.mark.parametrize("kind", RUNS)
def test_a_bad_record_deep_in_a_long_run_is_refused_where_it_is(
    word: Callable[[int, int], int], error: str, length: int, kind: str
) -> None:
    """Runs of zero pages and of whole pages are skipped many records at a time: a
    record that ends the run (an address past the block or at its length, a flag bit no
    record has, a block name), on either side of a chunk's edge, is still found at its
    own offset."""
    flags, count, places = RUNS[kind]
    for bad in places:
        records = _run(count, bad, word(length, flags), page=flags == RAM_PAGE)
        data, at = ram_stream([(b"pc.ram", length)], records)
        with pytest.raises(DecodeError, match=error) as info:
            stream.parse(data)
        assert info.value.offset in (at[1 + bad], at[1 + bad] + 8), (bad, info.value)


@pytest.mark.parametrize("sink", [False, True])
def test_a_page_past_its_block_among_continued_pages_is_refused_where_it_is(
    sink: bool, tmp_path: Path
) -> None:
    """Whole pages continuing a block take the fast path too: one past the block is
    refused at its own record, with or without a sink."""
    records: list[tuple[int, int, bytes | None, bytes]] = [(0, RAM_PAGE, b"pc.ram", b"\x11" * 4096)]
    for i in range(1, 40):
        flags = RAM_PAGE if i % 3 else RAM_ZERO
        records.append((i * 4096, flags | RAM_CONTINUE, None, b"\x22" * 4096 if i % 3 else b"\x00"))
    records.append((64 * 4096, RAM_PAGE | RAM_CONTINUE, None, b"\x33" * 4096))
    data, at = ram_stream([(b"pc.ram", 64 * 4096)], records)
    with pytest.raises(DecodeError, match="outside its block") as info:
        extract(data, tmp_path / "ram") if sink else stream.parse(data)
    assert info.value.offset == at[-1]


def test_a_long_run_of_zero_pages_reads_as_record_by_record(tmp_path: Path) -> None:
    """The same stream without a sink (runs skipped together) and with one (pages
    handed over, zero pages where it holds data told one by one): both read to the end,
    and the pages come out where they were."""
    records = _run(5000, 4000, 0)
    records[1 + 4000] = (4096 * 1500, RAM_PAGE | RAM_CONTINUE, None, b"\x33" * 4096)
    data, _ = ram_stream([(b"pc.ram", 8 << 20)], records)
    assert stream.parse(data).ram_blocks[0].length == 8 << 20
    (ram,) = extract(data, tmp_path / "ram")
    content = ram.read_bytes()
    assert content[:4096] == b"\x11" * 4096 and content[1500 * 4096 : 1501 * 4096] == b"\x33" * 4096
    assert content[4096 : 1500 * 4096].count(0) == 1499 * 4096


def test_a_page_sent_again_as_zero_is_zero_in_the_extracted_block(tmp_path: Path) -> None:
    """QEMU's ram_load clears a page a zero record names unless it is zero already
    (ram_handle_zero), so a page a later pass sends as zero is zero in the block:
    whether the zero page comes alone or in a run long enough to be skipped in bulk. A
    fill byte other than 0 fills the page; zero pages where nothing was written leave
    the file without data there (sparse)."""
    pages = 64
    first = [(0, RAM_PAGE, b"pc.ram", b"\x01" * 4096)]
    first += [(i * 4096, RAM_PAGE | RAM_CONTINUE, None, bytes([i]) * 4096) for i in range(1, pages)]
    again = [(i * 4096, RAM_ZERO | RAM_CONTINUE, None, b"\0") for i in range(0, pages, 2)]
    again += [(5 * 4096, RAM_ZERO | RAM_CONTINUE, None, b"\0")]
    again += [(7 * 4096, RAM_ZERO | RAM_CONTINUE, None, b"\x7e")]
    filled = pages + 40  # in a run of zero pages past all data
    above = [(i * 4096, RAM_ZERO | RAM_CONTINUE, None, b"\x7e" if i == filled else b"\0")
             for i in range(pages, 2 * pages)]  # fmt: skip
    last = [((pages - 1) * 4096, RAM_PAGE | RAM_CONTINUE, None, bytes([pages - 1]) * 4096)]
    data, _ = ram_stream([(b"pc.ram", 2 * pages * 4096)], first + again + last + above)
    (ram,) = extract(data, tmp_path / "ram")
    content = ram.read_bytes()
    for i in range(2 * pages):
        fill = 0x7E if i in (7, filled) else 0 if i % 2 == 0 or i == 5 or i >= pages else i
        assert content[i * 4096 : (i + 1) * 4096] == bytes([fill]) * 4096, i
    with ram.open("rb") as f:  # the zero pages past the data wrote nothing
        assert os.lseek(f.fileno(), pages * 4096, os.SEEK_DATA) == filled * 4096


def test_consecutive_pages_go_out_in_few_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages that follow each other in a block are written together (one system call
    per page cost more than the copy); pages elsewhere and other blocks start a new
    write.  The bytes are where the records put them."""
    writes = []
    pwritev = os.pwritev

    def counted(fd: int, parts: list[bytes], offset: int) -> int:
        writes.append((offset, len(parts)))
        return pwritev(fd, parts, offset)

    monkeypatch.setattr(os, "pwritev", counted)
    records = [(0, RAM_PAGE, b"pc.ram", b"\x00" * 4096)]
    records += [
        (i * 4096, RAM_PAGE | RAM_CONTINUE, None, bytes([i % 256]) * 4096) for i in range(1, 3000)
    ]
    records += [(5000 * 4096, RAM_PAGE | RAM_CONTINUE, None, b"\x55" * 4096)]
    records += [(0, RAM_PAGE, b"vga.vram", b"\x66" * 4096)]
    data, _ = ram_stream([(b"pc.ram", 32 << 20), (b"vga.vram", 1 << 20)], records)
    ram, vram = extract(data, tmp_path / "ram")
    run, rest = writes[:-2], writes[-2:]
    assert rest == [(5000 * 4096, 1), (0, 1)]  # a page elsewhere, another block: writes of their own
    assert [offset for offset, _ in run] == list(
        itertools.accumulate((parts * 4096 for _, parts in run[:-1]), initial=0)
    )
    assert sum(parts for _, parts in run) == 3000 and len(run) <= 12
    assert all(parts <= 512 for _, parts in run)  # about a mebibyte a write, at most two
    content = ram.read_bytes()
    assert all(content[i * 4096 : (i + 1) * 4096] == bytes([i % 256]) * 4096 for i in range(3000))
    assert content[5000 * 4096 : 5001 * 4096] == b"\x55" * 4096
    assert vram.read_bytes()[:4096] == b"\x66" * 4096


def test_short_writes_are_taken_up_where_they_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write may take fewer bytes than it was given (a signal, a disk about to be
    full): the rest goes out after it, from the byte where it stopped."""
    pwritev = os.pwritev

    def short(fd: int, parts: list[bytes], offset: int) -> int:
        data = b"".join(bytes(p) for p in parts)[:5000]  # a page and then some
        return pwritev(fd, [data], offset)

    monkeypatch.setattr(os, "pwritev", short)
    records = [(0, RAM_PAGE, b"pc.ram", b"\x00" * 4096)]
    records += [(i * 4096, RAM_PAGE | RAM_CONTINUE, None, bytes([i % 256]) * 4096) for i in range(1, 600)]
    data, _ = ram_stream([(b"pc.ram", 4 << 20)], records)
    (ram,) = extract(data, tmp_path / "ram")
    content = ram.read_bytes()
    assert all(content[i * 4096 : (i + 1) * 4096] == bytes([i % 256]) * 4096 for i in range(600))
    monkeypatch.setattr(os, "pwritev", lambda fd, parts, offset: 0)
    with pytest.raises(OSError, match="took no byte"):
        extract(data, tmp_path / "again")
    assert not (tmp_path / "again").exists()


def _rss_file_kib() -> int:
    """This process's resident file-backed memory (the kernel's RssFile)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def test_guest_ram_of_a_mapped_stream_is_walked_in_bounded_memory(tmp_path: Path) -> None:
    """32 MiB of page records in a mapped file: the walk lets go of the pages it has
    passed, and the extraction of those it has written, so the process holds a few MiB
    of the file, not all of it (the kernel's count); the result is the same as from
    bytes, and an error after the released part still shows its bytes."""
    pages = [(0, RAM_PAGE, b"pc.ram", bytes([1]) * 4096)]
    pages += [(i * 4096, RAM_PAGE | RAM_CONTINUE, None, bytes([i % 251]) * 4096) for i in range(1, 8192)]
    data, _ = ram_stream([(b"pc.ram", 8192 * 4096)], pages)
    path = tmp_path / "big.mig"
    path.write_bytes(data)
    with open_stream(path) as opened:
        before = _rss_file_kib()
        parsed = stream.parse(opened.data)
        grown = _rss_file_kib() - before
    assert parsed.ram_blocks == stream.parse(data).ram_blocks
    assert grown < 16 << 10, f"{grown} KiB of the 32 MiB file stayed resident"
    with open_stream(path) as opened:  # extracted: the pages written leave memory too
        extractor = ram_extract.RamExtractor(tmp_path / "ram", opened.data)
        before = _rss_file_kib()
        extractor.finish(stream.parse(opened.data, page_sink=extractor).ram_blocks)
        grown = _rss_file_kib() - before
    assert grown < 16 << 10, f"{grown} KiB of the 32 MiB file stayed resident"
    assert (tmp_path / "ram" / "pc.ram").read_bytes()[4096 * 300 : 4096 * 301] == bytes([300 % 251]) * 4096
    broken = data[: len(data) - 40] + b"\xff" * 8 + data[len(data) - 32 :]
    path.write_bytes(broken)
    with open_stream(path) as opened, pytest.raises(DecodeError) as info:
        stream.parse(opened.data)
    with pytest.raises(DecodeError) as from_bytes:
        stream.parse(broken)
    assert str(info.value) == str(from_bytes.value)


def test_device_sections_of_a_mapped_stream_leave_memory_as_they_are_read(tmp_path: Path) -> None:
    """24 device sections of 1 MiB each in a mapped file: the parse lets go of each
    section's pages once past it, so the file's pages the process holds stay a few MiB
    (the kernel's count), and the states are those read from bytes."""
    size = 1 << 20
    out = bytearray(b"QEVM" + struct.pack(">I", 3))
    devices = []
    for i in range(24):
        name = f"dev{i}".encode()
        out += b"\x04" + struct.pack(">IB", i, len(name)) + name + struct.pack(">II", 0, 1)
        out += bytes([i]) * size + b"\x7e" + struct.pack(">I", i)
        fields = [{"name": "blob", "type": "buffer", "size": size}]
        devices.append(
            {"name": name.decode(), "instance_id": 0, "vmsd_name": "d", "version": 1, "fields": fields}
        )
    body = json.dumps({"page_size": 4096, "devices": devices}).encode()
    data = bytes(out + b"\x00\x06" + struct.pack(">I", len(body)) + body)
    path = tmp_path / "devices.mig"
    path.write_bytes(data)
    with open_stream(path) as opened:
        before = _rss_file_kib()
        parsed = stream.parse(opened.data)
        grown = _rss_file_kib() - before
    assert [s.state for s in parsed.device_sections()] == [
        s.state for s in stream.parse(data).device_sections()
    ]
    assert grown < 6 << 10, f"{grown} KiB of the 24 MiB file stayed resident"


def test_a_page_at_the_block_length_is_outside_it_as_for_qemu() -> None:
    """QEMU's offset_in_ramblock: offset < used_length ("Illegal RAM offset")."""
    data, at = ram_stream([(b"pc.ram", 8192)], [(8192, RAM_ZERO, b"pc.ram", b"\x00")])
    with pytest.raises(DecodeError, match="outside its block") as info:
        stream.parse(data)
    assert info.value.offset == at[0]
    data, _ = ram_stream([(b"pc.ram", 8192)], [(4096, RAM_ZERO, b"pc.ram", b"\x00")])
    assert stream.parse(data).ram_blocks[0].length == 8192


def test_a_page_of_a_block_not_listed_is_refused() -> None:
    """QEMU's ram_block_from_stream: "Can't find block"."""
    data, at = ram_stream([(b"pc.ram", 8192)], [(0, RAM_ZERO, b"pc.rom", b"\x00")])
    with pytest.raises(DecodeError, match="does not list") as info:
        stream.parse(data)
    assert (info.value.offset, info.value.found) == (at[0] + 8, "pc.rom")


def test_a_block_listed_twice_is_refused() -> None:
    data, _ = ram_stream([(b"pc.ram", 4096), (b"pc.ram", 4096)], [])
    with pytest.raises(DecodeError, match="listed twice") as info:
        stream.parse(data)
    assert info.value.offset == 8 + 1 + 5 + 3 + 8 + 8 + 1 + 6 + 8


def test_blocks_whose_names_differ_get_files_of_their_own(tmp_path: Path) -> None:
    """"a/b" and "a_b" once went to one file, and "x\\0y" to open() as a ValueError."""
    names = [b"a/b", b"a_b", b"/a/b", b"x\x00y", b"..", b".", b"x\\x00y", b"\xff", b"\xfe"]
    records = [(0, RAM_ZERO, name, bytes([n + 1])) for n, name in enumerate(names)]
    data, _ = ram_stream([(name, 4096) for name in names], records)
    files = extract(data, tmp_path / "ram")
    assert len(files) == len(names) and all(f.parent == tmp_path / "ram" for f in files)
    by_name = {f.name: f.read_bytes() for f in files}
    assert by_name["a_b"] == b"\x01" * 4096 and by_name["a%5Fb"] == b"\x02" * 4096
    assert by_name["_a_b"] == b"\x03" * 4096 and by_name["%2E."] == b"\x05" * 4096
    blocks = stream.parse(data).ram_blocks
    # the file name gives the block's name back
    assert sorted(unquote(f.name.replace("_", "/")) for f in files) == sorted(b.name for b in blocks)


def test_a_block_name_too_long_for_a_file_is_refused_where_it_is_listed(tmp_path: Path) -> None:
    data, _ = ram_stream([(b"\x01" * 200, 4096)], [])
    with pytest.raises(LimitError, match="makes no file name") as info:
        extract(data, tmp_path / "ram")
    assert info.value.offset == 8 + 1 + 5 + 3 + 8 + 8
    assert list(tmp_path.iterdir()) == []


def test_extract_ram_keeps_qemus_names_readable(tmp_path: Path) -> None:
    assert main(["analyze", str(QEMU / "pc-minimal.mig"), "--extract-ram", str(tmp_path / "r")]) == 0
    names = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert "pc.ram" in names and "_rom@etc_acpi_tables" in names


def test_no_traceback_for_a_bad_ram_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = ram_stream([(b"pc.ram", 4096)], [(1 << 40, RAM_ZERO, b"pc.ram", b"\x01")])
    (tmp_path / "s.mig").write_bytes(data)
    assert main(["analyze", str(tmp_path / "s.mig"), "--extract-ram", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outside its block" in err


# -- description sets, waivers, description files -------------------------------------


def test_a_gz_description_set_is_decompressed_no_further_than_its_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """64 MiB of gzip'd zeros against a 1 MiB limit: refused having held about the limit."""
    monkeypatch.setattr(sources, "_MAX_JSON", 1 << 20)
    path = tmp_path / "dump.json.gz"
    z = zlib.compressobj(1, wbits=16 + zlib.MAX_WBITS)
    with open(path, "wb") as f:
        for _ in range(64):
            f.write(z.compress(bytes(1 << 20)))
        f.write(z.flush())
    tracemalloc.start()
    try:
        with pytest.raises(VMStateError, match="decompresses to too much"):
            sources.load_description_set(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_a_corrupt_gz_description_set_is_rejected_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(gzip.compress(b'{"vmschkmachine": {"Name": "pc"}}' * 100))
    data[20:24] = b"\xff\xff\xff\xff"
    (tmp_path / "d.json.gz").write_bytes(data)
    assert main(["check", "--src", str(tmp_path / "d.json.gz"), "--dst", str(tmp_path / "d.json.gz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vmstate: error: ") and err.count("\n") == 1


@pytest.mark.parametrize(
    "text",
    [b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", b'x = "\xff"\n'],
    ids=["nested-too-deeply", "not-utf-8"],
)
def test_waiver_files_that_are_no_toml_are_description_errors(tmp_path: Path, text: bytes) -> None:
    (tmp_path / "w.toml").write_bytes(text)
    with pytest.raises(DescriptionError, match="cannot read waivers"):
        load_waivers(tmp_path / "w.toml")


def test_a_description_file_nested_too_deeply_is_a_lint_error() -> None:
    (problem,) = check_description_text("x = " + "[" * 5000 + "]" * 5000 + "\n", "deep.toml")
    assert (problem.code, problem.severity) == ("toml-syntax", "error")


def test_a_dump_field_named_by_a_list_is_a_description_error() -> None:
    """-dump-vmstate: a field whose "field" is not a string once escaped as a TypeError
    while counting repeated names (found by the fuzzer, qemu_dump target)."""
    from vmstate.qemu_dump import parse_qemu_dump

    tree = json.loads((QEMU / "dump-pc-i440fx-7.2.json").read_text())
    entry = next(v["Description"] for k, v in tree.items()
                 if k != "vmschkmachine" and v.get("Description", {}).get("Fields"))
    entry["Fields"][0]["field"] = ["not", "a", "name"]
    with pytest.raises(DescriptionError, match="field") as e:
        parse_qemu_dump(tree, "dump.json")
    assert "Fields[0]" in str(e.value)


def _document(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """``vmstate analyze --json`` of QEMU 7.2's pc-minimal stream, as data to edit."""
    assert main(["analyze", str(QEMU / "pc-minimal.mig"), "--json"]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def _encode_refused(doc: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """``vmstate encode`` of *doc*: refused (exit 1), nothing written; its error line."""
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    out = tmp_path / "out.mig"
    assert main(["encode", str(tmp_path / "doc.json"), "-o", str(out)]) == 1
    assert not out.exists()
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "named"),
    [("instance_id", "instance_id must be at most 4294967295"),
     ("version_id", "version_id must be at most 4294967295"),
     ("section_id", "section_id must be at most 4294967295"),
     ("command", "data must be at most 65535 bytes")],
)
def test_encode_refuses_numbers_too_large_for_their_field_of_the_stream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str, named: str
) -> None:
    """A document's section numbers are 32 bits on the wire and a command's data length
    16: larger ones once escaped from encode as struct.error (found by fuzz/run.py, cli
    target); now the document is refused naming the item, and nothing is written."""
    doc = _document(capsys)
    if edit == "command":
        doc["items"].insert(1, {"type": "command", "name": "PING", "data": "00" * 65536})
    else:
        section = next(i for i in doc["items"] if i.get("type") == "section")
        section[edit] = 1 << 32
    err = _encode_refused(doc, tmp_path, capsys)
    assert err.startswith("vmstate: error: items[") and named in err and err.count("\n") == 1


@pytest.mark.parametrize("separators", [5, [", "], [", ", ": ", ","], [1, 2], ", :"])
def test_encode_refuses_vmdesc_separators_that_are_not_two_strings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], separators: Any
) -> None:
    """The vmdesc item's separators reproduce QEMU's JSON spacing; other values once
    escaped from json.dumps as ValueError or TypeError (found by fuzz/run.py, cli
    target, seed 11, input 2866)."""
    doc = _document(capsys)
    vmdesc = next(i for i in doc["items"] if i.get("type") == "vmdesc")
    vmdesc["separators"] = separators
    err = _encode_refused(doc, tmp_path, capsys)
    assert "separators must be two strings" in err and err.count("\n") == 1


@pytest.mark.parametrize("key", ["name", "kind"])
@pytest.mark.parametrize("value", [{"a": 1}, ["FULL"], None, 4])
def test_encode_refuses_a_command_name_or_section_kind_that_is_no_string(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: Any
) -> None:
    """A command's name and a section's kind are looked up in tables; a dict or a list
    there once escaped as TypeError (unhashable; found by fuzz/run.py, cli target, seed
    372358579285384695, input 1322)."""
    doc = _document(capsys)
    if key == "name":
        doc["items"].insert(1, {"type": "command", "name": value, "data": ""})
    else:
        next(i for i in doc["items"] if i.get("type") == "section")["kind"] = value
    err = _encode_refused(doc, tmp_path, capsys)
    assert err.startswith("vmstate: error: items[") and err.count("\n") == 1


@pytest.mark.parametrize("devices", [5, "x", {"a": 1}])
def test_encode_reads_a_vmdesc_whose_devices_are_no_list_as_describing_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], devices: Any
) -> None:
    """A document's vmdesc item with "devices" that is no list once escaped from the
    resolver as TypeError (found by fuzz/run.py, cli target, seed 16014278314342596339,
    input 7903); now its sections have no description, and encode says so."""
    doc = _document(capsys)
    next(i for i in doc["items"] if i.get("type") == "vmdesc")["json"]["devices"] = devices
    err = _encode_refused(doc, tmp_path, capsys)
    assert err.startswith("vmstate: error: ") and err.count("\n") == 1
