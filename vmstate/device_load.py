"""Loading a saved file into a device: one plan holding every check, then its application
in QEMU's order, with the config put back when any step fails.

:func:`plan_load` reads the destination (nothing is written) and checks the parsed file
(:class:`~vmstate.saved_file.SavedFile`) against it: the config state (identity and
layout as "equal" fields, QEMU's read-only byte rule) and whether the device can take
the file's device data.  The same plan answers ``vmstate check --state``,
``vmstate load --dry-run`` and ``vmstate load``.  :func:`apply` writes as QEMU
restores a VFIO device: the device data first (RESUMING, then STOP, where the driver
validates it), then the config while the device is stopped, and only then RUNNING.
Every config write is journaled; if any step fails (^C included), the config is put
back as it was before the load, and the error says so.
"""

from __future__ import annotations

import io
from typing import Any

import attrs

from vmstate import pci_vfio
from vmstate.device_data import Progress, load_device_data, raise_noting
from vmstate.device_regions import Device
from vmstate.errors import DecodeError, IncompatibleError, VMStateError
from vmstate.migration import DeviceState, DeviceStateMachine, MigrationCaps, probe
from vmstate.region_protocol import DeviceStateRegions, RegionState
from vmstate.saved_file import (
    MAX_REGION_CONFIG,
    META_NAME,
    PROTOCOL_REGIONS,
    SavedFile,
    read_file,
)
from vmstate.stream import Input


@attrs.frozen
class Refusal:
    """One reason a saved file would not load into a device."""

    #: the file's section the problem lies in
    section: str
    #: which check: "config" or "device-data"
    rule: str
    error: DecodeError


@attrs.frozen
class LoadPlan:
    """A saved file checked against one device, and what loading it will do."""

    saved: SavedFile
    #: the device's config state before the load: what a failed load puts back
    held: dict[str, Any] = attrs.field(eq=False, repr=False)
    refusals: tuple[Refusal, ...]
    #: the device's migration capabilities when the file has device data
    caps: MigrationCaps | None
    #: the device's 2019 state regions when the file has region-protocol data
    regions: DeviceStateRegions | None = attrs.field(eq=False, repr=False)

    @property
    def accepted(self) -> bool:
        return not self.refusals

    def raise_refusal(self) -> None:
        """Raise the first refusal (saying how many more there are), if any."""
        if self.refusals:
            first = self.refusals[0].error
            more = f" (and {len(self.refusals) - 1} more)" if len(self.refusals) > 1 else ""
            raise attrs.evolve(first, message=first.message + more)


def plan_load(device: Device, saved: SavedFile) -> LoadPlan:
    """Check *saved* against *device* in full; reads the device, writes nothing."""
    held = pci_vfio.read_state(device)
    config = saved.config
    errors = pci_vfio.check_config(
        config.state,
        config.data,
        config.section.version_id,
        config.section.start,
        held,
        pci_vfio.bar_sizes(device),
    )
    refusals = [Refusal(config.section.idstr, "config", e) for e in errors]
    caps, regions = None, None
    if saved.data is not None:
        where = saved.data.section
        if not callable(getattr(device, "device_feature", None)):
            refusals.append(
                _refuse(where.idstr, where.header_offset, device.name, "not opened through VFIO")
            )
        else:
            caps = probe(device)  # type: ignore[arg-type]
            if caps.blocker is not None:
                refusals.append(
                    _refuse(where.idstr, where.header_offset, device.name, caps.blocker)
                )
    elif saved.protocol == PROTOCOL_REGIONS:
        regions = DeviceStateRegions.find(device)
        if regions is None:
            assert saved.meta_section is not None
            refusals.append(
                Refusal(
                    saved.meta_section.idstr,
                    "device-data",
                    IncompatibleError(
                        f"the file has region-protocol device data but {device.name} has no "
                        "device-state regions",
                        offset=saved.meta_section.header_offset,
                        expected="the 2019 patch's device-state regions",
                        found="none",
                        path=(META_NAME, "protocol"),
                    ),
                )
            )
    return LoadPlan(saved, held, tuple(refusals), caps, regions)


def _refuse(section: str, offset: int, name: str, why: str) -> Refusal:
    return Refusal(
        section,
        "device-data",
        IncompatibleError(
            f"the file has device data but {name} cannot take it: {why}",
            offset=offset,
            expected="a device with VFIO migration, opened through VFIO",
            found=why,
            path=(META_NAME, "protocol"),
        ),
    )


def apply(device: Device, plan: LoadPlan, progress: Progress | None = None) -> None:
    """Load the planned file into *device* (the one it was planned against).

    Order, as QEMU restores a VFIO device: device data (the driver validates it on
    leaving RESUMING; a refused load leaves the device neither RESUMING nor ERROR),
    then the config while the device is stopped, then RUNNING.  On any failure the
    config is restored as it was before the load and the device goes back to the
    migration state it was in; the error says what became of it."""
    plan.raise_refusal()
    saved = plan.saved
    writer = pci_vfio.ConfigWriter(device)
    machine = DeviceStateMachine(device) if saved.data is not None else None  # type: ignore[arg-type]
    start = machine.state() if machine is not None else None
    data_taken = False
    try:
        if plan.regions is not None:
            _load_region_config(plan.regions, saved)
        if saved.data is not None:
            load_device_data(device, saved.data_reader(), saved.data.size, progress)  # type: ignore[arg-type]
            data_taken = True
        pci_vfio.program(writer, saved.config.state, plan.held)
        if machine is not None:
            machine.goto(DeviceState.RUNNING)
        if plan.regions is not None:
            plan.regions.set_state(RegionState.RUNNING)
    except BaseException as exc:
        notes = [writer.rollback()]
        if data_taken or plan.regions is not None:
            notes.append(_back_to_start(machine, start, plan.regions))
        raise_noting(exc, "; ".join(notes))


def _load_region_config(regions: DeviceStateRegions, saved: SavedFile) -> None:
    """The 2019 protocol: stop the device and give it its device config data."""
    assert saved.meta is not None
    config = saved.meta[f"{META_NAME}/region-config"]
    regions.set_state(RegionState.STOP)
    regions.load_config(io.BytesIO(config["data"]), config["size"], limit=MAX_REGION_CONFIG)


def _back_to_start(
    machine: DeviceStateMachine | None,
    start: DeviceState | None,
    regions: DeviceStateRegions | None,
) -> str:
    """After the device took the data but the load failed later: run it as before."""
    try:
        if regions is not None:
            regions.set_state(RegionState.RUNNING)
            return "its state regions are RUNNING again"
        assert machine is not None and start is not None
        machine.goto(start)
        return f"the device had taken the device data and is in {start.name} again"
    except VMStateError as exc:
        return f"the device had taken the device data; returning it to its state failed: {exc}"


def load(
    device: Device, source: Input, *, dry_run: bool = False, progress: Progress | None = None
) -> LoadPlan:
    """Parse *source* (a saved file's bytes, see :func:`vmstate.saved_file.snapshot`),
    check it against *device*, and unless *dry_run* load it; a refused load writes
    nothing and raises the first reason."""
    plan = plan_load(device, read_file(source))
    plan.raise_refusal()
    if not dry_run:
        apply(device, plan, progress)
    return plan
