"""Shared fixtures.  Tests that need a missing tool skip with a reason naming it,
except under CI (CI=true), where a missing tool is a failure: CI must run them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings
from peers.apt import PeerError
from peers.qemu import Qemu, backports_qemu, system_qemu

DATA = Path(__file__).parent / "data"
IN_CI = os.environ.get("CI") == "true"
#: the seed of every randomized test in this run (test_fuzz.py's targets, hypothesis's
#: draws): fresh each run, so that CI tries new inputs; VMSTATE_FUZZ_SEED replays a run
FUZZ_SEED = int(os.environ.get("VMSTATE_FUZZ_SEED") or int.from_bytes(os.urandom(8), "big"))

# Hypothesis's own CI profile derandomizes (the same examples every run); keep the
# rest of whichever profile is active, but draw fresh examples from FUZZ_SEED.
settings.register_profile("vmstate", parent=settings.default, derandomize=False)
settings.load_profile("vmstate")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("hypothesis_seed", None) is None:
        config.option.hypothesis_seed = str(FUZZ_SEED)


def pytest_report_header() -> str:
    return f"fuzz seed {FUZZ_SEED}: VMSTATE_FUZZ_SEED={FUZZ_SEED} replays this run's random inputs"


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
