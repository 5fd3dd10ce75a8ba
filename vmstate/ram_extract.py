"""Guest RAM out of a migration stream (``vmstate analyze --extract-ram``): one sparse
file per RAM block, put in place only when the whole stream has been read."""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from vmstate.errors import InputError, LimitError
from vmstate.stream_ram import RamBlock

if TYPE_CHECKING:
    from vmstate.stream import Input

#: the largest RAM block extracted (a sparse file): 1 TiB, as much as a stream may hold
MAX_RAM_FILE = 1 << 40
#: bytes in a file name (Linux NAME_MAX)
NAME_MAX = 255
#: bytes of a block name kept as they are in its file's name; "/" becomes "_"
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-@:+,=")
#: pages written by one pwritev at most: as many as the kernel takes (IOV_MAX), and
#: _HELD bytes
_PAGES = min(1024, os.sysconf("SC_IOV_MAX"))
_HELD = 1 << 20


class RamExtractor:
    """Guest RAM pages into one sparse file per RAM block (a
    :class:`~vmstate.stream_ram.PageSink`), each page written from where the walker
    found it in *source*, without a copy: pages that follow each other in a block go
    out together, by one ``pwritev`` (a system call per page costs more than the
    copy the kernel makes; ``copy_file_range``, which cannot join them, measured
    slower).  :meth:`finish` or :meth:`abandon` before *source* closes.

    Every block the stream lists gets its own file, named by :func:`ram_file_name`;
    the walker hands over only pages inside their block, and each file is cut to its
    block's length.  Files appear under *directory* only when the whole stream has been
    read: they are written in a temporary directory beside it, then renamed.
    """

    def __init__(self, directory: str | Path, source: Input) -> None:
        self.target = Path(directory)
        if self.target.exists():
            raise InputError("exists; give a new directory for the RAM blocks", str(self.target))
        self.work = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))
        self.source = memoryview(source)
        #: a mapped input, whose pages this process lets go of once written (as the
        #: walker does with those it passed: see stream_ram.Passed)
        self.mapped = source if isinstance(source, mmap.mmap) else None
        self.paths: dict[str, Path] = {}
        #: per block, where the data written ends (a zero page below it may clear some);
        #: the held pages' end counts too
        self.top: dict[str, int] = {}
        #: the file pages go to now (one open file, whatever the number of blocks)
        self.open: tuple[str, int] | None = None
        #: pages of the open file's block, one after the other from *held_at*, not written
        #: yet: where each lies in the input (at, size), or its bytes (a uniform page)
        self.held: list[tuple[int, int] | bytes] = []
        self.held_at = self.held_end = 0

    def block(self, block: RamBlock) -> None:
        if block.length > MAX_RAM_FILE:
            raise LimitError(
                f"RAM block {block.name} too large to extract",
                offset=block.listed_at,
                expected=f"at most {MAX_RAM_FILE} bytes",
                found=f"{block.length} bytes",
                path=("ram", block.name),
            )
        path = self.work / ram_file_name(block)
        path.touch(exist_ok=False)  # names are one-to-one: no block takes another's file
        self.paths[block.name] = path

    def page(self, block: RamBlock, offset: int, at: int, size: int) -> None:
        if offset + size > block.length:  # a block's last page may be partial
            size = block.length - offset
        self._hold(block, offset, size, (at, size))

    def pages(self, block: RamBlock, offsets: list[int], at: int, stride: int, size: int) -> None:
        first, count = offsets[0], len(offsets)
        if first + count * size > block.length or offsets != list(
            range(first, first + count * size, size)
        ):
            for i, offset in enumerate(offsets):  # not one stretch of the block: page by page
                self.page(block, offset, at + i * stride, size)
            return
        places = [(a, size) for a in range(at, at + count * stride, stride)]
        i = 0
        while i < count:  # as _hold would take them one by one, in fewer steps
            self._hold(block, first + i * size, size, places[i])
            take = min(count - i - 1, _PAGES - len(self.held))
            self.held += places[i + 1 : i + 1 + take]
            i += 1 + take
            self.held_end = first + i * size

    def fill(self, block: RamBlock, offset: int, byte: int, size: int) -> None:
        size = min(size, block.length - offset)
        self._hold(block, offset, size, bytes([byte]) * size)

    def holds_data_from(self, block: RamBlock, offset: int) -> bool:
        held = self.held_end if self.held and self.open and self.open[0] == block.name else 0
        return offset < max(held, self.top.get(block.name, 0))

    def finish(self, blocks: tuple[RamBlock, ...]) -> list[Path]:
        """Size every block's file to its length and move them into place."""
        self._close()
        self.source.release()
        for block in blocks:
            os.truncate(self.paths[block.name], block.length)
        os.replace(self.work, self.target)
        return sorted(self.target.iterdir())

    def abandon(self) -> None:
        self.held.clear()
        try:
            self._close()
        finally:
            self.source.release()
            shutil.rmtree(self.work, ignore_errors=True)

    def _hold(self, block: RamBlock, offset: int, size: int, part: tuple[int, int] | bytes) -> None:
        if self.open is None or self.open[0] != block.name:
            self._close()
            self.open = block.name, os.open(self.paths[block.name], os.O_WRONLY | os.O_CLOEXEC)
        elif (
            offset != self.held_end
            or len(self.held) == _PAGES
            or self.held_end - self.held_at >= _HELD
        ):
            self._write()
        if not self.held:
            self.held_at = offset
        self.held.append(part)
        self.held_end = offset + size

    def _write(self) -> None:
        """The held pages out, by views of the input made here and let go of here, also
        when the write fails: the input can be closed after (an interrupted write's
        traceback keeps its frames, and would keep views in them)."""
        assert self.open is not None
        if not self.held:
            return
        name = self.open[0]
        self.top[name] = max(self.top.get(name, 0), self.held_end)
        source, at, first = self.source, self.held_at, 0
        places = [p for p in self.held if type(p) is tuple]
        parts = [p if type(p) is bytes else source[p[0] : p[0] + p[1]] for p in self.held]
        self.held.clear()
        try:
            while (n := os.pwritev(self.open[1], parts[first:], at)) < self.held_end - at:
                if n == 0:
                    raise OSError(errno.EIO, "the file took no byte", self.paths[name])
                at += n  # a short write (a signal, a full disk about to say so): the rest again
                while n >= len(parts[first]):
                    n -= len(parts[first])
                    first += 1
                parts[first] = bytes(parts[first][n:])
        finally:
            for view in parts:
                if type(view) is memoryview:
                    view.release()
        if self.mapped is not None and places:  # the input's pages just written, let go of
            start = min(a for a, _ in places)
            end = max(a + n for a, n in places)
            start -= start % mmap.PAGESIZE
            end -= end % mmap.PAGESIZE
            if end > start:
                self.mapped.madvise(mmap.MADV_DONTNEED, start, end - start)

    def _close(self) -> None:
        if self.open is not None:
            try:
                self._write()
            finally:
                os.close(self.open[1])
                self.open = None


def ram_file_name(block: RamBlock) -> str:
    """The file of a RAM block: its name with ``/`` as ``_``, and ``_``, ``%``, a leading
    ``.`` and every byte but letters, digits and ``.-@:+,=`` as ``%XX``, so that
    ``/rom@etc/acpi/tables`` is ``_rom@etc_acpi_tables``.  One-to-one (``unquote`` of the
    name with ``_`` put back as ``/`` gives the block's name), so two blocks never share
    a file; a name whose file name would pass 255 bytes is refused."""
    raw = block.name.encode()
    name = "".join(
        "_" if byte == 0x2F else chr(byte) if byte in _SAFE and (i or byte != 0x2E) else f"%{byte:02X}"
        for i, byte in enumerate(raw)
    )
    if not 0 < len(name) <= NAME_MAX:
        raise LimitError(
            f"RAM block {block.name} makes no file name",
            offset=block.listed_at,
            expected=f"1..{NAME_MAX} bytes of file name",
            found=f"{len(name)} bytes ({name[:40]}...)" if name else "an empty name",
            path=("ram", block.name),
        )
    return name


__all__ = ["MAX_RAM_FILE", "NAME_MAX", "RamExtractor", "ram_file_name"]
