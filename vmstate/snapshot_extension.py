"""The syrupy extension behind the ``vmstate_snapshot`` fixture (needs ``vmstate[pytest]``).

One ``.vmstate.txt`` file per snapshot showing a stream one field per line
(``offset  hex  path = value``), so when one field changes the diff names it.
"""

from __future__ import annotations

from typing import Any

from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from vmstate.description import Description
from vmstate.render import render_state, render_stream


class VMStateSnapshotExtension(SingleFileSnapshotExtension):
    """Accepts QEMU streams with a vmdesc (ours included) as bytes, or (description, state)."""

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
