"""The ``ram`` section of a migration stream (migration/ram.c), record by record.

RAM is no VMState: it is a run of be64 words, each a page address with flags
in its low bits, some followed by a block name and a page or a fill byte.  The
first record (MEM_SIZE) lists the RAM blocks; what follows each block's name
and length there depends on the source's settings, which the stream states:

- with ``postcopy-ram`` (a POSTCOPY_ADVISE command came first), a block whose
  page size differs from the host's (huge pages) carries its page size (be64),
  told apart from what else may follow by being a power of two: a record word
  always has a flag in its low bits, a block name's bytes are never zero;
- with ``x-ignore-shared`` (named in the configuration's capabilities), each
  block carries its guest address (be64);
- with ``mapped-ram`` (QEMU 9.0+, ``file:`` URIs, named in the capabilities),
  each block carries a header pointing at a bitmap and a page area at fixed
  offsets in the file; the stream then jumps past the page area, and pages
  never appear as records: the bitmap says which pages the file holds, the
  others are zero.

Pages are never held in memory: they are skipped, or handed to a sink
(``--extract-ram``) by where they lie in the input, to be copied from there.  As
QEMU's ``ram_load`` does, the walker refuses a page of a block the MEM_SIZE record
did not list ("Can't find block") and a page at or past its block's length ("Illegal
RAM offset"), so a sink only ever sees pages inside their block.
"""

from __future__ import annotations

import functools
import mmap
import struct
from collections.abc import Callable
from typing import Protocol

import attrs

from vmstate.errors import DecodeError, IncompatibleError, LimitError
from vmstate.interpreter.context import need

RAM_ZERO = 0x02
RAM_MEM_SIZE = 0x04
RAM_PAGE = 0x08
RAM_EOS = 0x10
RAM_CONTINUE = 0x20
#: QEMU 9.0+ multifd: all channels flushed here; no payload
RAM_MULTIFD_FLUSH = 0x200
_KNOWN = RAM_ZERO | RAM_MEM_SIZE | RAM_PAGE | RAM_EOS | RAM_CONTINUE | RAM_MULTIFD_FLUSH
MAX_RAM_BLOCKS = 1024
PAGE_SIZES = frozenset(1 << bits for bits in range(9, 25))
#: the version of the mapped-ram block header this reader knows (QEMU 9.0-10.x)
MAPPED_RAM_VERSION = 1
_MAPPED_HEADER = struct.Struct(">IQQQ")
_BE64 = struct.Struct(">Q")
_LE64 = struct.Struct("<Q")
#: how far the walk goes between two releases of the pages it has passed
_RELEASE = 1 << 20
#: records of one kind read one by one before the rest of their run is skipped in bulk
_RUN_AFTER = 16
#: at most this many records are looked at together (a zero page's record is 9 bytes)
_RUN = 4096


@attrs.frozen
class MappedRam:
    """Where a mapped-ram file keeps one block: its page bitmap and its pages."""

    page_size: int
    bitmap_offset: int
    pages_offset: int


@attrs.frozen
class RamBlock:
    name: str
    length: int
    #: the guest address (x-ignore-shared streams only)
    address: int | None = None
    #: the block's own page size, when a postcopy stream states it
    page_size: int | None = None
    mapped: MappedRam | None = None
    #: where the MEM_SIZE record lists the block (its name's length byte), for errors
    listed_at: int = attrs.field(default=0, eq=False)


class PageSink(Protocol):
    """Where pages go (``--extract-ram``): told every block the stream lists, then
    its pages, whose offsets the walker has checked to lie inside their block.  A
    block starts out zero, so a zero page is told only where the sink has put data
    at or past it (a page sent again in a later pass may have become zero)."""

    def block(self, block: RamBlock) -> None:
        """A listed block, before any of its pages; may refuse it (a DecodeError
        located at ``block.listed_at``)."""

    def page(self, block: RamBlock, offset: int, at: int, size: int) -> None:
        """A page: the *size* bytes of the input at *at*."""

    def pages(self, block: RamBlock, offsets: list[int], at: int, stride: int, size: int) -> None:
        """Pages at *offsets*, the first's bytes at *at* in the input, each next one
        *stride* bytes further (a run of page records)."""

    def fill(self, block: RamBlock, offset: int, byte: int, size: int) -> None:
        """A page of *size* bytes all *byte*."""

    def holds_data_from(self, block: RamBlock, offset: int) -> bool:
        """Whether a page at or past *offset* of *block* has been given data."""


@attrs.frozen
class RamSettings:
    """What the stream said before the ram section about how RAM is written."""

    page_size: int = 4096
    postcopy: bool = False
    ignore_shared: bool = False
    mapped_ram: bool = False


def _skip_run(
    buf: bytes, pos: int, length: int, mask: int, flags: int, record: int, zero_fill: bool = False
) -> int:
    """Past the records at *pos*, *record* bytes each, that all have *flags* (a zero
    page or a whole page continuing a block of *length*), and with *zero_fill* a fill
    byte of 0, up to _RUN or about _RELEASE bytes of them at a time: their flag bytes
    taken as strided slices, mapped to 0 (as expected) or 1 by ``translate`` and
    searched with ``find`` (C loops over the bytes; ``lstrip`` of a byte is several
    times slower).  Where the run ends, or an address is out of the block, the caller's
    record loop takes over.  Page sizes up to 64 KiB: the flags then lie in a record's
    last two bytes."""
    count = min(max(_RUN_AFTER, min(_RUN, _RELEASE // record)), (len(buf) - pos) // record)
    if count == 0 or buf[pos + 7] != flags:
        return pos
    stop = pos + record * count
    n = _first_one(buf[pos + 7 : stop : record].translate(_other_than(flags)), count)
    n = _first_one(buf[pos + 6 : stop : record].translate(_flag_bits(mask >> 8)), n)
    if zero_fill:
        n = _first_one(buf[pos + 8 : stop : record].translate(_other_than(0)), n)
    if n == 0 or not _below(buf, pos, pos + record * n, record, length, mask):
        return pos
    return pos + record * n


def _first_one(marks: bytes, limit: int) -> int:
    """Where the first 1 of *marks* is, before *limit*; else *limit*."""
    at = marks.find(1, 0, limit)
    return limit if at < 0 else at


def _below(buf: bytes, pos: int, stop: int, record: int, length: int, mask: int) -> bool:
    """Whether the addresses of the records from *pos* to *stop* are all below *length*:
    a byte column at a time where the length allows (see :func:`_columns`), else as one
    ``max`` of the words."""
    columns = _columns(length, mask)
    count = (stop - pos) // record
    if columns is None:
        return _words(buf, pos, stop, record, max) & ~mask < length
    zeros, table = columns
    return all(buf[pos + i : stop : record].count(0) == count for i in range(zeros)) and (
        1 not in buf[pos + zeros : stop : record].translate(table)
    )


@functools.cache
def _columns(length: int, mask: int) -> tuple[int, bytes] | None:
    """For a *length* that is one non-zero byte followed by zero bytes above the flag
    bits (most RAM blocks: 1 GiB is ``00 00 00 00 40 00 00 00``): an address is below
    it when its bytes before that one are zero and that one is below the length's.
    Returns how many bytes must be zero and a translate table marking the bytes too
    large for the next one; None for other lengths."""
    raw = length.to_bytes(8, "big")
    column = next(i for i, b in enumerate(raw) if b)
    if any(raw[column + 1 :]) or mask >> 8 * (7 - column):
        return None
    return column, bytes(0 if b < raw[column] else 1 for b in range(256))


def _words(buf: bytes, pos: int, stop: int, record: int, pick: Callable[..., int]) -> int:
    """The largest (*pick* ``max``) or smallest (``min``) word of the records of
    *record* bytes from *pos* to *stop*."""
    return pick(_run_words(record, (stop - pos) // record).unpack_from(buf, pos))


@functools.lru_cache(maxsize=8)
def _run_words(record: int, count: int) -> struct.Struct:
    """The words of *count* records of *record* bytes in a row.  A few kept: a whole
    chunk's is used again and again, and runs cut short come in any length (a struct
    of 4096 words is 200 KB; making one costs about what unpacking it does)."""
    return struct.Struct(">" + f"Q{record - 8}x" * count)


@functools.cache
def _flag_bits(bits: int) -> bytes:
    """A translate table: a byte to 0 when it has none of *bits*, else to 1."""
    return bytes(0 if b & bits == 0 else 1 for b in range(256))


@functools.cache
def _other_than(value: int) -> bytes:
    """A translate table: *value* to 0, every other byte to 1."""
    return bytes(0 if b == value else 1 for b in range(256))


class Passed:
    """Lets go of the pages of a mapped stream before where its parse has got to: the
    kernel keeps them cached, but they leave this process's memory, so a stream of any
    size (guest RAM, big device states) is read in bounded memory.  Whatever reads them
    again (an error's excerpt, a second walk of a vfio section) faults them back in."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.mapped = hasattr(buf, "madvise")
        #: where the pages let go of end
        self.released = 0

    def release(self, upto: int) -> int:
        """Let go of the pages before *upto* (page-aligned down); returns where the pages
        let go of end."""
        if self.mapped:
            upto -= upto % mmap.PAGESIZE
            if upto > self.released:
                self.buf.madvise(mmap.MADV_DONTNEED, self.released, upto - self.released)  # type: ignore[attr-defined]
                self.released = upto
        return self.released


class RamWalker:
    """Walks the records of every part of one stream's ram section."""

    def __init__(
        self, buf: bytes, settings: RamSettings, sink: PageSink | None, passed: Passed
    ) -> None:
        self.buf = buf
        self.settings = settings
        self.sink = sink
        self.passed = passed
        self.blocks: list[RamBlock] = []
        self.by_name: dict[str, RamBlock] = {}
        #: the block of the last page record: CONTINUE records go on in it
        self.current: RamBlock | None = None

    def be64(self, pos: int, what: str) -> int:
        need(self.buf, pos, 8, what)
        return _BE64.unpack_from(self.buf, pos)[0]

    def name(self, pos: int) -> tuple[str, int]:
        need(self.buf, pos, 1, "RAM block name length")
        length = self.buf[pos]
        need(self.buf, pos + 1, length, "RAM block name")
        return block_name(bytes(self.buf[pos + 1 : pos + 1 + length])), pos + 1 + length

    def walk(self, pos: int) -> int:
        """Records from *pos* to the next EOS; returns the position after it."""
        page_size = self.settings.page_size
        mask = page_size - 1
        while True:
            if self.current is not None:
                pos = self.continued(pos)
            word = self.be64(pos, "RAM record")
            record = pos
            pos += 8
            flags = word & mask
            addr = word & ~mask
            if flags & ~_KNOWN:
                raise DecodeError(
                    "unsupported RAM record flags",
                    offset=record,
                    expected=f"flags within {_KNOWN:#x}",
                    found=f"{flags:#x}",
                    path=("ram",),
                )
            if flags & RAM_MEM_SIZE:
                pos = self.block_list(pos, addr)
            if flags & (RAM_ZERO | RAM_PAGE):
                pos = self.page(pos, record, flags, addr)
            if flags & RAM_EOS:
                return pos

    def continued(self, pos: int) -> int:
        """The fast path: past the records from *pos* that continue the current block
        with a zero page or a whole page inside it, by far the commonest records; the
        first other record is left to :meth:`walk`.  Past the first 16 of a run, its
        records are checked many at a time (pages up to 64 KiB): a sink is handed runs
        of pages together, and zero pages only where they may clear its data."""
        block = self.current
        assert block is not None
        page_size = self.settings.page_size
        mask = page_size - 1
        buf, end, unpack, sink, length = self.buf, len(self.buf), _BE64.unpack_from, self.sink, block.length
        zero_run, page_run, page_record = RAM_ZERO | RAM_CONTINUE, RAM_PAGE | RAM_CONTINUE, 8 + page_size
        skip = page_size <= 1 << 16
        zeros = pages = 0
        passed = self.passed
        release_at = passed.released + _RELEASE if passed.mapped else end
        while pos + 9 <= end:
            if pos >= release_at:
                release_at = passed.release(pos) + _RELEASE
            (word,) = unpack(buf, pos)
            addr = word & ~mask
            if addr >= length:
                break
            flags = word & mask
            if flags == zero_run:
                if sink is not None:
                    self.fill(block, addr, buf[pos + 8])
                pos += 9
                zeros, pages = zeros + 1, 0
                if skip and zeros >= _RUN_AFTER:
                    ahead = _skip_run(buf, pos, length, mask, zero_run, 9, sink is not None)
                    if (
                        sink is not None
                        and ahead > pos
                        and sink.holds_data_from(block, _words(buf, pos, ahead, 9, min) & ~mask)
                    ):
                        zeros = _RUN_AFTER - _RUN  # told one by one for a while: they clear data
                    else:
                        pos = ahead
            elif flags == page_run and pos + page_record <= end:
                if sink is not None:
                    sink.page(block, addr, pos + 8, page_size)
                pos += page_record
                zeros, pages = 0, pages + 1
                if skip and pages >= _RUN_AFTER:
                    ahead = _skip_run(buf, pos, length, mask, page_run, page_record)
                    if sink is not None and ahead > pos:
                        words = _run_words(page_record, (ahead - pos) // page_record)
                        offsets = [word - page_run for word in words.unpack_from(buf, pos)]
                        sink.pages(block, offsets, pos + 8, page_record, page_size)
                    pos = ahead
            else:
                break
        return pos

    def page(self, pos: int, record: int, flags: int, addr: int) -> int:
        if self.settings.mapped_ram:
            raise DecodeError(
                "a page record in a mapped-ram stream",
                offset=record,
                expected="pages at the block's file offset",
                found=f"flags {flags:#x}",
                path=("ram",),
            )
        if not flags & RAM_CONTINUE:
            name, pos = self.name(pos)
            self.current = self.by_name.get(name)
            if self.current is None:
                raise DecodeError(
                    "a page of a RAM block the stream does not list",
                    offset=record + 8,
                    expected=f"one of the {len(self.blocks)} blocks of the MEM_SIZE record",
                    found=name[:80] or "an empty name",
                    path=("ram",),
                )
        elif self.current is None:
            raise DecodeError(
                "RAM page continues no block",
                offset=record,
                expected="a block name first",
                found="CONTINUE",
                path=("ram",),
            )
        block = self.current
        if addr >= block.length:
            raise DecodeError(
                "RAM page outside its block",
                offset=record,
                expected=f"an offset below the block's length {block.length:#x}",
                found=f"{addr:#x}",
                path=("ram", block.name),
            )
        page_size = self.settings.page_size
        if flags & RAM_ZERO:
            need(self.buf, pos, 1, "RAM fill byte")
            if self.sink is not None:
                self.fill(block, addr, self.buf[pos])
            return pos + 1
        need(self.buf, pos, page_size, "RAM page")
        if self.sink is not None:
            self.sink.page(block, addr, pos, page_size)
        return pos + page_size

    def fill(self, block: RamBlock, addr: int, byte: int) -> None:
        """A uniform page to the sink, unless it is zero where the sink has no data."""
        assert self.sink is not None
        if byte or self.sink.holds_data_from(block, addr):
            self.sink.fill(block, addr, byte, self.settings.page_size)

    def block_list(self, pos: int, total: int) -> int:
        """The MEM_SIZE record's blocks, whose lengths add up to *total*."""
        remaining = total
        while remaining > 0:
            if len(self.blocks) >= MAX_RAM_BLOCKS:
                raise LimitError("too many RAM blocks", offset=pos, expected=f"<= {MAX_RAM_BLOCKS}")
            listed_at = pos
            name, pos = self.name(pos)
            if not name or name in self.by_name:
                first = self.by_name.get(name)
                raise DecodeError(
                    "a RAM block listed twice" if first else "a RAM block without a name",
                    offset=listed_at,
                    expected="each block once, by a name of 1..255 bytes",
                    found=f"its second entry (the first at {first.listed_at:#x})"
                    if first
                    else "name length 0",
                    path=("ram", name) if name else ("ram",),
                )
            size = self.be64(pos, "RAM block length")
            if size == 0 or size > remaining:
                raise DecodeError(
                    f"RAM block {name} length does not fit the total",
                    offset=pos,
                    expected=f"1..{remaining}",
                    found=str(size),
                    path=("ram", name),
                )
            pos += 8
            page_size = address = mapped = None
            if self.settings.postcopy and _is_page_size(self.buf, pos):
                page_size = self.be64(pos, "RAM block page size")
                pos += 8
            if self.settings.ignore_shared:
                address = self.be64(pos, "RAM block address")
                pos += 8
            if self.settings.mapped_ram:
                mapped, pos = self.mapped_header(pos, name, size)
            block = RamBlock(name, size, address, page_size, mapped, listed_at)
            self.blocks.append(block)
            self.by_name[name] = block
            if self.sink is not None:
                self.sink.block(block)
                if mapped is not None:
                    self.mapped_pages(block)
            remaining -= size
        return pos

    def mapped_header(self, pos: int, name: str, length: int) -> tuple[MappedRam, int]:
        """A mapped-ram block header; the stream goes on after the block's page area."""
        need(self.buf, pos, _MAPPED_HEADER.size, "mapped-ram block header")
        version, page_size, bitmap_at, pages_at = _MAPPED_HEADER.unpack_from(self.buf, pos)
        path = ("ram", name)
        if version != MAPPED_RAM_VERSION:
            raise IncompatibleError(
                "unsupported mapped-ram header version",
                offset=pos,
                expected=str(MAPPED_RAM_VERSION),
                found=str(version),
                path=path,
            )
        if page_size not in PAGE_SIZES or length % page_size:
            raise DecodeError(
                "mapped-ram page size is no power of two in 512..16M dividing the block",
                offset=pos + 4,
                expected=f"a page size dividing {length}",
                found=str(page_size),
                path=path,
            )
        bitmap_size = _bitmap_size(length // page_size)
        after = pos + _MAPPED_HEADER.size
        if not after <= bitmap_at <= len(self.buf) - bitmap_size:
            raise DecodeError(
                "mapped-ram bitmap outside the file",
                offset=pos + 12,
                expected=f"{after}..{len(self.buf) - bitmap_size}",
                found=str(bitmap_at),
                path=path,
            )
        if pages_at % page_size or not bitmap_at + bitmap_size <= pages_at:
            raise DecodeError(
                "mapped-ram pages misplaced",
                offset=pos + 20,
                expected=f"a multiple of {page_size} after the bitmap (>= {bitmap_at + bitmap_size})",
                found=str(pages_at),
                path=path,
            )
        if pages_at + length > len(self.buf):
            raise DecodeError(
                "mapped-ram pages run past the end of the file",
                offset=pos + 20,
                expected=f"<= {len(self.buf)} bytes of file",
                found=f"{pages_at + length}",
                path=path,
            )
        return MappedRam(page_size, bitmap_at, pages_at), pages_at + length

    def mapped_pages(self, block: RamBlock) -> None:
        """Every page the bitmap marks, from its place in the file (others are zero)."""
        assert block.mapped is not None and self.sink is not None
        mapped = block.mapped
        pages = block.length // mapped.page_size
        # the bitmap is an array of the source host's unsigned longs: 64-bit little-endian (x86-64)
        for word_index in range(_bitmap_size(pages) // 8):
            word = _LE64.unpack_from(self.buf, mapped.bitmap_offset + 8 * word_index)[0]
            while word:
                bit = (word & -word).bit_length() - 1
                word &= word - 1
                page = 64 * word_index + bit
                if page >= pages:
                    break
                at = mapped.pages_offset + page * mapped.page_size
                offset = page * mapped.page_size
                self.sink.page(block, offset, at, mapped.page_size)


def printable(raw: bytes) -> str:
    """A name read from the stream, its control characters escaped (QEMU's are ASCII;
    a corrupt one must not break a one-line message)."""
    text = raw.decode("utf-8", "replace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def block_name(raw: bytes) -> str:
    """A RAM block name read from the stream, one-to-one: printable characters as they
    are, a backslash doubled, control characters as ``\\xHH`` (``\\u00HH`` from U+0080),
    bytes that are no UTF-8 as ``\\xHH`` (80-ff).  Two blocks never get one name, so
    a page never goes to another block, nor two blocks to one file."""
    if raw.isascii() and b"\\" not in raw and (text := raw.decode()).isprintable():
        return text  # QEMU's names: the fast way
    out = []
    for c in raw.decode("utf-8", "surrogateescape"):
        if c == "\\":
            out.append("\\\\")
        elif c.isprintable():
            out.append(c)
        elif 0xDC80 <= (code := ord(c)) <= 0xDCFF:  # a byte that is no UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        else:
            out.append(f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code < 0x10000
                       else f"\\U{code:08x}")
    return "".join(out)


def _is_page_size(buf: bytes, pos: int) -> bool:
    """Whether the be64 at *pos* is a page size (a power of two of at least 4 KiB)."""
    if pos + 8 > len(buf):
        return False
    (value,) = _BE64.unpack_from(buf, pos)
    return value >= 4096 and value & (value - 1) == 0


def _bitmap_size(pages: int) -> int:
    """Bytes of QEMU's bitmap of *pages* bits: whole 64-bit longs."""
    return (pages + 63) // 64 * 8
