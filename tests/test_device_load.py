"""Loading a saved file (vmstate.device_load) on emulated devices: QEMU's order (config
while the device is stopped, then RUNNING), the config put back when any step fails
(^C included), and exactly the checked bytes reaching the device whatever happens to
the file after it was checked."""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_saved_files import MigratablePci, programmed, state_of

from vmstate._lowlevel.ioctl import IoctlError
from vmstate.device_load import apply, load, plan_load
from vmstate.device_save import save
from vmstate.errors import DeviceError, IncompatibleError
from vmstate.migration import DeviceState
from vmstate.pci_vfio import CONFIG
from vmstate.saved_file import read_file, snapshot

S = DeviceState
MSIX_BAR = 3
SIZE = 1 << 20


class Logged(MigratablePci):
    """Logs, in order, each config write with the migration state it was made in, and
    each state change; ``fail`` may raise instead of the n-th config write."""

    def __init__(self, name: str, **migration: Any) -> None:
        super().__init__(name, **migration)
        self.events: list[tuple[str, Any]] = []
        self.config_writes = 0
        self.fail: tuple[int, BaseException] | None = None

    def write(self, index: int, offset: int, data: bytes) -> None:
        if index == CONFIG:
            self.config_writes += 1
            if self.fail is not None and self.fail[0] == self.config_writes:
                raise self.fail[1]
            self.events.append(("config", self.migration.state))
        super().write(index, offset, data)

    def device_feature(self, flags: int, payload: bytes = b"") -> bytes:
        before = self.migration.state
        out = super().device_feature(flags, payload)
        if self.migration.state != before:
            self.events.append(("state", self.migration.state))
        return out


def saved_file(tmp_path: Path) -> Path:
    path = tmp_path / "dev.vms"
    src = programmed(size=SIZE)
    src.write(CONFIG, 0x3C, b"\x0b")
    save(src, path)
    return path


def whole(dev: MigratablePci) -> tuple[bytes, bytes]:
    """Everything a load may write: config space and the MSI-X table's BAR."""
    return dev.read(CONFIG, 0, 4096), dev.read(MSIX_BAR, 0, 0x4000)


def test_the_config_is_programmed_while_the_device_is_stopped(tmp_path: Path) -> None:
    """QEMU restores a VFIO device's config before the VM (and the device) runs."""
    dst = Logged("dst", seed=1, size=SIZE)
    load(dst, saved_file(tmp_path).read_bytes())
    configs = [i for i, (kind, _) in enumerate(dst.events) if kind == "config"]
    assert configs and all(dst.events[i][1] == S.STOP for i in configs)
    resumed = dst.events.index(("state", S.RESUMING))
    assert resumed < configs[0] and configs[-1] < dst.events.index(("state", S.RUNNING))
    assert state_of(dst) == S.RUNNING
    assert (dst.migration.seed, dst.migration.size) == (7, SIZE)


def count_config_writes(path: Path) -> int:
    dst = Logged("count", size=SIZE)
    load(dst, path.read_bytes())
    return dst.config_writes


@pytest.mark.parametrize(
    "interrupt",
    [lambda: DeviceError("dst: write failed (injected)"), KeyboardInterrupt],
    ids=["device-error", "ctrl-c"],
)
def test_a_load_failing_at_any_config_write_puts_the_config_back(
    tmp_path: Path, interrupt: Callable[[], BaseException]
) -> None:
    path = saved_file(tmp_path)
    writes = count_config_writes(path)
    assert writes > 10
    for n in range(1, writes + 1):
        dst = Logged("dst", seed=1, size=SIZE)
        dst.write(CONFIG, 0x04, struct.pack("<H", 0x0406))  # its own decoding, INTx off
        dst.write(CONFIG, 0x3C, b"\x05")
        dst.config_writes, dst.fail = 0, (n, interrupt())
        before = whole(dst)
        with pytest.raises(type(dst.fail[1])) as caught:
            load(dst, path.read_bytes())
        said = str(caught.value) + "".join(getattr(caught.value, "__notes__", []))
        assert "its config was restored as it was before the load" in said, n
        assert "had taken the device data and is in RUNNING again" in said, n
        assert whole(dst) == before, f"config not put back after failing write {n}"
        assert state_of(dst) == S.RUNNING


class RefusesToRun(Logged):
    """Takes the data and the config, then fails the last arc to RUNNING once."""

    refused = False

    def device_feature(self, flags: int, payload: bytes = b"") -> bytes:
        target = struct.unpack_from("=I", payload)[0] if len(payload) >= 4 else None
        if flags & 1 << 17 and target == S.RUNNING and not self.refused:
            self.refused = True
            raise IoctlError("dst: STOP->RUNNING refused (injected)", request="SET", errno=5)
        return super().device_feature(flags, payload)


def test_a_device_that_will_not_run_again_gets_its_old_config_back(tmp_path: Path) -> None:
    dst = RefusesToRun("dst", seed=1, size=SIZE)
    before = whole(dst)
    with pytest.raises(DeviceError, match="its config was restored as it was before the load"):
        load(dst, saved_file(tmp_path).read_bytes())
    assert whole(dst) == before
    assert state_of(dst) == S.RUNNING  # the second request went through


def test_a_refused_load_is_all_in_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    path = saved_file(tmp_path)
    plain = MigratablePci("plain", flags=None)
    before = whole(plain)
    plan = plan_load(plain, read_file(path.read_bytes()))
    assert not plan.accepted
    assert [(r.rule, r.error.path) for r in plan.refusals] == [
        ("device-data", ("vfio-device-state", "protocol"))
    ]
    with pytest.raises(IncompatibleError, match="cannot take it"):
        apply(plain, plan)
    assert whole(plain) == before


def overwrite_chunks(path: Path, byte: int) -> None:
    """What a concurrent writer might do: the file's device data replaced in place."""
    data = read_file(path.read_bytes()).data
    assert data is not None
    with path.open("r+b") as f:
        for at, size in data.payload.chunks:
            f.seek(at)
            f.write(bytes([byte]) * size)


def test_the_device_gets_the_bytes_that_were_checked(tmp_path: Path) -> None:
    """The file changes between the checks and the writes: the load still writes what it
    checked (a copy taken once), so the driver takes the original data."""
    path = saved_file(tmp_path)
    dst = MigratablePci("dst", seed=1, size=SIZE)
    with snapshot(path) as buf:
        plan = plan_load(dst, read_file(buf))
        overwrite_chunks(path, 0xEE)
        apply(dst, plan)
    assert (dst.migration.seed, dst.migration.size) == (7, SIZE), "the checked data arrived"


def test_a_file_truncated_after_the_checks_is_no_crash(tmp_path: Path) -> None:
    """Through a mapping of the file itself, reading past a shrunk end is SIGBUS."""
    path = saved_file(tmp_path)
    dst = MigratablePci("dst", seed=1, size=SIZE)
    with snapshot(path) as buf:
        plan = plan_load(dst, read_file(buf))
        os.truncate(path, 100)
        apply(dst, plan)
    assert (dst.migration.seed, dst.migration.size) == (7, SIZE)


def copies() -> list[tuple[int, str]]:
    """This process's descriptors of snapshot copies."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # the listing's own descriptor, closed by now
            continue
        if target.startswith("/memfd:vmstate-saved-file"):
            out.append((int(name), target))
    return out


def test_the_snapshot_is_a_sealed_copy(tmp_path: Path) -> None:
    path = saved_file(tmp_path)
    with snapshot(path) as buf:
        assert bytes(buf) == path.read_bytes()
        fds = copies()
        assert fds  # its own, and the mapping's
        seals = fcntl.fcntl(fds[0][0], fcntl.F_GET_SEALS)
        wanted = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        assert seals & wanted == wanted
        with pytest.raises(PermissionError):
            os.pwrite(fds[0][0], b"X", 0)
    assert copies() == [], "the copy is gone with the snapshot"


def test_the_largest_file_holds_the_largest_device_data() -> None:
    from vmstate import device_data, saved_file

    assert saved_file.MAX_FILE == device_data.MAX_DEVICE_DATA + (64 << 20)
