"""A saved device state against a target device, before a load: nothing is written.

The load's own plan (:func:`vmstate.device_load.plan_load`) holds every check:
identity, BAR kinds and sizes, capability layout, MSI-X size and QEMU's read-only
bytes, the file's framing and device data against its format, and whether the
target can take the data.  Here its refusals become check problems.
"""

from __future__ import annotations

from pathlib import Path

from vmstate.device_load import plan_load
from vmstate.errors import DecodeError, format_path
from vmstate.findings import ERROR, Finding
from vmstate.pci_host import open_for_reading
from vmstate.saved_file import read_file, snapshot


def _problem(section: str, e: DecodeError, rule: str) -> Finding:
    reason = e.message
    if e.expected or e.found:
        reason += f" (expected {e.expected}, found {e.found})"
    return Finding(ERROR, section, f"{format_path(e.path)} @ {e.offset:#x}", rule, reason)


def check_state(path: str | Path, name: str) -> list[Finding]:
    """Every reason the state saved in *path* would not load into device *name*, read
    the way that does not reset it (see :func:`vmstate.pci_host.open_for_reading`)."""
    device, _ = open_for_reading(name)
    with device, snapshot(path) as buf:
        try:
            saved = read_file(buf)
        except DecodeError as e:
            return [_problem(str(path), e, "file")]
        plan = plan_load(device, saved)
    return [_problem(r.section, r.error, r.rule) for r in plan.refusals]
