"""VFIO migration v2, independent of the device type: what a device can do, its
device-state machine, and its device-data stream.

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

import contextlib
import enum
import errno
import fcntl
import functools
import os
import random
import struct
from collections.abc import Callable, Iterator, Mapping
from typing import Final, NoReturn, Protocol

import attrs

from vmstate._lowlevel import ioctl, vfio
from vmstate._lowlevel.ioctl import IoctlError, PrecopyInfo
from vmstate.device_regions import VfioDevice
from vmstate.errors import DeviceError, LimitError, TruncatedError, UsageError, VMStateError

__all__ = [
    "CHUNK_SIZE",
    "MAX_DEVICE_DATA",
    "MAX_PRECOPY_ROUNDS",
    "Arc",
    "DeviceState",
    "DeviceStateMachine",
    "EmulatedMigrationDevice",
    "MigrationCaps",
    "MigrationDevice",
    "Progress",
    "SavedDeviceData",
    "Sink",
    "Source",
    "driver_arcs",
    "emulated_stream",
    "load_device_data",
    "plan",
    "probe",
    "read_exactly",
    "save_device_data",
    "stop_copy_size",
    "write_all",
]

#: largest read from or write to a data fd: the memory a transfer holds
CHUNK_SIZE: Final = 1 << 20
#: default bound on one device's data, in either direction
MAX_DEVICE_DATA: Final = 1 << 34
#: PRECOPY_INFO rounds before STOP_COPY takes the rest (a busy device never runs dry)
MAX_PRECOPY_ROUNDS: Final = 64

_GET: Final = vfio.VFIO_DEVICE_FEATURE_GET
_SET: Final = vfio.VFIO_DEVICE_FEATURE_SET
_MIG_STATE: Final = struct.Struct("=Ii")  # struct vfio_device_feature_mig_state
_U64: Final = struct.Struct("=Q")

Progress = Callable[[int, int | None], None]
"""Called with (bytes done, bytes expected in all, or None when unknown)."""


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
_PRECOPY_OF: Final = {_S.RUNNING: _S.PRE_COPY, _S.RUNNING_P2P: _S.PRE_COPY_P2P}
#: where a save or load may start: no data session open, no ERROR
_TRANSFER_STARTS: Final = (_S.RUNNING, _S.RUNNING_P2P, _S.STOP)


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


class Sink(Protocol):
    """A blocking binary file, as open(path, "wb") gives."""

    def write(self, data: bytes | memoryview, /) -> int | None: ...


class Source(Protocol):
    """A blocking binary file, as open(path, "rb") gives."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


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


@attrs.frozen
class SavedDeviceData:
    """What :func:`save_device_data` moved."""

    size: int
    #: of ``size``, the bytes read in PRE_COPY
    precopy_size: int = 0
    #: PRECOPY_INFO rounds that carried data
    precopy_rounds: int = 0


def save_device_data(
    device: VfioDevice | MigrationDevice,
    sink: Sink,
    progress: Progress | None = None,
    *,
    limit: int = MAX_DEVICE_DATA,
) -> SavedDeviceData:
    """Read the device's migration data into *sink*; the device ends in STOP.

    Starting from RUNNING (or RUNNING_P2P) on a device with PRE_COPY, the data flows
    while the device runs, round by round until PRECOPY_INFO reports nothing pending
    (at most MAX_PRECOPY_ROUNDS), then STOP_COPY delivers the rest; otherwise STOP_COPY
    delivers all of it.  On failure the device goes back to the state it started in
    (reset if it ended in ERROR) and the error says which.
    """
    machine = DeviceStateMachine(device)
    start = _transfer_start(machine, "save")
    device = machine.device
    pump = _Pump(device, sink, limit, progress)
    precopy = _PRECOPY_OF.get(start) if machine.caps.pre_copy else None
    data_fd = None
    try:
        rounds = 0
        if precopy is not None:
            data_fd = machine.goto(precopy)
            assert data_fd is not None  # RUNNING(_P2P) -> PRE_COPY(_P2P) opens one
            rounds = pump.precopy(data_fd)
        precopy_size = pump.done
        estimate = stop_copy_size(device)
        opened = machine.goto(_S.STOP_COPY)  # from PRE_COPY(_P2P) the same fd carries on
        data_fd = data_fd if opened is None else opened
        assert data_fd is not None  # STOP -> STOP_COPY opens one
        pump.drain(
            data_fd, in_precopy=False, total=None if estimate is None else pump.done + estimate
        )
        machine.goto(_S.STOP)
    except BaseException as exc:
        _reraise(exc, _recover(machine, start))
    finally:
        if data_fd is not None:
            os.close(data_fd)
    if progress is not None:
        progress(pump.done, pump.done)
    return SavedDeviceData(size=pump.done, precopy_size=precopy_size, precopy_rounds=rounds)


def load_device_data(
    device: VfioDevice | MigrationDevice,
    source: Source,
    size: int,
    progress: Progress | None = None,
    *,
    limit: int = MAX_DEVICE_DATA,
) -> None:
    """Write *size* bytes of migration data from *source* into the device; it ends in STOP.

    *size* comes from a stream, so it is checked against *limit* before the device is
    touched.  Leaving RESUMING (-> STOP) makes the driver validate the data.  A failed
    load leaves the device neither RESUMING nor ERROR: it is reset if it would be
    either, else returned to the state it started in, and the error says which.
    """
    if not 0 <= size <= limit:
        raise LimitError(
            f"{size} bytes of device data exceed the limit of {limit}",
            expected=f"at most {limit} bytes",
            found=f"{size} bytes",
        )
    machine = DeviceStateMachine(device)
    start = _transfer_start(machine, "load")
    data_fd = None
    try:
        data_fd = machine.goto(_S.RESUMING)
        assert data_fd is not None  # STOP -> RESUMING opens one
        _feed(machine.device, data_fd, source, size, progress)
        machine.goto(_S.STOP)
    except BaseException as exc:
        _reraise(exc, _recover(machine, start))
    finally:
        if data_fd is not None:
            os.close(data_fd)


def _transfer_start(machine: DeviceStateMachine, what: str) -> DeviceState:
    """The current state, if a transfer may start there (no session open, no ERROR)."""
    state = machine.state()
    if state not in _TRANSFER_STARTS:
        raise DeviceError(
            f"{machine.device.name}: cannot {what} device data in state {state.name} "
            f"(needs {', '.join(s.name for s in _TRANSFER_STARTS)})"
        )
    return state


class _Pump:
    """Copies a data fd to a sink in bounded chunks, counting bytes against a limit."""

    def __init__(
        self, device: MigrationDevice, sink: Sink, limit: int, progress: Progress | None
    ) -> None:
        self._device = device
        self._sink = sink
        self._limit = limit
        self._progress = progress
        self._buffer = memoryview(bytearray(CHUNK_SIZE))
        self.done = 0

    def precopy(self, data_fd: int) -> int:
        """PRE_COPY rounds until PRECOPY_INFO reports nothing pending; how many carried data."""
        for rounds in range(MAX_PRECOPY_ROUNDS):
            info = self._device.precopy_info(data_fd)
            pending = info.initial_bytes + info.dirty_bytes
            if not pending:
                return rounds
            self.drain(data_fd, in_precopy=True, total=self.done + pending)
        return MAX_PRECOPY_ROUNDS

    def drain(self, data_fd: int, *, in_precopy: bool, total: int | None) -> None:
        """Read to the end of the phase: ENOMSG or 0 in PRE_COPY (a pause), 0 in STOP_COPY."""
        while True:
            try:
                count = self._device.read_data(data_fd, self._buffer)
            except OSError as exc:
                if in_precopy and exc.errno == errno.ENOMSG:
                    return
                raise DeviceError(
                    f"{self._device.name}: reading device data failed after {self.done} "
                    f"bytes: {_strerror(exc)}"
                ) from exc
            if not count:
                return
            if self.done + count > self._limit:
                raise LimitError(
                    f"{self._device.name}: device data exceed the limit of {self._limit} bytes",
                    offset=self.done,
                    expected=f"at most {self._limit} bytes",
                    found=f"{self.done + count} bytes or more",
                )
            write_all(self._sink, self._buffer[:count])
            self.done += count
            if self._progress is not None:
                self._progress(self.done, None if total is None else max(total, self.done))


def write_all(sink: Sink, data: bytes | memoryview) -> None:
    """Write all of *data*: a raw (unbuffered) file may take part of it."""
    view = memoryview(data)
    while view:
        written = sink.write(view)
        if not written:
            raise UsageError("the sink accepted no bytes: it must be a blocking file")
        view = view[written:]


def read_exactly(source: Source, size: int, what: str) -> Iterator[tuple[int, memoryview]]:
    """Exactly *size* bytes of *source*, a bounded chunk at a time, as (offset, chunk).

    The one buffer is reused: use each chunk before asking for the next."""
    buffer = memoryview(bytearray(min(size, CHUNK_SIZE)))
    done = 0
    while done < size:
        count = source.readinto(buffer[: size - done])
        if not count:
            raise TruncatedError(
                f"{what} end after {done} of {size} bytes",
                offset=done,
                expected=f"{size} bytes",
                found=f"{done} bytes",
            )
        yield done, buffer[:count]
        done += count


def _feed(
    device: MigrationDevice, data_fd: int, source: Source, size: int, progress: Progress | None
) -> None:
    """Copy exactly *size* bytes from *source* to the data fd in bounded chunks."""
    for at, chunk in read_exactly(source, size, "device data"):
        data = chunk
        while data:
            try:
                written = device.write_data(data_fd, data)
            except OSError as exc:
                raise DeviceError(
                    f"{device.name}: the device refused the data at byte "
                    f"{at + len(chunk) - len(data)}: {_strerror(exc)}"
                ) from exc
            if not written:
                position = at + len(chunk) - len(data)
                raise DeviceError(f"{device.name}: the device accepted no more data at byte {position}")
            data = data[written:]
        if progress is not None:
            progress(at + len(chunk), size)


def _recover(machine: DeviceStateMachine, start: DeviceState) -> str:
    """After a failed transfer: leave no RESUMING or ERROR behind; says what was done."""
    try:
        state = machine.state()
        if state in (_S.ERROR, _S.RESUMING):
            return f"the device was left in {state.name} and was reset (now {machine.reset().name})"
        if state is not start:
            machine.goto(start)
            return f"the device went back to {start.name}"
        return f"the device is in {state.name}"
    except VMStateError as exc:
        return f"recovering the device failed too: {exc}"


def _reraise(exc: BaseException, note: str) -> NoReturn:
    """Raise *exc* saying *note*: in the one-line message of our errors, else as a note."""
    if isinstance(exc, VMStateError):
        annotated = attrs.evolve(exc, message=f"{exc.message}; {note}")
        raise annotated.with_traceback(exc.__traceback__) from exc.__cause__
    exc.add_note(note)
    raise exc


def _strerror(exc: OSError) -> str:
    code = exc.errno or 0
    return f"{errno.errorcode.get(code, code)} ({os.strerror(code)})"


# --- an emulated migration-v2 device ------------------------------------------------------

_ALL_FLAGS: Final = _STOP_COPY | _P2P | _PRE_COPY
#: the emulated device's stream: this header (magic, seed, body size), then the body
_EMU_HEADER: Final = struct.Struct("<8sQQ")
_EMU_MAGIC: Final = b"vmstEMU1"
#: the body repeats a seeded random block of this many bytes
_PATTERN_PERIOD: Final = CHUNK_SIZE


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


@functools.lru_cache(maxsize=4)
def _pattern(seed: int) -> bytes:
    """Two periods of the body pattern, so any period-long window is one slice."""
    block = random.Random(seed).randbytes(_PATTERN_PERIOD)
    return block + block


def emulated_stream(seed: int, size: int, start: int = 0, stop: int | None = None) -> bytes:
    """Bytes [start, stop) of the stream an EmulatedMigrationDevice with this state saves."""
    stream = _EmulatedStream(seed, size)
    stop = stream.total if stop is None else stop
    parts = []
    while start < stop:
        part = stream.chunk(start, stop - start)
        parts.append(part)
        start += len(part)
    return b"".join(parts)


class _EmulatedStream:
    def __init__(self, seed: int, size: int) -> None:
        self.header = _EMU_HEADER.pack(_EMU_MAGIC, seed, size)
        self.total = len(self.header) + size
        self.pattern = _pattern(seed)
        self._last = (-1, -1, b"")  # (phase, count, bytes): chunks repeat once a period

    def chunk(self, position: int, count: int) -> bytes:
        """Up to *count* bytes from *position*: the header's rest, or at most a period of body."""
        if position < len(self.header):
            return self.header[position : position + count]
        phase = (position - len(self.header)) % _PATTERN_PERIOD
        count = min(count, _PATTERN_PERIOD, self.total - position)
        if self._last[:2] != (phase, count):
            self._last = (phase, count, self.pattern[phase : phase + count])
        return self._last[2]


def _os_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _ioctl_error(name: str, request: str, code: int) -> IoctlError:
    text = f"{name}: {request}: {errno.errorcode[code]} ({os.strerror(code)})"
    return IoctlError(text, request=request, errno=code)


def _pipe() -> tuple[int, int, int]:
    """A pipe (read end, write end) and its capacity, grown to a chunk where allowed."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # beyond /proc/sys/fs/pipe-max-size: keep the default
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, CHUNK_SIZE)
    return read_fd, write_fd, fcntl.fcntl(write_fd, fcntl.F_GETPIPE_SZ)


class _SaveSession:
    """The device's side of a saving data fd: it fills the pipe as the reader asks.

    The body goes in by splice(2) from a memfd holding the pattern, without a copy, as a
    driver's read() copies its data once.
    """

    def __init__(self, stream: _EmulatedStream, released: int, dirty: list[int]) -> None:
        self.data_fd, self._write_fd, self._capacity = _pipe()
        self._body = os.memfd_create("emulated-device-data", os.MFD_CLOEXEC)
        _write_fully(self._body, stream.pattern)
        self.stream = stream
        self.released = released
        self.dirty = dirty
        self.position = 0

    def read(self, data_fd: int, buffer: memoryview, largest: int, final: bool) -> int:
        count = min(len(buffer), largest, self._capacity, self.released - self.position)
        if count:
            header = len(self.stream.header)
            if self.position < header:
                moved = os.write(self._write_fd, self.stream.header[self.position : header][:count])
            else:
                phase = (self.position - header) % _PATTERN_PERIOD
                moved = os.splice(self._body, self._write_fd, count, offset_src=phase)
            self.position += moved
            return os.readv(data_fd, [buffer[:moved]])
        if not final:
            raise _os_error(errno.ENOMSG)
        if self._write_fd >= 0:  # the real end of the stream: EOF on the data fd
            os.close(self._write_fd)
            self._write_fd = -1
        return os.readv(data_fd, [buffer])

    def close(self) -> None:
        os.close(self._body)
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1


class _ResumeSession:
    """The device's side of a resuming data fd: it drains the pipe and checks each byte."""

    def __init__(self) -> None:
        self._read_fd, self.data_fd, self._capacity = _pipe()
        self._raw = bytearray(self._capacity)
        self._buffer = memoryview(self._raw)
        self.received = 0
        self.header = b""
        self.stream: _EmulatedStream | None = None
        self.corrupt_at: int | None = None

    def write(self, data_fd: int, data: memoryview, largest: int) -> int:
        count = min(len(data), largest, self._capacity)
        if self.stream is not None and self.received + count > self.stream.total:
            raise _os_error(errno.ENOMEM)  # as mtty: more than the state it declared
        written = os.write(data_fd, data[:count])
        self._check(os.readv(self._read_fd, [self._buffer[:written]]))
        return written

    def _check(self, got: int) -> None:
        """Check the *got* bytes just drained into the buffer against the declared stream."""
        start = 0
        if self.stream is None:
            start = min(_EMU_HEADER.size - len(self.header), got)
            self.header += self._buffer[:start]
            self.received += start
            if len(self.header) < _EMU_HEADER.size:
                return
            magic, seed, size = _EMU_HEADER.unpack(self.header)
            if magic != _EMU_MAGIC:
                raise _os_error(errno.EFAULT)  # as mtty: a bad header fails the write
            self.stream = _EmulatedStream(seed, size)
        while start < got:
            expected = self.stream.chunk(self.received, got - start)
            if not expected:  # beyond the declared state
                raise _os_error(errno.ENOMEM)
            end = start + len(expected)
            # A whole buffer compares as a bytearray (memcmp); a memoryview would not.
            data = self._raw if end - start == len(self._raw) else self._buffer[start:end].tobytes()
            if self.corrupt_at is None and data != expected:
                self.corrupt_at = self.received
            self.received += len(expected)
            start = end

    def complete(self) -> bool:
        return (
            self.stream is not None
            and self.received == self.stream.total
            and self.corrupt_at is None
        )

    def close(self) -> None:
        os.close(self._read_fd)


def _write_fully(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class EmulatedMigrationDevice:
    """A migration-v2 device in memory, for tests and benchmarks, behaving as a driver.

    It answers the migration features (``flags=None``: ENOTTY to all, as plain
    vfio-pci does), accepts only the direct arcs :func:`driver_arcs` lists for its
    flags (others fail with EINVAL, as a driver's WARN_ON does) and records every
    state change requested in ``arcs``.  Its data moves through a real pipe whose
    other end it holds.  Its state is ``seed`` and ``size``: its stream is a 24-byte
    header, then ``size`` bytes derived from the seed.  In PRE_COPY the first
    ``precopy[0]`` bytes are the initial bytes; each further ``precopy`` entry is
    released as dirty bytes by a PRECOPY_INFO query once everything before is read;
    STOP_COPY delivers the rest.  A read returns at most ``read_size`` bytes and a
    write takes at most ``write_size``.  Loading checks like mtty: a bad magic fails
    the write (EFAULT), data beyond the declared size fail it (ENOMEM), a short or
    corrupted stream fails RESUMING -> STOP (EINVAL), which leaves the device in
    ``on_invalid`` (RESUMING, as mtty does, or ERROR).
    """

    def __init__(
        self,
        name: str = "emulated-migration",
        *,
        flags: int | None = _ALL_FLAGS,
        seed: int = 0,
        size: int = 4096,
        precopy: tuple[int, ...] = (_EMU_HEADER.size,),
        read_size: int = CHUNK_SIZE,
        write_size: int = CHUNK_SIZE,
        on_invalid: DeviceState = _S.RESUMING,
    ) -> None:
        if on_invalid not in (_S.RESUMING, _S.ERROR):
            raise UsageError("on_invalid must be RESUMING or ERROR")
        if not precopy or min(precopy) < 0 or sum(precopy) > _EMU_HEADER.size + size:
            raise UsageError(
                f"precopy pieces {precopy} must fit the {_EMU_HEADER.size + size}-byte stream"
            )
        self.name = name
        self.flags = flags
        self.seed = seed
        self.size = size
        self.precopy = precopy
        self.read_size = read_size
        self.write_size = write_size
        self.on_invalid = on_invalid
        self.state = _S.RUNNING
        self.arcs: list[Arc] = []
        self.resets = 0
        self.largest_read = 0
        self.largest_write = 0
        self._saving: _SaveSession | None = None
        self._resuming: _ResumeSession | None = None

    @property
    def stream_size(self) -> int:
        return _EMU_HEADER.size + self.size

    def device_feature(self, flags: int, payload: bytes = b"") -> bytes:
        request = f"VFIO_DEVICE_FEATURE({flags:#x})"
        if self.flags is None:
            raise _ioctl_error(self.name, request, errno.ENOTTY)
        if flags == _GET | vfio.VFIO_DEVICE_FEATURE_MIGRATION:
            return _U64.pack(self.flags)
        if flags == _GET | vfio.VFIO_DEVICE_FEATURE_MIG_DATA_SIZE:
            return _U64.pack(self.stream_size)
        if flags == _GET | vfio.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE:
            return _MIG_STATE.pack(self.state, -1)
        if flags == _SET | vfio.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE:
            value, _ = _MIG_STATE.unpack_from(payload)
            return _MIG_STATE.pack(value, self._set_state(value, request))
        raise _ioctl_error(self.name, request, errno.ENOTTY)

    def reset(self) -> None:
        self._end_sessions()
        self.state = _S.RUNNING
        self.resets += 1

    def precopy_info(self, data_fd: int) -> PrecopyInfo:
        session = self._saving
        if (
            session is None
            or session.data_fd != data_fd
            or self.state not in (_S.PRE_COPY, _S.PRE_COPY_P2P)
        ):
            raise _ioctl_error(self.name, "VFIO_MIG_GET_PRECOPY_INFO", errno.EINVAL)
        if session.position == session.released and session.dirty:
            session.released += session.dirty.pop(0)
        initial = max(0, self.precopy[0] - session.position)
        pending = session.released - session.position
        return PrecopyInfo(flags=0, initial_bytes=initial, dirty_bytes=pending - initial)

    def read_data(self, data_fd: int, buffer: memoryview) -> int:
        session = self._saving
        if session is None or session.data_fd != data_fd:
            raise _os_error(errno.EBADF)
        self.largest_read = max(self.largest_read, len(buffer))
        final = self.state is _S.STOP_COPY
        return session.read(data_fd, buffer, self.read_size, final)

    def write_data(self, data_fd: int, data: memoryview) -> int:
        session = self._resuming
        if session is None or session.data_fd != data_fd:
            raise _os_error(errno.EBADF)
        self.largest_write = max(self.largest_write, len(data))
        return session.write(data_fd, data, self.write_size)

    def _set_state(self, value: int, request: str) -> int:
        """One arc, as a driver's step function; returns the data fd it opens, or -1."""
        try:
            target = DeviceState(value)
        except ValueError:
            raise _ioctl_error(self.name, request, errno.EINVAL) from None
        arc = Arc(self.state, target)
        self.arcs.append(arc)
        assert self.flags is not None
        if arc not in driver_arcs(self.flags):
            raise _ioctl_error(self.name, request, errno.EINVAL)
        data_fd = -1
        if arc.opens_session and target is _S.RESUMING:
            self._resuming = _ResumeSession()
            data_fd = self._resuming.data_fd
        elif arc.opens_session:
            stream = _EmulatedStream(self.seed, self.size)
            released = stream.total if target is _S.STOP_COPY else self.precopy[0]
            self._saving = _SaveSession(stream, released, list(self.precopy[1:]))
            data_fd = self._saving.data_fd
        elif target is _S.STOP_COPY and self._saving is not None:
            self._saving.released = self._saving.stream.total
        elif arc.source is _S.RESUMING:
            self._commit(request)
        elif arc.source in (_S.STOP_COPY, _S.PRE_COPY, _S.PRE_COPY_P2P) and target in (
            _S.STOP,
            _S.RUNNING,
            _S.RUNNING_P2P,
        ):
            self._end_sessions()
        self.state = target
        return data_fd

    def _commit(self, request: str) -> None:
        """RESUMING -> STOP: take the loaded state if it is whole and intact."""
        session = self._resuming
        assert session is not None
        if not session.complete():
            if self.on_invalid is _S.ERROR:
                self._end_sessions()
                self.state = _S.ERROR
            raise _ioctl_error(self.name, request, errno.EINVAL)
        assert session.stream is not None
        _, self.seed, self.size = _EMU_HEADER.unpack(session.stream.header)
        self._end_sessions()

    def _end_sessions(self) -> None:
        for session in (self._saving, self._resuming):
            if session is not None:
                session.close()
        self._saving = self._resuming = None
