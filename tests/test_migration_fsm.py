"""VFIO migration v2 without a kernel: the state machine's arcs for every pair of states
and every set of optional features, checked against the kernel's table, and the device
data stream (PRE_COPY rounds, ENOMSG pauses, end of stream, refused and broken loads)
through an emulated device whose data fd is a real pipe."""

from __future__ import annotations

import errno
import io
import itertools
import os
import stat
from collections import deque
from collections.abc import Iterator

import pytest

from vmstate._lowlevel import vfio
from vmstate.errors import DeviceError, LimitError, TruncatedError, UsageError
from vmstate.migration import (
    CHUNK_SIZE,
    Arc,
    DeviceState,
    DeviceStateMachine,
    EmulatedMigrationDevice,
    MigrationCaps,
    driver_arcs,
    emulated_stream,
    load_device_data,
    plan,
    probe,
    save_device_data,
    stop_copy_size,
)

S = DeviceState
STOP_COPY, P2P, PRE_COPY = (
    vfio.VFIO_MIGRATION_STOP_COPY,
    vfio.VFIO_MIGRATION_P2P,
    vfio.VFIO_MIGRATION_PRE_COPY,
)
FLAGS = {
    "none": STOP_COPY,
    "P2P": STOP_COPY | P2P,
    "PRE_COPY": STOP_COPY | PRE_COPY,
    "both": STOP_COPY | P2P | PRE_COPY,
}

# Every path vfio_mig_get_next_state() (drivers/vfio/vfio_main.c, Linux 6.12, with the
# 2026 fix that refuses instead of looping on a blocked arc) walks between two different
# states, one line per path, written out from a direct port of that C function and its
# vfio_from_fsm_table.  Pairs not listed are refused.
KERNEL_PATHS = {
    "none": """
        STOP RUNNING
        STOP STOP_COPY
        STOP RESUMING
        RUNNING STOP
        RUNNING STOP STOP_COPY
        RUNNING STOP RESUMING
        STOP_COPY STOP
        STOP_COPY STOP RUNNING
        STOP_COPY STOP RESUMING
        RESUMING STOP
        RESUMING STOP RUNNING
        RESUMING STOP STOP_COPY
    """,
    "P2P": """
        STOP RUNNING_P2P RUNNING
        STOP STOP_COPY
        STOP RESUMING
        STOP RUNNING_P2P
        RUNNING RUNNING_P2P STOP
        RUNNING RUNNING_P2P STOP STOP_COPY
        RUNNING RUNNING_P2P STOP RESUMING
        RUNNING RUNNING_P2P
        STOP_COPY STOP
        STOP_COPY STOP RUNNING_P2P RUNNING
        STOP_COPY STOP RESUMING
        STOP_COPY STOP RUNNING_P2P
        RESUMING STOP
        RESUMING STOP RUNNING_P2P RUNNING
        RESUMING STOP STOP_COPY
        RESUMING STOP RUNNING_P2P
        RUNNING_P2P STOP
        RUNNING_P2P RUNNING
        RUNNING_P2P STOP STOP_COPY
        RUNNING_P2P STOP RESUMING
    """,
    "PRE_COPY": """
        STOP RUNNING
        STOP STOP_COPY
        STOP RESUMING
        STOP RUNNING PRE_COPY
        RUNNING STOP
        RUNNING STOP STOP_COPY
        RUNNING STOP RESUMING
        RUNNING PRE_COPY
        STOP_COPY STOP
        STOP_COPY STOP RUNNING
        STOP_COPY STOP RESUMING
        RESUMING STOP
        RESUMING STOP RUNNING
        RESUMING STOP STOP_COPY
        RESUMING STOP RUNNING PRE_COPY
        PRE_COPY RUNNING STOP
        PRE_COPY RUNNING
        PRE_COPY STOP_COPY
        PRE_COPY RUNNING STOP RESUMING
    """,
    "both": """
        STOP RUNNING_P2P RUNNING
        STOP STOP_COPY
        STOP RESUMING
        STOP RUNNING_P2P
        STOP RUNNING_P2P RUNNING PRE_COPY
        STOP RUNNING_P2P PRE_COPY_P2P
        RUNNING RUNNING_P2P STOP
        RUNNING RUNNING_P2P STOP STOP_COPY
        RUNNING RUNNING_P2P STOP RESUMING
        RUNNING RUNNING_P2P
        RUNNING PRE_COPY
        RUNNING RUNNING_P2P PRE_COPY_P2P
        STOP_COPY STOP
        STOP_COPY STOP RUNNING_P2P RUNNING
        STOP_COPY STOP RESUMING
        STOP_COPY STOP RUNNING_P2P
        RESUMING STOP
        RESUMING STOP RUNNING_P2P RUNNING
        RESUMING STOP STOP_COPY
        RESUMING STOP RUNNING_P2P
        RESUMING STOP RUNNING_P2P RUNNING PRE_COPY
        RESUMING STOP RUNNING_P2P PRE_COPY_P2P
        RUNNING_P2P STOP
        RUNNING_P2P RUNNING
        RUNNING_P2P STOP STOP_COPY
        RUNNING_P2P STOP RESUMING
        RUNNING_P2P RUNNING PRE_COPY
        RUNNING_P2P PRE_COPY_P2P
        PRE_COPY RUNNING RUNNING_P2P STOP
        PRE_COPY RUNNING
        PRE_COPY PRE_COPY_P2P STOP_COPY
        PRE_COPY RUNNING RUNNING_P2P STOP RESUMING
        PRE_COPY RUNNING RUNNING_P2P
        PRE_COPY PRE_COPY_P2P
        PRE_COPY_P2P RUNNING_P2P STOP
        PRE_COPY_P2P RUNNING_P2P RUNNING
        PRE_COPY_P2P STOP_COPY
        PRE_COPY_P2P RUNNING_P2P STOP RESUMING
        PRE_COPY_P2P RUNNING_P2P
        PRE_COPY_P2P PRE_COPY
    """,
}

# The combination transitions the comment above vfio_from_fsm_table lists for a device
# with every optional feature: an independent account of the multi-step paths.
KERNEL_COMMENT_COMBINATIONS = """
    PRE_COPY PRE_COPY_P2P STOP_COPY
    PRE_COPY RUNNING RUNNING_P2P
    PRE_COPY RUNNING RUNNING_P2P STOP
    PRE_COPY RUNNING RUNNING_P2P STOP RESUMING
    PRE_COPY_P2P RUNNING_P2P RUNNING
    PRE_COPY_P2P RUNNING_P2P STOP
    PRE_COPY_P2P RUNNING_P2P STOP RESUMING
    RESUMING STOP RUNNING_P2P
    RESUMING STOP RUNNING_P2P PRE_COPY_P2P
    RESUMING STOP RUNNING_P2P RUNNING
    RESUMING STOP RUNNING_P2P RUNNING PRE_COPY
    RESUMING STOP STOP_COPY
    RUNNING RUNNING_P2P PRE_COPY_P2P
    RUNNING RUNNING_P2P STOP
    RUNNING RUNNING_P2P STOP RESUMING
    RUNNING RUNNING_P2P STOP STOP_COPY
    RUNNING_P2P RUNNING PRE_COPY
    RUNNING_P2P STOP RESUMING
    RUNNING_P2P STOP STOP_COPY
    STOP RUNNING_P2P PRE_COPY_P2P
    STOP RUNNING_P2P RUNNING
    STOP RUNNING_P2P RUNNING PRE_COPY
    STOP_COPY STOP RESUMING
    STOP_COPY STOP RUNNING_P2P
    STOP_COPY STOP RUNNING_P2P RUNNING
"""


def parse_paths(text: str) -> dict[tuple[S, S], list[Arc]]:
    table = {}
    for line in text.split("\n"):
        states = [S[word] for word in line.split()]
        if states:
            arcs = [Arc(a, b) for a, b in itertools.pairwise(states)]
            table[states[0], states[-1]] = arcs
    return table


PATHS = {name: parse_paths(text) for name, text in KERNEL_PATHS.items()}
PAIRS = [(a, b) for a in S for b in S]


def device_in(state: S, flags: int) -> tuple[EmulatedMigrationDevice, list[int]]:
    """An emulated device brought to *state* through the machine, its arc log cleared,
    and the data fds that took (a RESUMING device has been given a whole stream)."""
    device = EmulatedMigrationDevice(flags=flags, size=64, on_invalid=S.ERROR)
    machine = DeviceStateMachine(device)
    fds = []
    if state == S.ERROR:  # a failed load puts this device in ERROR
        fds.append(machine.goto(S.RESUMING))
        with pytest.raises(DeviceError):
            machine.goto(S.STOP)
    else:
        fd = machine.goto(state)
        if fd is not None:
            fds.append(fd)
        if state == S.RESUMING:
            stream = memoryview(emulated_stream(0, 64))
            while stream:
                stream = stream[device.write_data(fd, stream) :]
    assert device.state == state
    device.arcs.clear()
    return device, fds


@pytest.fixture
def close_fds() -> Iterator[list[int]]:
    fds: list[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


@pytest.mark.parametrize("features", FLAGS)
@pytest.mark.parametrize(("current", "target"), PAIRS, ids=[f"{a.name}-{b.name}" for a, b in PAIRS])
def test_every_arc_request_follows_the_kernel(
    features: str, current: S, target: S, close_fds: list[int]
) -> None:
    flags = FLAGS[features]
    caps = MigrationCaps(flags)
    if not caps.supports(current) and current != S.ERROR:
        with pytest.raises(UsageError, match=f"current state {current.name} is not one"):
            plan(current, target, caps)
        return
    device, fds = device_in(current, flags)
    close_fds.extend(fds)
    machine = DeviceStateMachine(device)
    expected = PATHS[features].get((current, target))
    if current == S.ERROR:
        with pytest.raises(DeviceError, match="is in ERROR: only a reset"):
            machine.goto(target)
    elif current == target:
        assert machine.goto(target) is None
    elif expected is None:
        with pytest.raises(UsageError, match=f"{device.name}: .*{target.name}"):
            machine.goto(target)
    else:
        data_fd = machine.goto(target)
        assert device.arcs == expected
        assert device.state == target
        if expected[-1].opens_session:
            assert data_fd is not None
            close_fds.append(data_fd)
            assert stat.S_ISFIFO(os.fstat(data_fd).st_mode)
        else:
            assert data_fd is None
        return
    assert device.arcs == []  # refused or already there: no state change was requested
    assert device.state == current


def test_the_table_covers_every_supported_pair() -> None:
    for features, flags in FLAGS.items():
        caps = MigrationCaps(flags)
        states = [s for s in S if caps.supports(s)]
        blocked = {(S.STOP_COPY, S.PRE_COPY), (S.STOP_COPY, S.PRE_COPY_P2P)}
        pairs = {(a, b) for a in states for b in states if a != b} - blocked
        assert set(PATHS[features]) == pairs, features


def test_combinations_match_the_kernel_comment() -> None:
    multi_step = {pair: arcs for pair, arcs in PATHS["both"].items() if len(arcs) > 1}
    assert multi_step == parse_paths(KERNEL_COMMENT_COMBINATIONS)


@pytest.mark.parametrize("features", FLAGS)
def test_paths_are_shortest_over_the_driver_arcs(features: str) -> None:
    arcs = driver_arcs(FLAGS[features])
    for (source, target), path in PATHS[features].items():
        assert set(path) <= arcs
        distance = {source: 0}
        queue = deque([source])
        while queue:
            state = queue.popleft()
            for arc in arcs:
                if arc.source == state and arc.target not in distance:
                    distance[arc.target] = distance[state] + 1
                    queue.append(arc.target)
        assert len(path) == distance[target], (source, target)


@pytest.mark.parametrize("features", FLAGS)
def test_only_the_last_arc_of_a_path_opens_a_session(features: str) -> None:
    for path in PATHS[features].values():
        assert not any(arc.opens_session for arc in path[:-1]), path


@pytest.mark.parametrize("target", [S.PRE_COPY, S.PRE_COPY_P2P])
def test_stop_copy_to_pre_copy_is_never_sent(target: S, close_fds: list[int]) -> None:
    """Debian's 6.12 kernel hangs on this arc: it must be refused before any request."""
    device, fds = device_in(S.STOP_COPY, FLAGS["both"])
    close_fds.extend(fds)
    with pytest.raises(UsageError, match=f"blocks STOP_COPY -> {target.name}"):
        DeviceStateMachine(device).goto(target)
    assert device.arcs == []


def test_error_is_left_by_reset_only(close_fds: list[int]) -> None:
    device, fds = device_in(S.ERROR, FLAGS["both"])
    close_fds.extend(fds)
    machine = DeviceStateMachine(device)
    for target in S:
        with pytest.raises(DeviceError, match="ERROR"):
            machine.goto(target)
    assert device.arcs == []
    assert machine.reset() == S.RUNNING
    assert device.resets == 1


# --- capabilities and the migration blocker ------------------------------------------


def test_probe_reports_flags() -> None:
    caps = probe(EmulatedMigrationDevice(flags=STOP_COPY | PRE_COPY))
    assert caps == MigrationCaps(STOP_COPY | PRE_COPY)
    assert caps.pre_copy and not caps.p2p
    assert stop_copy_size(EmulatedMigrationDevice(size=100)) == 124
    assert stop_copy_size(EmulatedMigrationDevice(flags=None)) is None  # ENOTTY


@pytest.mark.parametrize(
    ("flags", "reason"),
    [(None, "no VFIO migration v2 .*ENOTTY"), (P2P | PRE_COPY, "flags 0x6 lack STOP_COPY")],
)
def test_a_device_without_migration_is_blocked_with_its_reason(
    flags: int | None, reason: str
) -> None:
    device = EmulatedMigrationDevice(flags=flags)
    caps = probe(device)
    assert caps.blocker is not None and not caps.supports(S.RUNNING)
    message = f"{device.name}: device does not support migration: .*{reason}"
    with pytest.raises(DeviceError, match=message):
        DeviceStateMachine(device)
    with pytest.raises(DeviceError, match=message):
        save_device_data(device, io.BytesIO())
    with pytest.raises(DeviceError, match=message):
        load_device_data(device, io.BytesIO(bytes(24)), 24)


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


class FdMeddler(EmulatedMigrationDevice):
    """Returns a stray data fd on RUNNING -> STOP, and none on STOP -> STOP_COPY."""

    stray = -1

    def device_feature(self, flags: int, payload: bytes = b"") -> bytes:
        answer = super().device_feature(flags, payload)
        if flags & vfio.VFIO_DEVICE_FEATURE_SET:
            target = DeviceState(int.from_bytes(payload[:4], "little"))
            if target == S.STOP and self.arcs[-1].source == S.RUNNING:
                self.stray, writer = os.pipe()
                os.close(writer)
                return answer[:4] + self.stray.to_bytes(4, "little", signed=True)
            if target == S.STOP_COPY:
                return answer[:4] + (-1).to_bytes(4, "little", signed=True)
        return answer


def test_data_fds_where_the_uapi_has_none_are_refused() -> None:
    device = FdMeddler(flags=STOP_COPY)
    machine = DeviceStateMachine(device)
    with pytest.raises(DeviceError, match=r"RUNNING->STOP returned an unexpected data fd"):
        machine.goto(S.STOP)
    with pytest.raises(OSError) as caught:
        os.fstat(device.stray)
    assert caught.value.errno == errno.EBADF  # closed, not leaked
    with pytest.raises(DeviceError, match=r"STOP->STOP_COPY returned no data fd"):
        machine.goto(S.STOP_COPY)
