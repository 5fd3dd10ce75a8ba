"""Moving device data (vmstate.device_data) through an emulated device whose data fd
is a real pipe: PRE_COPY rounds, ENOMSG pauses, end of stream, bounded chunks, and
refused, truncated and broken loads that never leave the device RESUMING or in ERROR."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest
from test_migration_fsm import FLAGS, STOP_COPY, device_in

from vmstate.device_data import CHUNK_SIZE, load_device_data, save_device_data
from vmstate.errors import DeviceError, LimitError, TruncatedError
from vmstate.migration import Arc, DeviceState, DeviceStateMachine
from vmstate.testing.migration import EmulatedMigrationDevice, emulated_stream

S = DeviceState


@pytest.fixture
def close_fds() -> Iterator[list[int]]:
    fds: list[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


# --- the data stream: saving ---------------------------------------------------------


def test_save_runs_pre_copy_rounds_then_stop_copy() -> None:
    device = EmulatedMigrationDevice(seed=3, size=5000, precopy=(24, 100, 50), read_size=333)
    sink = io.BytesIO()
    reports: list[tuple[int, int | None]] = []
    saved = save_device_data(device, sink, lambda done, total: reports.append((done, total)))
    assert sink.getvalue() == emulated_stream(3, 5000)
    # Round 1: the 24 initial bytes, then ENOMSG; rounds 2 and 3: the dirty bytes each
    # PRECOPY_INFO query released; round 4 finds nothing pending.
    assert (saved.size, saved.precopy_size, saved.precopy_rounds) == (5024, 174, 3)
    assert device.arcs == [
        Arc(S.RUNNING, S.PRE_COPY),
        Arc(S.PRE_COPY, S.PRE_COPY_P2P),
        Arc(S.PRE_COPY_P2P, S.STOP_COPY),
        Arc(S.STOP_COPY, S.STOP),
    ]
    assert device.state == S.STOP
    done = [d for d, _ in reports]
    assert done == sorted(done) and reports[-1] == (5024, 5024)
    assert all(total is None or total >= d for d, total in reports)
    assert (24, 24) in reports and (124, 124) in reports


def test_save_without_pre_copy_goes_through_stop() -> None:
    device = EmulatedMigrationDevice(flags=STOP_COPY, size=1000)
    sink = io.BytesIO()
    saved = save_device_data(device, sink)
    assert sink.getvalue() == emulated_stream(0, 1000)
    assert (saved.precopy_size, saved.precopy_rounds) == (0, 0)
    assert device.arcs == [
        Arc(S.RUNNING, S.STOP),
        Arc(S.STOP, S.STOP_COPY),
        Arc(S.STOP_COPY, S.STOP),
    ]


def test_save_from_stop_skips_pre_copy() -> None:
    """Reaching PRE_COPY from STOP would start the device: a stopped device goes straight
    to STOP_COPY."""
    device = EmulatedMigrationDevice(size=1000)
    DeviceStateMachine(device).goto(S.STOP)
    device.arcs.clear()
    saved = save_device_data(device, io.BytesIO())
    assert saved.precopy_rounds == 0
    assert device.arcs == [Arc(S.STOP, S.STOP_COPY), Arc(S.STOP_COPY, S.STOP)]


def test_reads_and_writes_are_bounded_by_the_chunk_size() -> None:
    size = 3 * CHUNK_SIZE + 5
    source = EmulatedMigrationDevice(seed=9, size=size)
    sink = io.BytesIO()
    save_device_data(source, sink)
    assert source.largest_read == CHUNK_SIZE
    target = EmulatedMigrationDevice(write_size=CHUNK_SIZE // 3)  # partial writes
    load_device_data(target, io.BytesIO(sink.getvalue()), len(sink.getvalue()))
    assert target.largest_write == CHUNK_SIZE
    assert (target.state, target.seed, target.size) == (S.STOP, 9, size)


def test_save_beyond_the_limit_stops_and_restores_the_device() -> None:
    device = EmulatedMigrationDevice(size=1000)
    with pytest.raises(LimitError, match=r"exceed the limit of 500 bytes.*went back to RUNNING"):
        save_device_data(device, io.BytesIO(), limit=500)
    assert device.state == S.RUNNING


def test_an_interrupted_save_leaves_the_device_running() -> None:
    def interrupt(done: int, total: int | None) -> None:
        if done > 24:
            raise KeyboardInterrupt

    device = EmulatedMigrationDevice(size=1000, read_size=100)
    with pytest.raises(KeyboardInterrupt) as caught:
        save_device_data(device, io.BytesIO(), interrupt)
    assert caught.value.__notes__ == ["the device went back to RUNNING"]
    assert device.state == S.RUNNING
    assert device.arcs[-3:] == [
        Arc(S.STOP_COPY, S.STOP),
        Arc(S.STOP, S.RUNNING_P2P),
        Arc(S.RUNNING_P2P, S.RUNNING),
    ]


@pytest.mark.parametrize("state", [S.PRE_COPY, S.STOP_COPY, S.RESUMING])
def test_no_transfer_starts_while_a_session_is_open(state: S, close_fds: list[int]) -> None:
    device, fds = device_in(state, FLAGS["both"])
    close_fds.extend(fds)
    with pytest.raises(DeviceError, match=f"cannot save device data in state {state.name}"):
        save_device_data(device, io.BytesIO())
    with pytest.raises(DeviceError, match=f"cannot load device data in state {state.name}"):
        load_device_data(device, io.BytesIO(), 0)
    assert device.arcs == []


# --- the data stream: loading --------------------------------------------------------


def saved_stream(size: int = 2000, seed: int = 5) -> bytes:
    sink = io.BytesIO()
    save_device_data(EmulatedMigrationDevice(seed=seed, size=size), sink)
    return sink.getvalue()


def test_load_validates_on_leaving_resuming() -> None:
    data = saved_stream()
    device = EmulatedMigrationDevice(write_size=700)
    reports: list[tuple[int, int | None]] = []
    load_device_data(device, io.BytesIO(data), len(data), lambda d, t: reports.append((d, t)))
    assert (device.state, device.seed, device.size) == (S.STOP, 5, 2000)
    assert device.arcs == [
        Arc(S.RUNNING, S.RUNNING_P2P),
        Arc(S.RUNNING_P2P, S.STOP),
        Arc(S.STOP, S.RESUMING),
        Arc(S.RESUMING, S.STOP),
    ]
    assert reports[-1] == (len(data), len(data))
    assert all(total == len(data) for _, total in reports)


def corrupt(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]


@pytest.mark.parametrize("on_invalid", [S.RESUMING, S.ERROR])
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: corrupt(d, 0), "refused the data at byte 0: EFAULT"),  # magic
        (lambda d: corrupt(d, 1500), r"RESUMING->STOP failed"),  # body
        (lambda d: d[:-10], r"RESUMING->STOP failed"),  # short
        (lambda d: d + b"more", "refused the data at byte 2000: ENOMEM"),  # long
    ],
    ids=["magic", "body", "short", "long"],
)
def test_a_refused_load_is_reset_never_left_resuming_or_in_error(
    damage: object, message: str, on_invalid: S
) -> None:
    data = damage(saved_stream())  # type: ignore[operator]
    device = EmulatedMigrationDevice(seed=1, size=10, write_size=1000, on_invalid=on_invalid)
    with pytest.raises(DeviceError, match=message) as caught:
        load_device_data(device, io.BytesIO(data), len(data))
    assert device.state == S.RUNNING
    assert device.resets == 1
    left = on_invalid if "RESUMING->STOP" in message else S.RESUMING
    assert f"the device was left in {left.name} and was reset (now RUNNING)" in str(caught.value)
    assert (device.seed, device.size) == (1, 10)  # the broken state was not taken


def test_a_truncated_source_is_refused_and_the_device_reset() -> None:
    data = saved_stream()
    device = EmulatedMigrationDevice()
    with pytest.raises(TruncatedError, match=r"end after 1000 of 2024 bytes.*reset") as caught:
        load_device_data(device, io.BytesIO(data[:1000]), len(data))
    assert caught.value.offset == 1000
    assert device.state == S.RUNNING


@pytest.mark.parametrize("size", [-1, 1 << 62])
def test_a_size_beyond_the_limit_is_refused_before_the_device_is_touched(size: int) -> None:
    device = EmulatedMigrationDevice()
    with pytest.raises(LimitError, match="exceed the limit"):
        load_device_data(device, io.BytesIO(), size, limit=1 << 30)
    assert device.arcs == []


# --- drivers that break the protocol -------------------------------------------------
