"""VFIO migration v2, independent of the device type: what a device can do and its
device-state machine (moving its data is :mod:`vmstate.device_data`).

The kernel's migration data is the device's internal state only; PCI config and
MSI/MSI-X state are saved elsewhere.  A device without migration v2 (plain vfio-pci
answers ENOTTY) is no error to :func:`probe`: its capabilities carry a ``blocker``
saying why, and asking for its device data is refused with that reason (the 2019
patch's "migration blocker").

State changes are requested one direct arc at a time, along the path the kernel's
``vfio_mig_get_next_state()`` (drivers/vfio/vfio_main.c) would take.  The whole path
is planned in user space before any change is requested, so a refused request never
reaches the kernel: Debian's 6.12 kernel loops forever on the blocked arc
STOP_COPY -> PRE_COPY.
"""

from __future__ import annotations

import enum
import errno
import functools
import os
import struct
from collections.abc import Mapping
from typing import Final, Protocol

import attrs

from vmstate._lowlevel import ioctl, vfio
from vmstate._lowlevel.ioctl import IoctlError, PrecopyInfo
from vmstate.device_regions import VfioDevice
from vmstate.errors import DeviceError, UsageError, VMStateError

__all__ = [
    "Arc",
    "DeviceState",
    "DeviceStateMachine",
    "MigrationCaps",
    "MigrationDevice",
    "driver_arcs",
    "plan",
    "probe",
    "stop_copy_size",
]

_GET: Final = vfio.VFIO_DEVICE_FEATURE_GET
_SET: Final = vfio.VFIO_DEVICE_FEATURE_SET
_MIG_STATE: Final = struct.Struct("=Ii")  # struct vfio_device_feature_mig_state
_U64: Final = struct.Struct("=Q")

class DeviceState(enum.IntEnum):
    """enum vfio_device_mig_state."""

    ERROR = vfio.VFIO_DEVICE_STATE_ERROR
    STOP = vfio.VFIO_DEVICE_STATE_STOP
    RUNNING = vfio.VFIO_DEVICE_STATE_RUNNING
    STOP_COPY = vfio.VFIO_DEVICE_STATE_STOP_COPY
    RESUMING = vfio.VFIO_DEVICE_STATE_RESUMING
    RUNNING_P2P = vfio.VFIO_DEVICE_STATE_RUNNING_P2P
    PRE_COPY = vfio.VFIO_DEVICE_STATE_PRE_COPY
    PRE_COPY_P2P = vfio.VFIO_DEVICE_STATE_PRE_COPY_P2P


_S = DeviceState
_STOP_COPY, _P2P, _PRE_COPY = (
    vfio.VFIO_MIGRATION_STOP_COPY,
    vfio.VFIO_MIGRATION_P2P,
    vfio.VFIO_MIGRATION_PRE_COPY,
)

#: vfio_from_fsm_table (Linux 6.12 and mainline, identical): _NEXT[current][target] is the
#: next state toward target before states the device lacks are skipped; ERROR: refused.
_NEXT: Final[Mapping[DeviceState, Mapping[DeviceState, DeviceState]]] = {
    _S.STOP: {
        _S.STOP: _S.STOP,
        _S.RUNNING: _S.RUNNING_P2P,
        _S.PRE_COPY: _S.RUNNING_P2P,
        _S.PRE_COPY_P2P: _S.RUNNING_P2P,
        _S.STOP_COPY: _S.STOP_COPY,
        _S.RESUMING: _S.RESUMING,
        _S.RUNNING_P2P: _S.RUNNING_P2P,
        _S.ERROR: _S.ERROR,
    },
    _S.RUNNING: {
        _S.STOP: _S.RUNNING_P2P,
        _S.RUNNING: _S.RUNNING,
        _S.PRE_COPY: _S.PRE_COPY,
        _S.PRE_COPY_P2P: _S.RUNNING_P2P,
        _S.STOP_COPY: _S.RUNNING_P2P,
        _S.RESUMING: _S.RUNNING_P2P,
        _S.RUNNING_P2P: _S.RUNNING_P2P,
        _S.ERROR: _S.ERROR,
    },
    _S.PRE_COPY: {
        _S.STOP: _S.RUNNING,
        _S.RUNNING: _S.RUNNING,
        _S.PRE_COPY: _S.PRE_COPY,
        _S.PRE_COPY_P2P: _S.PRE_COPY_P2P,
        _S.STOP_COPY: _S.PRE_COPY_P2P,
        _S.RESUMING: _S.RUNNING,
        _S.RUNNING_P2P: _S.RUNNING,
        _S.ERROR: _S.ERROR,
    },
    _S.PRE_COPY_P2P: {
        _S.STOP: _S.RUNNING_P2P,
        _S.RUNNING: _S.RUNNING_P2P,
        _S.PRE_COPY: _S.PRE_COPY,
        _S.PRE_COPY_P2P: _S.PRE_COPY_P2P,
        _S.STOP_COPY: _S.STOP_COPY,
        _S.RESUMING: _S.RUNNING_P2P,
        _S.RUNNING_P2P: _S.RUNNING_P2P,
        _S.ERROR: _S.ERROR,
    },
    _S.STOP_COPY: {
        _S.STOP: _S.STOP,
        _S.RUNNING: _S.STOP,
        _S.PRE_COPY: _S.ERROR,
        _S.PRE_COPY_P2P: _S.ERROR,
        _S.STOP_COPY: _S.STOP_COPY,
        _S.RESUMING: _S.STOP,
        _S.RUNNING_P2P: _S.STOP,
        _S.ERROR: _S.ERROR,
    },
    _S.RESUMING: {
        _S.STOP: _S.STOP,
        _S.RUNNING: _S.STOP,
        _S.PRE_COPY: _S.STOP,
        _S.PRE_COPY_P2P: _S.STOP,
        _S.STOP_COPY: _S.STOP,
        _S.RESUMING: _S.RESUMING,
        _S.RUNNING_P2P: _S.STOP,
        _S.ERROR: _S.ERROR,
    },
    _S.RUNNING_P2P: {
        _S.STOP: _S.STOP,
        _S.RUNNING: _S.RUNNING,
        _S.PRE_COPY: _S.RUNNING,
        _S.PRE_COPY_P2P: _S.PRE_COPY_P2P,
        _S.STOP_COPY: _S.STOP,
        _S.RESUMING: _S.STOP,
        _S.RUNNING_P2P: _S.RUNNING_P2P,
        _S.ERROR: _S.ERROR,
    },
}

#: state_flags_table: the migration flags a device needs to have each state.  ERROR has
#: none to offer: the kernel refuses it as the current state and as a target.
_STATE_FLAGS: Final[Mapping[DeviceState, int]] = {
    _S.STOP: _STOP_COPY,
    _S.RUNNING: _STOP_COPY,
    _S.STOP_COPY: _STOP_COPY,
    _S.RESUMING: _STOP_COPY,
    _S.RUNNING_P2P: _STOP_COPY | _P2P,
    _S.PRE_COPY: _STOP_COPY | _PRE_COPY,
    _S.PRE_COPY_P2P: _STOP_COPY | _P2P | _PRE_COPY,
}

#: arcs on which the driver hands out a new data fd (include/uapi/linux/vfio.h); the
#: others, PRE_COPY(_P2P) -> STOP_COPY included, open none
_SESSION_ARCS: Final = frozenset(
    {
        (_S.RUNNING, _S.PRE_COPY),
        (_S.RUNNING_P2P, _S.PRE_COPY_P2P),
        (_S.STOP, _S.STOP_COPY),
        (_S.STOP, _S.RESUMING),
    }
)


@attrs.frozen
class MigrationCaps:
    """VFIO_DEVICE_FEATURE_MIGRATION: what the device offers, or why it cannot migrate."""

    flags: int
    #: why the device cannot migrate at all; None when it can
    blocker: str | None = None

    @property
    def p2p(self) -> bool:
        return bool(self.flags & _P2P)

    @property
    def pre_copy(self) -> bool:
        return bool(self.flags & _PRE_COPY)

    def supports(self, state: DeviceState) -> bool:
        """Whether the device has *state* (never true of ERROR: no one may ask for it)."""
        needs = _STATE_FLAGS.get(state)
        return needs is not None and self.flags & needs == needs


@attrs.frozen
class Arc:
    """One direct state change, the unit drivers implement."""

    source: DeviceState
    target: DeviceState

    @property
    def opens_session(self) -> bool:
        """Whether the driver hands out a new data fd on this arc."""
        return (self.source, self.target) in _SESSION_ARCS

    def __str__(self) -> str:
        return f"{self.source.name}->{self.target.name}"


def plan(current: DeviceState, target: DeviceState, caps: MigrationCaps) -> tuple[Arc, ...]:
    """The direct arcs from *current* to *target* the kernel's state machine would take.

    Raises where the kernel would refuse (DeviceError out of ERROR, which only a reset
    leaves; UsageError for states the device lacks and for the blocked arcs), so
    nothing it refuses is ever requested.  Empty when *current* is *target*.
    """
    if current == _S.ERROR:
        raise DeviceError("the device is in ERROR: only a reset (VFIO_DEVICE_RESET) leaves it")
    for state, role in ((current, "current"), (target, "requested")):
        if not caps.supports(state):
            raise UsageError(
                f"the {role} state {state.name} is not one the device has "
                f"(migration flags {caps.flags:#x})"
            )
    arcs: list[Arc] = []
    state = current
    while state != target:
        step = _NEXT[state][target]
        while step != _S.ERROR and not caps.supports(step):
            step = _NEXT[step][target]
        if step == _S.ERROR:
            raise UsageError(
                f"{current.name} -> {target.name}: the kernel's state machine blocks "
                f"{state.name} -> {target.name} (some kernels hang when asked)"
            )
        arcs.append(Arc(state, step))
        state = step
    return tuple(arcs)


@functools.lru_cache(maxsize=8)
def driver_arcs(flags: int) -> frozenset[Arc]:
    """The direct arcs vfio_mig_get_next_state() may ask of a driver with *flags*.

    From the list in drivers/vfio/vfio_main.c: a driver implements these and no others.
    """
    pairs = {
        (_S.RESUMING, _S.STOP),
        (_S.STOP, _S.RESUMING),
        (_S.STOP, _S.STOP_COPY),
        (_S.STOP_COPY, _S.STOP),
    }
    if flags & _P2P:
        pairs |= {
            (_S.RUNNING, _S.RUNNING_P2P),
            (_S.RUNNING_P2P, _S.RUNNING),
            (_S.RUNNING_P2P, _S.STOP),
            (_S.STOP, _S.RUNNING_P2P),
        }
    else:
        pairs |= {(_S.RUNNING, _S.STOP), (_S.STOP, _S.RUNNING)}
    if flags & _PRE_COPY:
        pairs |= {(_S.RUNNING, _S.PRE_COPY), (_S.PRE_COPY, _S.RUNNING)}
        if flags & _P2P:
            pairs |= {
                (_S.PRE_COPY, _S.PRE_COPY_P2P),
                (_S.PRE_COPY_P2P, _S.PRE_COPY),
                (_S.PRE_COPY_P2P, _S.RUNNING_P2P),
                (_S.PRE_COPY_P2P, _S.STOP_COPY),
                (_S.RUNNING_P2P, _S.PRE_COPY_P2P),
            }
        else:
            pairs.add((_S.PRE_COPY, _S.STOP_COPY))
    return frozenset(Arc(source, target) for source, target in pairs)


class MigrationDevice(Protocol):
    """What migration needs of a device.

    Reads and writes on a data fd are device operations: the driver decides what
    read() returns there (ENOMSG at a PRE_COPY pause), as it answers the ioctls.
    """

    @property
    def name(self) -> str: ...

    def device_feature(self, flags: int, payload: bytes = b"") -> bytes:
        """VFIO_DEVICE_FEATURE; IoctlError (with errno) when refused."""
        ...

    def reset(self) -> None: ...

    def precopy_info(self, data_fd: int) -> PrecopyInfo: ...

    def read_data(self, data_fd: int, buffer: memoryview) -> int:
        """read(2) into *buffer*; OSError as read(2) fails."""
        ...

    def write_data(self, data_fd: int, data: memoryview) -> int:
        """write(2) of *data*, maybe partial; OSError as write(2) fails."""
        ...


@attrs.frozen
class _VfioMigration:
    """A VfioDevice as a MigrationDevice: the data-fd operations VfioDevice does not wrap."""

    vfio: VfioDevice

    @property
    def name(self) -> str:
        return self.vfio.name

    def device_feature(self, flags: int, payload: bytes = b"") -> bytes:
        return self.vfio.device_feature(flags, payload)

    def reset(self) -> None:
        """VFIO_DEVICE_RESET even without VFIO_DEVICE_FLAGS_RESET, which VfioDevice.reset()
        requires: the uAPI makes reset the way out of ERROR for every migration driver,
        and mtty handles it without announcing it."""
        try:
            ioctl.device_reset(self.vfio.fd)
        except IoctlError as exc:
            raise attrs.evolve(exc, message=f"{self.name}: {exc.message}") from exc

    def precopy_info(self, data_fd: int) -> PrecopyInfo:
        try:
            return ioctl.mig_get_precopy_info(data_fd)
        except IoctlError as exc:
            raise attrs.evolve(exc, message=f"{self.name}: {exc.message}") from exc

    def read_data(self, data_fd: int, buffer: memoryview) -> int:
        return os.readv(data_fd, [buffer])  # EINTR is retried by Python (PEP 475)

    def write_data(self, data_fd: int, data: memoryview) -> int:
        return os.write(data_fd, data)


def _migration_device(device: VfioDevice | MigrationDevice) -> MigrationDevice:
    return _VfioMigration(device) if isinstance(device, VfioDevice) else device


def probe(device: VfioDevice | MigrationDevice) -> MigrationCaps:
    """The device's migration capabilities; ``blocker`` says why it cannot migrate at all."""
    device = _migration_device(device)
    try:
        payload = device.device_feature(_GET | vfio.VFIO_DEVICE_FEATURE_MIGRATION, bytes(8))
    except IoctlError as exc:
        if exc.errno != errno.ENOTTY:
            raise
        return MigrationCaps(
            0,
            blocker="its driver has no VFIO migration v2 (VFIO_DEVICE_FEATURE_MIGRATION: ENOTTY)",
        )
    (flags,) = _U64.unpack_from(payload)
    if not flags & _STOP_COPY:
        return MigrationCaps(flags, blocker=f"its migration flags {flags:#x} lack STOP_COPY")
    return MigrationCaps(flags)


def stop_copy_size(device: VfioDevice | MigrationDevice) -> int | None:
    """MIG_DATA_SIZE: the device's estimate of its STOP_COPY data; None if it gives none."""
    device = _migration_device(device)
    try:
        payload = device.device_feature(_GET | vfio.VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, bytes(8))
    except IoctlError as exc:
        if exc.errno in (errno.ENOTTY, errno.EINVAL):  # before Linux 6.2, or not this driver
            return None
        raise
    return int(_U64.unpack_from(payload)[0])


class DeviceStateMachine:
    """Moves one device between migration states along the kernel's own arcs only.

    :meth:`goto` reads the current state (a GET, which changes nothing), plans the whole
    path with :func:`plan`, and only then requests the arcs one by one: a refused
    request raises before any state change is sent, and a request for the current
    state sends none.
    """

    def __init__(self, device: VfioDevice | MigrationDevice) -> None:
        self.device = _migration_device(device)
        self.caps = probe(self.device)
        if self.caps.blocker is not None:
            raise DeviceError(
                f"{self.device.name}: device does not support migration: {self.caps.blocker}"
            )

    def state(self) -> DeviceState:
        flags = _GET | vfio.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE
        value, _ = _MIG_STATE.unpack_from(self.device.device_feature(flags, _MIG_STATE.pack(0, -1)))
        try:
            return DeviceState(value)
        except ValueError:
            raise DeviceError(f"{self.device.name}: unknown migration state {value}") from None

    def goto(self, target: DeviceState) -> int | None:
        """Move to *target*; the data fd its last arc opened (the caller closes it), or None."""
        current = self.state()
        try:
            arcs = plan(current, target, self.caps)
        except (UsageError, DeviceError) as exc:
            raise attrs.evolve(exc, message=f"{self.device.name}: {exc.message}") from None
        data_fd = None
        for arc in arcs:
            data_fd = self._step(arc)
        return data_fd

    def reset(self) -> DeviceState:
        """VFIO_DEVICE_RESET, the only way out of ERROR; returns the state after (RUNNING)."""
        self.device.reset()
        return self.state()

    def _step(self, arc: Arc) -> int | None:
        flags = _SET | vfio.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE
        try:
            payload = self.device.device_feature(flags, _MIG_STATE.pack(arc.target, -1))
        except IoctlError as exc:
            raise attrs.evolve(exc, message=f"{exc.message}: {arc} failed, {self._now()}") from exc
        _, data_fd = _MIG_STATE.unpack_from(payload)
        if arc.opens_session == (data_fd >= 0):
            return data_fd if data_fd >= 0 else None
        if data_fd >= 0:
            os.close(data_fd)
        wrong = "no data fd" if arc.opens_session else f"an unexpected data fd {data_fd}"
        raise DeviceError(f"{self.device.name}: {arc} returned {wrong}, {self._now()}")

    def _now(self) -> str:
        try:
            return f"the device is now in {self.state().name}"
        except VMStateError as exc:
            return f"its state is unknown ({exc})"
