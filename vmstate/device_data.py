"""A device's migration data, moved between its data fd and a file in bounded chunks.

Saving runs PRE_COPY rounds where the device has them, then STOP_COPY; loading
writes RESUMING's data and leaves RESUMING, which makes the driver validate it.
Either way a failure leaves the device neither RESUMING nor ERROR, and says so.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from typing import Final, NoReturn, Protocol

import attrs

from vmstate.device_regions import VfioDevice
from vmstate.errors import DeviceError, LimitError, TruncatedError, UsageError, VMStateError
from vmstate.migration import DeviceState, DeviceStateMachine, MigrationDevice, stop_copy_size

__all__ = [
    "CHUNK_SIZE",
    "MAX_DEVICE_DATA",
    "MAX_PRECOPY_ROUNDS",
    "Progress",
    "SavedDeviceData",
    "Sink",
    "Source",
    "load_device_data",
    "raise_noting",
    "read_exactly",
    "save_device_data",
    "write_all",
]

#: largest read from or write to a data fd: the memory a transfer holds
CHUNK_SIZE: Final = 1 << 20
#: default bound on one device's data, in either direction
MAX_DEVICE_DATA: Final = 1 << 34
#: PRECOPY_INFO rounds before STOP_COPY takes the rest (a busy device never runs dry)
MAX_PRECOPY_ROUNDS: Final = 64

_S = DeviceState
_PRECOPY_OF: Final = {_S.RUNNING: _S.PRE_COPY, _S.RUNNING_P2P: _S.PRE_COPY_P2P}
#: where a save or load may start: no data session open, no ERROR
_TRANSFER_STARTS: Final = (_S.RUNNING, _S.RUNNING_P2P, _S.STOP)

Progress = Callable[[int, int | None], None]
"""Called with (bytes done, bytes expected in all, or None when unknown)."""


class Sink(Protocol):
    """A blocking binary file, as open(path, "wb") gives."""

    def write(self, data: bytes | memoryview, /) -> int | None: ...


class Source(Protocol):
    """A blocking binary file, as open(path, "rb") gives."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


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
        raise_noting(exc, _recover(machine, start))
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
        raise_noting(exc, _recover(machine, start))
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


def raise_noting(exc: BaseException, note: str) -> NoReturn:
    """Raise *exc* saying *note* (what became of the device): in the one-line message of
    our errors, else as a note."""
    if isinstance(exc, VMStateError):
        annotated = attrs.evolve(exc, message=f"{exc.message}; {note}")
        raise annotated.with_traceback(exc.__traceback__) from exc.__cause__
    exc.add_note(note)
    raise exc


def _strerror(exc: OSError) -> str:
    code = exc.errno or 0
    return f"{errno.errorcode.get(code, code)} ({os.strerror(code)})"
