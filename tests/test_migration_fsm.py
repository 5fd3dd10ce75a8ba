"""VFIO migration v2 without a kernel: the state machine's arcs for every pair of states
and every set of optional features, checked against the kernel's table, on an emulated
device that takes only the arcs a driver implements (moving data: test_device_data)."""

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
from vmstate.device_data import load_device_data, save_device_data
from vmstate.errors import DeviceError, UsageError
from vmstate.migration import (
    Arc,
    DeviceState,
    DeviceStateMachine,
    MigrationCaps,
    driver_arcs,
    plan,
    probe,
    stop_copy_size,
)
from vmstate.testing.migration import EmulatedMigrationDevice, emulated_stream

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
