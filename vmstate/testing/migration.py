"""An emulated VFIO migration-v2 device, for tests and benchmarks.

It behaves as a driver does: it takes only the direct arcs its flags allow, hands
out data fds that are real pipes, releases PRE_COPY data round by round and
validates a loaded stream on leaving RESUMING, as mtty does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import random
import struct
from typing import Final

from vmstate._lowlevel import vfio
from vmstate._lowlevel.ioctl import IoctlError, PrecopyInfo
from vmstate.device_data import CHUNK_SIZE
from vmstate.errors import UsageError
from vmstate.migration import Arc, DeviceState, driver_arcs

__all__ = ["EmulatedMigrationDevice", "emulated_stream"]

_S = DeviceState
_GET: Final = vfio.VFIO_DEVICE_FEATURE_GET
_SET: Final = vfio.VFIO_DEVICE_FEATURE_SET
_MIG_STATE: Final = struct.Struct("=Ii")  # struct vfio_device_feature_mig_state
_U64: Final = struct.Struct("=Q")
_ALL_FLAGS: Final = (
    vfio.VFIO_MIGRATION_STOP_COPY | vfio.VFIO_MIGRATION_P2P | vfio.VFIO_MIGRATION_PRE_COPY
)
#: the emulated device's stream: this header (magic, seed, body size), then the body
_EMU_HEADER: Final = struct.Struct("<8sQQ")
_EMU_MAGIC: Final = b"vmstEMU1"
#: the body repeats a seeded random block of this many bytes
_PATTERN_PERIOD: Final = CHUNK_SIZE



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
