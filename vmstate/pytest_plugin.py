"""pytest plugin: the ``vmstate_snapshot`` fixture.

A syrupy snapshot whose files show a serialized stream one field per line
(``offset  hex  path = value``), so when one field changes the snapshot diff
names that field.  Accepts QEMU streams with a vmdesc (ours included) as
``bytes``, or ``(description, state)`` pairs::

    def test_device(vmstate_snapshot):
        assert open("dev.vms", "rb").read() == vmstate_snapshot
"""

from __future__ import annotations

from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from vmstate.description import Description
from vmstate.render import render_state, render_stream


class VMStateSnapshotExtension(SingleFileSnapshotExtension):
    """One ``.vmstate.txt`` file per snapshot, rendered field by field."""

    file_extension = "vmstate.txt"
    _write_mode = WriteMode.TEXT

    def serialize(self, data: Any, **kwargs: Any) -> str:
        if isinstance(data, bytes | bytearray | memoryview):
            return render_stream(bytes(data))
        if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Description):
            return render_state(data[0], data[1])
        raise TypeError(
            f"vmstate_snapshot takes stream bytes or (Description, state), not {type(data).__name__}"
        )


@pytest.fixture
def vmstate_snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """syrupy's ``snapshot`` rendering vmstate streams one field per line."""
    return snapshot.use_extension(VMStateSnapshotExtension)
