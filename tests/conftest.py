"""Shared fixtures.  Tests that need a missing tool skip with a reason naming it,
except under CI (CI=true), where a missing tool is a failure: CI must run them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

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
