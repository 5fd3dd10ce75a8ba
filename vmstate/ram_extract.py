"""Guest RAM out of a migration stream (``vmstate analyze --extract-ram``): one sparse
file per RAM block, put in place only when the whole stream has been read."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from vmstate.errors import InputError, LimitError
from vmstate.stream_ram import RamBlock

#: the largest RAM block extracted (a sparse file): 1 TiB, as much as a stream may hold
MAX_RAM_FILE = 1 << 40
#: bytes in a file name (Linux NAME_MAX)
NAME_MAX = 255
#: bytes of a block name kept as they are in its file's name; "/" becomes "_"
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-@:+,=")


class RamExtractor:
    """Guest RAM pages into one sparse file per RAM block, one page in memory at a time
    (a :class:`~vmstate.stream_ram.PageSink`).

    Every block the stream lists gets its own file, named by :func:`ram_file_name`;
    the walker hands over only pages inside their block, and each file is cut to its
    block's length.  Files appear under *directory* only when the whole stream has been
    read: they are written in a temporary directory beside it, then renamed.
    """

    def __init__(self, directory: str | Path) -> None:
        self.target = Path(directory)
        if self.target.exists():
            raise InputError("exists; give a new directory for the RAM blocks", str(self.target))
        self.work = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))
        self.paths: dict[str, Path] = {}
        #: the file pages go to now (one open file, whatever the number of blocks)
        self.open: tuple[str, BinaryIO] | None = None

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

    def __call__(self, block: RamBlock, offset: int, page: bytes | int, page_size: int) -> None:
        if page == 0:
            return  # a zero page: the file stays sparse there
        if self.open is None or self.open[0] != block.name:
            self._close()
            self.open = block.name, open(self.paths[block.name], "r+b")  # noqa: SIM115
        f = self.open[1]
        f.seek(offset)
        size = min(page_size, block.length - offset)  # a block's last page may be partial
        f.write(bytes([page]) * size if isinstance(page, int) else page[:size])

    def finish(self, blocks: tuple[RamBlock, ...]) -> list[Path]:
        """Size every block's file to its length and move them into place."""
        self._close()
        for block in blocks:
            os.truncate(self.paths[block.name], block.length)
        os.replace(self.work, self.target)
        return sorted(self.target.iterdir())

    def abandon(self) -> None:
        self._close()
        shutil.rmtree(self.work, ignore_errors=True)

    def _close(self) -> None:
        if self.open is not None:
            self.open[1].close()
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
