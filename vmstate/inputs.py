"""Whatever a user names as a stream, opened as the random-access bytes the parser reads.

- a regular file holding a migration stream: mapped, not read (RAM can be gigabytes);
- ``-``, ``/dev/stdin``, a pipe or a process substitution, or a libvirt save image
  (:mod:`vmstate.libvirt_save`): unpacked by :mod:`vmstate.unpack` into an unlinked
  temporary file (in ``$TMPDIR``; bounded by disk, not memory), then mapped.

The parser keeps taking ``bytes`` or an ``mmap`` whose first byte is the
stream's; what wrapped the stream comes with it in :class:`StreamInput`.  A regular
file that starts as a migration stream needs none of the unpacking code, so the
common case imports none of it (nor the decompressors, nor subprocess).
"""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

import attrs

from vmstate.stream import MAGIC, Input

if TYPE_CHECKING:
    from pathlib import Path

    from vmstate.libvirt_save import SaveImage

#: what names standard input
STDIN = "-"
#: the largest stream a copy or decompression may produce (guest RAM of 1 TiB)
MAX_STREAM = 1 << 40


@attrs.frozen
class StreamInput:
    """A stream's bytes (offset 0 is its first byte) and what it came in."""

    data: Input
    #: the name the user gave
    name: str
    #: the libvirt save image the stream was in, if it was
    save_image: SaveImage | None = None


@contextmanager
def open_stream(name: str | Path, max_size: int = MAX_STREAM) -> Iterator[StreamInput]:
    """Open *name* (a path, or ``-`` for standard input) as a stream, whatever wraps it."""
    text = str(name)
    with ExitStack() as stack:
        fd = os.dup(0) if text == STDIN else os.open(text, os.O_RDONLY | os.O_CLOEXEC)
        stack.callback(os.close, fd)
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        if regular and os.pread(fd, 4, 0) == MAGIC.to_bytes(4, "big"):
            yield StreamInput(stack.enter_context(_mapped(fd)), text)
            return
        from vmstate import unpack

        out, image = stack.enter_context(unpack.unpacked(fd, regular, max_size))
        yield StreamInput(stack.enter_context(_mapped(fd if out is None else out)), text, image)


@contextmanager
def _mapped(fd: int) -> Iterator[Input]:
    size = os.fstat(fd).st_size
    if size == 0:
        yield b""
        return
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as m:
        yield m


__all__ = ["MAX_STREAM", "STDIN", "StreamInput", "open_stream"]
