"""pytest plugin: the ``vmstate_snapshot`` fixture, a syrupy snapshot of a stream one
field per line (:mod:`vmstate.snapshot_extension`)::

    def test_device(vmstate_snapshot):
        assert open("dev.vms", "rb").read() == vmstate_snapshot

pytest loads this plugin in every session of an environment where vmstate is
installed, so it imports nothing at load time, and without syrupy (a plain
``pip install vmstate``, not ``vmstate[pytest]``) it stays quiet: only a test that
asks for the fixture learns what to install.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def vmstate_snapshot(request: pytest.FixtureRequest) -> Any:
    """syrupy's ``snapshot`` rendering vmstate streams one field per line."""
    try:
        from vmstate.snapshot_extension import VMStateSnapshotExtension
    except ModuleNotFoundError as e:
        if e.name is None or e.name.partition(".")[0] != "syrupy":
            raise
        pytest.fail(
            "the vmstate_snapshot fixture needs syrupy: pip install 'vmstate[pytest]'",
            pytrace=False,
        )

    return request.getfixturevalue("snapshot").use_extension(VMStateSnapshotExtension)
