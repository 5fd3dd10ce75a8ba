"""Output files (vmstate._files): regular files replaced atomically with their mode kept,
streams and device nodes written through and never replaced, other targets refused,
and an interrupted write leaving nothing behind."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import IN_CI

from vmstate._files import atomic_output, write_atomic
from vmstate.errors import InputError

FULL = os.makedev(1, 7)  # /dev/full's numbers (Documentation/admin-guide/devices.txt)
NULL = os.makedev(1, 3)


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    yield
    os.umask(old)


def mknod_or_skip(path: Path, device: int) -> None:
    """A character device node; skips without CAP_MKNOD (fails under CI, which is root)."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, device)
    except PermissionError:
        message = "creating a device node needs CAP_MKNOD (root)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_new_file_gets_the_umasks_mode(tmp_path: Path, umask_027: None) -> None:
    write_atomic(tmp_path / "new.vms", b"data")
    assert (tmp_path / "new.vms").read_bytes() == b"data"
    assert stat.S_IMODE((tmp_path / "new.vms").stat().st_mode) == 0o640


def test_a_replaced_file_keeps_its_mode(tmp_path: Path, umask_027: None) -> None:
    path = tmp_path / "old.vms"
    path.write_bytes(b"old")
    path.chmod(0o604)
    inode = path.stat().st_ino
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert path.stat().st_ino != inode, "replaced, not rewritten in place"
    assert stat.S_IMODE(path.stat().st_mode) == 0o604


def test_a_symlink_is_followed_and_kept(tmp_path: Path) -> None:
    target = tmp_path / "real.vms"
    target.write_bytes(b"old")
    target.chmod(0o640)
    link = tmp_path / "link.vms"
    link.symlink_to(target)
    write_atomic(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "made.vms")
    write_atomic(dangling, b"made")
    assert dangling.is_symlink() and (tmp_path / "made.vms").read_bytes() == b"made"


def test_a_character_device_is_written_through_not_replaced(tmp_path: Path) -> None:
    """``-o /dev/full`` as root once replaced the device node with a regular file."""
    full = tmp_path / "full"
    mknod_or_skip(full, FULL)
    with pytest.raises(OSError) as caught:
        write_atomic(full, b"x" * 100000)
    assert caught.value.strerror == os.strerror(28)  # ENOSPC: the device really got the write
    assert stat.S_ISCHR(full.stat().st_mode) and full.stat().st_rdev == FULL
    null = tmp_path / "null"
    mknod_or_skip(null, NULL)
    write_atomic(null, b"gone")
    assert stat.S_ISCHR(null.stat().st_mode)
    assert leftovers(tmp_path) == []


def test_a_fifo_is_written_through_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_atomic(fifo, b"through the pipe")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    reader.join(timeout=10)  # a daemon: a replaced FIFO would leave it blocked for good
    assert got == [b"through the pipe"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["-", "/dev/stdout"])
def test_stdout_is_written_through_even_when_it_is_a_file(tmp_path: Path, name: str) -> None:
    """``-o /dev/stdout`` with stdout redirected to a file appends to that very file."""
    out = tmp_path / "out"
    out.write_bytes(b"kept:")
    inode = out.stat().st_ino
    code = f"from vmstate._files import write_atomic; write_atomic({name!r}, b'written')"
    with out.open("ab") as stdout:
        subprocess.run([sys.executable, "-c", code], stdout=stdout, cwd=tmp_path, check=True)
    assert out.read_bytes() == b"kept:written"
    assert out.stat().st_ino == inode


def test_other_targets_are_refused(tmp_path: Path) -> None:
    """A directory named as the output: what it names cannot be written (exit 1)."""
    with pytest.raises(InputError, match="not a regular file, FIFO or character device"):
        write_atomic(tmp_path, b"data")
    assert tmp_path.is_dir()


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.vms"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_output(path) as f:
        f.write(b"half of the new")
        raise KeyboardInterrupt
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []
    with pytest.raises(KeyboardInterrupt), atomic_output(tmp_path / "new.vms") as f:
        f.write(b"half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.vms"]


def test_the_directory_is_fsynced_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[bool, bool]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append((stat.S_ISDIR(os.fstat(fd).st_mode), (tmp_path / "f").exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_atomic(tmp_path / "f", b"data")
    assert synced == [(False, False), (True, True)]  # the file's data, then the renamed entry
