"""Output files: a regular file is replaced atomically, never anything else.

A failed or interrupted write (^C included) leaves an existing file as it was and
no temporary file behind.  A replaced file keeps its mode; a new one gets the
umask's.  Streams are written through, not replaced: ``-`` and ``/dev/stdout``
(``/dev/stderr``, ``/dev/fd/N``) are this process's own descriptors, and a FIFO or
character device (``/dev/null``, ``/dev/full``) is opened and written in place.  A
symlink is followed: its target is replaced and the link stays.  Anything else (a
directory, socket, block device) is refused.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vmstate.errors import InputError

#: how a path names one of this process's descriptors
_OWN_FD = re.compile(r"/(?:dev/fd|proc/self/fd)/(\d+)")
_STANDARD = {"-": 1, "/dev/stdout": 1, "/dev/stderr": 2}
#: mode of a new file before the umask, as open(2) and shells create them
_NEW_FILE_MODE = 0o666
_TEMP_ATTEMPTS = 16


def writes_stdout(path: str | os.PathLike[str]) -> bool:
    """Whether *path* names this process's standard output (``-``, ``/dev/stdout``...)."""
    return _own_fd(os.fspath(path)) == 1


def _own_fd(text: str) -> int | None:
    """The descriptor of this process that *text* names, if it names one."""
    match = _OWN_FD.fullmatch(text)
    return int(match.group(1)) if match is not None else _STANDARD.get(text)


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write *data* to *path* (see :func:`atomic_output`)."""
    with atomic_output(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file to write *path* through.

    For a regular file (or a new one) it is a temporary file beside it that, once the
    block completes, is fsynced, given the old file's mode and renamed over it, and the
    directory fsynced; if the block raises, the temporary file is removed and *path*
    is untouched.  Streams are written in place (see the module docstring).
    """
    text = os.fspath(path)
    fd = _own_fd(text)
    if fd is not None:
        with os.fdopen(os.dup(fd), "wb") as f:
            yield f
        return
    target = Path(os.path.realpath(text))  # through symlinks: replace the target, keep links
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
        stream = os.open(target, os.O_WRONLY | os.O_CLOEXEC)  # never O_CREAT: it exists
        with os.fdopen(stream, "wb") as f:
            yield f
        return
    if mode is not None and not stat.S_ISREG(mode):
        raise InputError("not a regular file, FIFO or character device: refusing to replace it", text)
    with _replacing(target, None if mode is None else stat.S_IMODE(mode)) as f:
        yield f


@contextlib.contextmanager
def _replacing(target: Path, mode: int | None) -> Iterator[BinaryIO]:
    directory = target.parent
    temp, fd = _create_temp(directory, target.name)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)


def _create_temp(directory: Path, name: str) -> tuple[Path, int]:
    """A new file beside the target, created with the mode open(2) gives (umask applied)."""
    for _ in range(_TEMP_ATTEMPTS):
        temp = directory / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            return temp, os.open(temp, flags, _NEW_FILE_MODE)
        except FileExistsError:
            continue
    raise FileExistsError(f"{directory}: no free temporary name after {_TEMP_ATTEMPTS} tries")


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
