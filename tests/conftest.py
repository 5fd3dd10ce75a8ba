"""Shared fixtures.  Tests that need a missing tool skip with a reason naming it,
except under CI (CI=true), where a missing tool is a failure: CI must run them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from peers.apt import PeerError
from peers.qemu import Qemu, backports_qemu, system_qemu

DATA = Path(__file__).parent / "data"
IN_CI = os.environ.get("CI") == "true"


def require_tool(name: str) -> str:
    """Path of *name*; skip (fail under CI) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/run installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def data_dir() -> Path:
    return DATA


pytest_plugins = ["pytester"]


def _peer(make: Callable[[], Qemu]) -> Qemu:
    try:
        return make()
    except PeerError as e:
        pytest.fail(f"preparing a QEMU peer failed: {e}", pytrace=False)


@pytest.fixture(scope="session")
def qemu_7_2() -> Qemu:
    """Debian bookworm's QEMU 7.2 (installed by .ci/run) with its scripts."""
    return _peer(lambda: system_qemu(require_tool))


@pytest.fixture(scope="session")
def qemu_10_0() -> Qemu:
    """bookworm-backports' QEMU 10.0, unpacked into the cache beside 7.2, with its scripts."""
    return _peer(lambda: backports_qemu(require_tool, "10.0"))
