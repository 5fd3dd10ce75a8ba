"""vmstate.inputs: streams from pipes and standard input, and libvirt save-image headers
and compressions, including malformed and hostile ones.

Images made by libvirt itself are in test_libvirt_images.py; the ones here are
built byte by byte in libvirt's layout (src/qemu/qemu_saveimage.[ch]: a 92-byte
header, XML and cookie padded to data_len, the stream piped through ``PROGRAM -c``)
to reach what libvirt 9.0 cannot write: zstd (later libvirt), the other byte
order, old versions, and broken headers.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import require_tool
from hypothesis import given, settings
from hypothesis import strategies as st

from vmstate import libvirt_save
from vmstate.cli import main
from vmstate.errors import DecodeError, IncompatibleError, LimitError, TruncatedError, VMStateError
from vmstate.inputs import open_stream
from vmstate.unpack import CHUNK

QEMU = Path(__file__).parent / "data" / "qemu"
STREAM = QEMU / "pc-minimal.mig"
XML = (
    "<domain type='qemu'>\n  <name>demo</name>\n  <uuid>0b5c5d7e-3c1e-4f7e-9b9e-1c2d3e4f5a6b</uuid>\n"
    "  <os>\n    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>\n  </os>\n"
    "  <devices>\n    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n  </devices>\n</domain>\n"
)
COOKIE = "<cookie>\n  <slirpHelper/>\n</cookie>\n"
FORMAT = {name: n for n, name in enumerate(libvirt_save.FORMATS)}


def image(
    body: bytes,
    compression: str = "raw",
    *,
    xml: str = XML,
    version: int = 2,
    order: str = "<",
    magic: bytes = libvirt_save.MAGIC,
    was_running: int = 1,
    data_len: int | None = None,
    cookie_offset: int | None = None,
) -> bytes:
    """A save image in libvirt's layout around *body* (already compressed, if it is)."""
    data = xml.encode() + b"\0" + COOKIE.encode() + b"\0"
    data += bytes(64 * 1024)  # libvirt's room for a larger XML later
    words = (
        version,
        len(data) if data_len is None else data_len,
        was_running,
        FORMAT[compression],
        len(xml.encode()) + 1 if cookie_offset is None else cookie_offset,
    )
    header = magic + struct.pack(f"{order}5I", *words) + bytes(56)
    return header + data + body


def compress(program: str, data: bytes, *options: str) -> bytes:
    """What libvirt does when it saves: the stream through ``PROGRAM -c``."""
    tool = require_tool(program)
    return subprocess.run([tool, "-c", *options], input=data, capture_output=True,
                          check=True).stdout


def opened_bytes(path: Path) -> tuple[bytes, libvirt_save.SaveImage | None]:
    with open_stream(path) as opened:
        return bytes(opened.data), opened.save_image


@pytest.mark.parametrize("program", ["gzip", "bzip2", "xz", "lzop", "zstd"])
def test_each_compression_gives_back_the_stream(program: str, tmp_path: Path) -> None:
    stream = STREAM.read_bytes()
    path = tmp_path / "image.save"
    path.write_bytes(image(compress(program, stream), program))
    data, saved = opened_bytes(path)
    assert data == stream
    assert saved is not None and saved.compression == program


def test_concatenated_compressed_streams_decompress_as_the_tools_do(tmp_path: Path) -> None:
    """``gzip -dc`` (which libvirt runs) reads concatenated members one after the other."""
    stream = STREAM.read_bytes()
    half = len(stream) // 2
    body = gzip.compress(stream[:half]) + gzip.compress(stream[half:])
    path = tmp_path / "image.save"
    path.write_bytes(image(body, "gzip"))
    assert opened_bytes(path)[0] == stream == subprocess.run(
        ["gzip", "-dc"], input=body, capture_output=True, check=True).stdout


def test_the_header_and_xml_essentials(tmp_path: Path) -> None:
    path = tmp_path / "image.save"
    path.write_bytes(image(STREAM.read_bytes(), was_running=0))
    data, saved = opened_bytes(path)
    assert saved is not None
    assert (saved.version, saved.was_running, saved.compression, saved.byte_order) == (
        2, False, "raw", "little")
    assert saved.domain == libvirt_save.Domain(
        "demo", "0b5c5d7e-3c1e-4f7e-9b9e-1c2d3e4f5a6b", "pc-i440fx-7.2", "x86_64",
        "/usr/bin/qemu-system-x86_64")
    assert saved.stream_offset == libvirt_save.HEADER_SIZE + len(XML) + len(COOKIE) + 2 + 65536
    assert data == STREAM.read_bytes()


def test_a_big_endian_host_s_image_is_read_byte_swapped(tmp_path: Path) -> None:
    """As libvirt does: a version above its own is read again with bytes swapped."""
    path = tmp_path / "image.save"
    path.write_bytes(image(bz2.compress(STREAM.read_bytes()), "bzip2", order=">"))
    data, saved = opened_bytes(path)
    assert saved is not None and saved.byte_order == "big" and saved.compression == "bzip2"
    assert data == STREAM.read_bytes()


def test_a_version_1_image_is_never_decompressed(tmp_path: Path) -> None:
    """libvirt decompresses only version 2 images, whatever the format field says."""
    path = tmp_path / "image.save"
    path.write_bytes(image(STREAM.read_bytes(), "gzip", version=1))
    data, saved = opened_bytes(path)
    assert saved is not None and saved.compression == "raw"
    assert data == STREAM.read_bytes()


def _rejects(tmp_path: Path, data: bytes, error: type[VMStateError], text: str,
             **limits: int) -> DecodeError:
    path = tmp_path / "image.save"
    path.write_bytes(data)
    with pytest.raises(error) as info, open_stream(path, **limits):
        pass
    e = info.value
    assert isinstance(e, DecodeError) and text in str(e), e
    assert e.expected and e.found, e
    assert 0 <= e.offset <= len(data), e
    return e


def test_a_partial_image_says_the_save_did_not_finish(tmp_path: Path) -> None:
    e = _rejects(tmp_path, image(b"", magic=libvirt_save.PARTIAL), DecodeError, "incomplete")
    assert e.offset == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "text", "offset"),
    [
        ({"version": 3}, IncompatibleError, "unsupported libvirt save image version", 16),
        ({"version": 0}, IncompatibleError, "unsupported libvirt save image version", 16),
        ({"data_len": 0}, DecodeError, "no domain XML", 20),
        ({"data_len": (16 << 20) + 1}, LimitError, "XML area too large", 20),
        ({"cookie_offset": 1 << 30}, DecodeError, "cookie offset beyond", 32),
        ({"xml": "<!DOCTYPE d [<!ENTITY a 'aaaa'>]><domain>&a;</domain>"}, DecodeError,
         "has a DTD", 92),
        ({"xml": "<domain><name>x</domain>"}, DecodeError, "malformed", 92),
        ({"xml": "<network/>"}, DecodeError, "not a <domain>", 92),
    ],
)
def test_malformed_headers_are_rejected_where_they_are_wrong(
    tmp_path: Path, kwargs: dict[str, object], error: type[VMStateError], text: str, offset: int
) -> None:
    e = _rejects(tmp_path, image(STREAM.read_bytes(), **kwargs), error, text)  # type: ignore[arg-type]
    assert e.offset == offset


def test_unknown_and_sparse_formats(tmp_path: Path) -> None:
    raw = bytearray(image(STREAM.read_bytes()))
    raw[28] = 7
    assert _rejects(tmp_path, bytes(raw), DecodeError, "unknown libvirt save image format").offset == 28
    raw[28] = FORMAT["sparse"]
    _rejects(tmp_path, bytes(raw), IncompatibleError, "mapped-ram")


def test_non_utf8_xml(tmp_path: Path) -> None:
    data = bytearray(image(b"", xml=XML.replace("demo", "de\u00e9o")))
    at = data.index("\u00e9".encode())
    data[at] = 0xFF
    assert _rejects(tmp_path, bytes(data), DecodeError, "not UTF-8").offset == at


def test_truncations_are_located(tmp_path: Path) -> None:
    full = image(gzip.compress(STREAM.read_bytes()), "gzip")
    assert _rejects(tmp_path, full[:50], TruncatedError, "header").offset == 50
    assert _rejects(tmp_path, full[:1000], TruncatedError, "domain XML").offset == 1000
    cut = len(full) - 100
    assert _rejects(tmp_path, full[:cut], TruncatedError, "gzip data ends").offset == cut


@pytest.mark.parametrize(
    ("program", "make"),
    [("gzip", gzip.compress), ("bzip2", bz2.compress), ("xz", lzma.compress)],
)
def test_corrupt_compressed_data(
    program: str, make: Callable[[bytes], bytes], tmp_path: Path
) -> None:
    body = bytearray(make(STREAM.read_bytes()))
    body[len(body) // 2 : len(body) // 2 + 64] = bytes(64)
    _rejects(tmp_path, image(bytes(body), program), DecodeError, f"{program} data is corrupt")


def test_corrupt_lzop_data_reports_lzop_s_message(tmp_path: Path) -> None:
    body = bytearray(compress("lzop", STREAM.read_bytes()))
    body[len(body) // 2 : len(body) // 2 + 64] = bytes(64)
    _rejects(tmp_path, image(bytes(body), "lzop"), DecodeError, "lzop could not decompress")


def test_lzop_images_need_the_lzop_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = image(compress("lzop", STREAM.read_bytes()), "lzop")
    monkeypatch.setenv("PATH", str(tmp_path))
    _rejects(tmp_path, data, DecodeError, "needs the lzop program")


def test_a_compression_bomb_stops_at_the_limit(tmp_path: Path) -> None:
    """64 MiB of zeros in 64 KiB of gzip: decompressed a bounded step at a time, and no
    further than the limit."""
    bomb = gzip.compress(bytes(64 << 20))
    data = image(bomb, "gzip")
    e = _rejects(tmp_path, data, LimitError, "stream too large", max_size=8 << 20)
    assert e.found == f"more ({(8 << 20) + CHUNK} bytes so far)"  # one bounded step past it


@pytest.mark.parametrize("compression", ["raw", "gzip"])
def test_the_limit_holds_for_files_and_pipes(compression: str, tmp_path: Path) -> None:
    stream = STREAM.read_bytes()
    data = image(gzip.compress(stream) if compression == "gzip" else stream, compression)
    _rejects(tmp_path, data, LimitError, "stream too large", max_size=1 << 16)
    with _pipe(data) as name, pytest.raises(LimitError), open_stream(name, max_size=1 << 16):
        pass


@contextlib.contextmanager
def _pipe(data: bytes) -> Iterator[str]:
    """A pipe holding *data*, named as a process substitution names one (``/dev/fd/N``)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the writer: a pipe holds 64 KiB until the reader takes it
        os.close(read)
        with contextlib.suppress(BrokenPipeError):
            os.write(write, data)
        os._exit(0)
    os.close(write)
    try:
        yield f"/dev/fd/{read}"
    finally:
        os.close(read)
        os.waitpid(pid, 0)


@pytest.mark.parametrize("size", [0, 100, CHUNK + 100, 3 * CHUNK + 5])
def test_a_pipe_keeps_every_byte(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    with _pipe(data) as name, open_stream(name) as opened:
        assert opened.data[:] == data
        assert opened.save_image is None


def test_a_raw_image_from_a_pipe() -> None:
    stream = STREAM.read_bytes()
    with _pipe(image(stream)) as name, open_stream(name) as opened:
        assert opened.data[:] == stream
        assert opened.save_image is not None and opened.save_image.compression == "raw"


def test_xz_asking_for_a_huge_dictionary_hits_the_memory_limit(tmp_path: Path) -> None:
    body = compress("xz", STREAM.read_bytes(), "--lzma2=dict=1536MiB")
    _rejects(tmp_path, image(body, "xz"), LimitError, "xz data is corrupt")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, libvirt_save.HEADER_SIZE - 1), st.integers(0, 255))
def test_any_header_byte_mutated_gives_only_vmstate_errors(at: int, value: int) -> None:
    data = bytearray(image(gzip.compress(STREAM.read_bytes()[:4096]), "gzip"))
    data[at] = value
    buffer = bytes(data)
    try:
        saved = libvirt_save.read_header(_reader(buffer))
    except DecodeError as e:
        assert e.expected and e.found and 0 <= e.offset <= len(buffer), e
    else:
        assert saved.stream_offset <= libvirt_save.HEADER_SIZE + libvirt_save.MAX_DATA


def _reader(data: bytes) -> Callable[[int], bytes]:
    at = 0

    def read(n: int) -> bytes:
        nonlocal at
        out = data[at : at + n]
        at += len(out)
        return out

    return read


def _vmstate(*args: str, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmstate", *args], stdin=stdin,
                          capture_output=True, text=True, check=False)


@pytest.mark.parametrize("name", ["-", "/dev/stdin"])
def test_a_stream_on_standard_input(name: str) -> None:
    direct = _vmstate("analyze", str(STREAM), "--format", "qemu")
    piped = subprocess.run(
        f"cat {STREAM} | {sys.executable} -m vmstate analyze {name} --format qemu",
        shell=True, capture_output=True, text=True, check=False)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == direct.stdout


def test_a_stream_through_process_substitution(tmp_path: Path) -> None:
    bash = require_tool("bash")
    image_path = tmp_path / "image.save"
    image_path.write_bytes(image(gzip.compress(STREAM.read_bytes()), "gzip"))
    dst = QEMU / "dump-pc-i440fx-7.2.json"
    script = f"{sys.executable} -m vmstate check --stream <(cat {image_path}) --dst {dst}"
    done = subprocess.run([bash, "-c", script], capture_output=True, text=True, check=False)
    direct = _vmstate("check", "--stream", str(STREAM), "--dst", str(dst))
    assert done.returncode == direct.returncode == 0, done.stderr
    assert done.stdout == direct.stdout


def test_rejected_images_exit_1_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "image.save"
    path.write_bytes(image(b"", magic=libvirt_save.PARTIAL))
    for argv in (["analyze", str(path)], ["show", str(path)],
                 ["check", "--stream", str(path), "--dst", str(QEMU / "dump-pc-i440fx-7.2.json")]):
        done = _vmstate(*argv)
        assert done.returncode == 1, done
        assert done.stderr.count("\n") == 1 and "incomplete" in done.stderr, done.stderr


def test_an_image_is_a_description_set_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--src IMAGE``: the sections the stream inside it sent, as for a bare stream."""
    path = tmp_path / "image.save"
    path.write_bytes(image(lzma.compress(STREAM.read_bytes()), "xz"))
    assert main(["check", "--src", str(path), "--dst", str(STREAM)]) == 0
    assert capsys.readouterr().out == "compatible: 0 errors, 0 warnings\n"


def test_empty_standard_input_is_rejected_cleanly() -> None:
    done = subprocess.run([sys.executable, "-m", "vmstate", "analyze", "-"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("vmstate: error: ") and done.stderr.count("\n") == 1


def test_the_machine_type_must_be_the_destination_s(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The domain XML's machine type (what a restore starts) against a dump of another."""
    path = tmp_path / "image.save"
    path.write_bytes(image(STREAM.read_bytes(), xml=XML.replace("pc-i440fx-7.2", "pc-q35-7.2")))
    assert main(["check", "--stream", str(path), "--dst", str(QEMU / "dump-pc-i440fx-7.2.json")]) == 1
    out = capsys.readouterr().out
    assert "error: configuration: machine: the stream is of machine type pc-q35-7.2" in out
    assert "[machine-type]" in out
