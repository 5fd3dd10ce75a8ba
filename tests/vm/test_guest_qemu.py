"""How the host hands QEMU 10.0 to the guest's tests (tests/vm/guest_qemu.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from peers.apt import PeerError
from peers.qemu import Qemu

from vm import guest_qemu, harness

QEMU = Qemu(
    "10.0",
    "1:10.0.2+ds-2",
    ("unshare", "-m", "sh", "-c", 'exec "$@"', "/cache/root/usr/bin/qemu-system-x86_64"),
    Path("/cache/source-10.0.2+ds"),
)


def test_the_guest_runs_the_command_the_host_prepared() -> None:
    env = guest_qemu.to_env(QEMU)
    assert guest_qemu.from_env(env) == QEMU
    command = harness.guest_command(["tests/vfio/test_x.py::test_y"], Path("/repo"), None, env)
    assert f"{guest_qemu.ENV}={env[guest_qemu.ENV]}" in command
    assert not any(arg.startswith(guest_qemu.ENV) for arg in harness.guest_command(
        ["tests/vfio/test_x.py::test_y"], Path("/repo"), None))


def test_why_the_host_could_not_prepare_it_reaches_the_guest_tests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(*_: object) -> Qemu:
        raise PeerError("the mirror is unreachable")

    monkeypatch.setattr(guest_qemu, "backports_qemu", fail)
    env = guest_qemu.host_env(shutil.which)  # type: ignore[arg-type]
    assert env == {guest_qemu.PROBLEM_ENV:
                   "preparing QEMU 10.0 for the guest failed: the mirror is unreachable"}
    with pytest.raises(PeerError, match="the mirror is unreachable"):
        guest_qemu.from_env(env)
    with pytest.raises(PeerError, match="is unset"):
        guest_qemu.from_env({})
