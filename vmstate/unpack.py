"""Streams that cannot be mapped as they are: read from a pipe, or inside a libvirt
save image (:mod:`vmstate.libvirt_save`), copied or decompressed into an unlinked
temporary file one chunk at a time, so that :mod:`vmstate.inputs` can map it.

Decompression: gzip, bzip2 and xz with Python's own modules, zstd with
``compression.zstd`` (Python 3.14; the ``backports.zstd`` package before), all
with bounded output per step; lzop with the ``lzop`` program, exactly as
libvirt runs it (``lzop -dc --ignore-warn``): no maintained Python package
reads the lzop file format.
"""

from __future__ import annotations

import bz2
import errno
import lzma
import os
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any, Protocol

import attrs

from vmstate import libvirt_save
from vmstate.errors import DecodeError, LimitError, TruncatedError
from vmstate.libvirt_save import SaveImage

#: bytes moved per step: also the most one decompression step may produce
CHUNK = 1 << 20
#: xz's dictionary can ask for 1.5 GiB; xz -9 needs 65 MiB to decompress
XZ_MEMLIMIT = 256 << 20


class _Decompressor(Protocol):
    """What bz2, lzma and zstd decompressor objects have in common."""

    eof: bool
    needs_input: bool
    unused_data: bytes

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


@contextmanager
def unpacked(fd: int, regular: bool, max_size: int) -> Iterator[tuple[int | None, SaveImage | None]]:
    """The file descriptor of a temporary file holding the stream *fd* gives, and the
    libvirt save image it was in; None for a regular file that is no image (mapped as it
    is: the parser says what it is)."""
    reader = _Reader(fd)
    head = reader.read(len(libvirt_save.MAGIC))
    if regular and not libvirt_save.is_save_image(head):
        yield None, None
        return
    with tempfile.TemporaryFile(prefix="vmstate-") as out:
        if libvirt_save.is_save_image(head):
            image = libvirt_save.read_header(_Replay(head, reader).read)
            _unpack(image, fd, reader, out, max_size, regular)
            yield out.fileno(), image
        else:
            _write(out, head, 0, max_size, len(head))
            _copy(reader, out, len(head), max_size)
            out.flush()
            yield out.fileno(), None


class _Reader:
    """Sequential reads of a file descriptor, counting the bytes taken (error offsets)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.taken = 0

    def read(self, n: int) -> bytes:
        """Up to *n* bytes: fewer only at the end of the input."""
        parts = []
        while n > 0:
            part = os.read(self.fd, min(n, CHUNK))
            if not part:
                break
            parts.append(part)
            n -= len(part)
        data = b"".join(parts)
        self.taken += len(data)
        return data


@attrs.define
class _Replay:
    """Bytes already taken, then the rest of the reader."""

    head: bytes
    reader: _Reader

    def read(self, n: int) -> bytes:
        first, self.head = self.head[:n], self.head[n:]
        return first + self.reader.read(n - len(first)) if len(first) < n else first


def _write(out: IO[bytes], data: bytes, produced: int, max_size: int, at: int) -> int:
    """Append *data*, which the input up to offset *at* gave; the stream so far must fit
    *max_size* and the temporary directory."""
    produced += len(data)
    _check_size(produced, max_size, at)
    try:
        out.write(data)
    except OSError as e:
        raise _no_room(e, produced, at) from None
    return produced


def _check_size(produced: int, max_size: int, at: int) -> None:
    if produced > max_size:
        raise LimitError(
            "stream too large",
            offset=at,
            expected=f"<= {max_size} bytes of stream",
            found=f"more ({produced} bytes so far)",
            path=("stream",),
        )


def _no_room(e: OSError, produced: int, at: int) -> LimitError:
    return LimitError(
        f"the stream does not fit in {tempfile.gettempdir()} (set TMPDIR elsewhere)",
        offset=at,
        expected=f"room for {produced} bytes of stream",
        found=e.strerror or str(e),
        path=("stream",),
    )


def _copy(reader: _Reader, out: IO[bytes], produced: int, max_size: int) -> int:
    while data := reader.read(CHUNK):
        produced = _write(out, data, produced, max_size, reader.taken)
    return produced


def _unpack(
    image: SaveImage, fd: int, reader: _Reader, out: IO[bytes], max_size: int, regular: bool
) -> None:
    """The stream after *image*'s header into *out*, decompressed as the header says."""
    if image.compression == "raw":
        if not (regular and _copy_in_kernel(reader, out, max_size)):
            _copy(reader, out, 0, max_size)
    elif image.compression == "lzop":
        _lzop(fd, reader, out, max_size)
    else:
        _decompress(_DECOMPRESSORS[image.compression], image.compression, reader, out, max_size)
    out.flush()


def _copy_in_kernel(reader: _Reader, out: IO[bytes], max_size: int) -> bool:
    """The rest of a regular file into *out* without passing through Python (gigabytes of
    RAM); False when the kernel cannot copy between these files and nothing was copied."""
    produced = 0
    try:
        while n := os.copy_file_range(reader.fd, out.fileno(), 64 * CHUNK):
            produced += n
            reader.taken += n
            _check_size(produced, max_size, reader.taken)
    except OSError as e:
        if produced == 0 and e.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise _no_room(e, produced, reader.taken) from None
    return True


class _Gzip:
    """zlib's gzip decompressor with the interface of the others (``needs_input``)."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self.needs_input = True

    @property
    def eof(self) -> bool:
        return self._z.eof

    @property
    def unused_data(self) -> bytes:
        return self._z.unused_data

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        out = self._z.decompress(self._z.unconsumed_tail + data, max_length)
        # output may still be pending inside zlib when the step filled max_length
        self.needs_input = not self._z.unconsumed_tail and len(out) < max_length
        return out


_DECOMPRESSORS: dict[str, Callable[[], _Decompressor]] = {
    "gzip": _Gzip,
    "bzip2": bz2.BZ2Decompressor,
    "xz": lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT),
    "zstd": lambda: _zstd().ZstdDecompressor(),
}
_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)


def _zstd() -> Any:
    """The zstd module, imported for zstd images only (reading others needs none of it)."""
    try:
        from compression import zstd  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        from backports import zstd  # type: ignore[import-not-found,no-redef,unused-ignore]
    return zstd


def _errors(what: str) -> tuple[type[BaseException], ...]:
    return (*_ERRORS, _zstd().ZstdError) if what == "zstd" else _ERRORS


def _decompress(
    make: Callable[[], _Decompressor], what: str, reader: _Reader, out: IO[bytes], max_size: int
) -> None:
    """Decompress to the end of the input, each step's output at most CHUNK bytes;
    concatenated streams are decompressed one after the other, as the tools do."""
    start = reader.taken
    decompressor = make()
    produced = 0
    pending = b""
    try:
        while True:
            if decompressor.eof:
                pending = decompressor.unused_data or reader.read(CHUNK)
                if not pending:
                    return
                decompressor = make()
            elif decompressor.needs_input and not pending:
                pending = reader.read(CHUNK)
                if not pending:
                    raise TruncatedError(
                        f"{what} data ends before its end marker",
                        offset=reader.taken,
                        expected=f"the rest of the {what} stream",
                        found="end of file",
                        path=("libvirt", what),
                    )
            data = decompressor.decompress(pending, CHUNK)
            pending = b""
            produced = _write(out, data, produced, max_size, reader.taken)
    except _errors(what) as e:
        error = LimitError if "memory" in str(e).lower() else DecodeError
        raise error(
            f"{what} data is corrupt: {e}",
            offset=reader.taken,
            expected=f"{what} data (from offset {start:#x})",
            found=str(e) or type(e).__name__,
            path=("libvirt", what),
        ) from None


def _lzop(fd: int, reader: _Reader, out: IO[bytes], max_size: int) -> None:
    """Through the lzop program, as libvirt runs it; *fd* stands at the compressed data."""
    program = shutil.which("lzop")
    start = reader.taken
    if program is None:
        raise DecodeError(
            "an lzop-compressed save image needs the lzop program (libvirt used it to write it)",
            offset=start,
            expected="lzop on PATH",
            found="no lzop",
            path=("libvirt", "lzop"),
        )
    with tempfile.TemporaryFile() as errors, subprocess.Popen(
        [program, "-dc", "--ignore-warn"], stdin=fd, stdout=subprocess.PIPE, stderr=errors
    ) as proc:
        assert proc.stdout is not None
        produced = 0
        try:
            while data := proc.stdout.read(CHUNK):
                produced = _write(out, data, produced, max_size, start)
        except BaseException:
            proc.kill()
            raise
        if proc.wait() != 0:
            errors.seek(0)
            text = errors.read(4096).decode("utf-8", "replace").strip().splitlines()
            raise DecodeError(
                f"lzop could not decompress the stream: {text[-1] if text else 'no message'}",
                offset=start,
                expected="lzop data",
                found=f"lzop exit status {proc.returncode}",
                path=("libvirt", "lzop"),
            )


__all__ = ["CHUNK", "unpacked"]
