"""A saved device state against a target device, before a load: nothing is written.

Identity, BAR kinds and sizes, capability layout, MSI-X size and QEMU's
read-only bytes (as a load checks them), and for device data: the framing, the
data against its format's description, and whether the target can take it.
"""

from __future__ import annotations

from pathlib import Path

from vmstate import migration, pci_device_state, vfio_state
from vmstate.compat import ERROR, Problem
from vmstate.errors import DecodeError, format_path
from vmstate.inputs import open_stream
from vmstate.pci_host import open_device


def _problem(section: str, e: DecodeError, rule: str) -> Problem:
    reason = e.message
    if e.expected or e.found:
        reason += f" (expected {e.expected}, found {e.found})"
    return Problem(ERROR, section, f"{format_path(e.path)} @ {e.offset:#x}", rule, reason)


def check_state(path: str | Path, name: str) -> list[Problem]:
    """Every reason the state saved in *path* would not load into device *name*."""
    device, _ = open_device(name)
    with device, open_stream(path) as opened:
        buf = opened.data
        try:
            saved = vfio_state.read_file(buf)
        except DecodeError as e:
            return [_problem(str(path), e, "file")]
        section = saved.config.idstr
        problems = [
            _problem(section, e, "config")
            for e in pci_device_state.problems_with(device, buf, vfio_state.raw_sections)
        ]
        meta = saved.meta
        if meta is not None and meta["protocol"] == vfio_state.PROTOCOL_REGIONS:
            if vfio_state.state_regions(device) is None:
                reason = f"the file has region-protocol device data; {name} has no state regions"
                problems.append(
                    Problem(
                        ERROR,
                        f"{saved.name}/{vfio_state.META_NAME}",
                        "protocol",
                        "device-data",
                        reason,
                    )
                )
        elif meta is not None:
            data_section = f"{saved.name}/vfio"
            if not callable(getattr(device, "device_feature", None)):
                reason = f"{name} is not opened through VFIO: it cannot take device data"
                problems.append(Problem(ERROR, data_section, "", "device-data", reason))
            else:
                caps = migration.probe(device)  # type: ignore[arg-type]
                if caps.blocker:
                    reason = f"the file has device data; {name} cannot take it: {caps.blocker}"
                    problems.append(Problem(ERROR, data_section, "", "device-data", reason))
    return problems
