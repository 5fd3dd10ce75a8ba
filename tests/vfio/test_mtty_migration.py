"""VFIO migration v2 on real devices: two dual-port mtty mediated devices, a source and
a destination, and the plain vfio-pci devices, which cannot migrate.

These run inside the QEMU test guest (tests/vm), whose Debian 6.12 kernel hangs if ever
asked for STOP_COPY -> PRE_COPY.  mtty's stream for two ports is 96 bytes: a 24-byte
header (magic, version 1.0, number of ports, flags) in PRE_COPY, then one 36-byte
``struct serial_port`` per port in STOP_COPY.  Its UART registers sit in BAR0 (port 0)
and BAR1 (port 1), eight bytes each, as a 16550's.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vfio.test_vfio_device import promised
from vmstate.device_data import load_device_data, save_device_data
from vmstate.device_regions import VfioDevice
from vmstate.errors import DeviceError, UsageError
from vmstate.migration import (
    DeviceState,
    DeviceStateMachine,
    MigrationCaps,
    plan,
    probe,
    stop_copy_size,
)

pytestmark = pytest.mark.vfio

S = DeviceState
MDEVS = Path("/sys/bus/mdev/devices")
VFIO_PCI = Path("/sys/bus/pci/drivers/vfio-pci")
SOURCE = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"
DESTINATION = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1002"

MTTY_MAGIC = 0x7E9D09898C3E2C4E
HEADER = struct.Struct("<QIIII")  # magic, major, minor, nr_ports, flags
PORT_SIZE = 36  # struct serial_port
STREAM_SIZE = HEADER.size + 2 * PORT_SIZE
# 16550 register offsets, and where struct serial_port keeps what they set.
RX_TX, IER, FCR, LCR, MCR, SCR = 0, 1, 2, 3, 4, 7
LCR_DLAB = 0x80
FCR_ENABLE_AND_CLEAR = 0x07
FIFO_AT, COUNT_AT, DLAB_AT, DIVISOR_AT = 8, 26, 27, 30


def _available(path: Path, what: str) -> None:
    if not path.exists():
        promised(f"{path} is missing ({what})")


@pytest.fixture
def mtty() -> Iterator[tuple[VfioDevice, VfioDevice]]:
    """The source and destination mtty, opened and RUNNING; left RUNNING again after."""
    for uuid in (SOURCE, DESTINATION):
        _available(MDEVS / uuid, "the test guest creates two mtty mdevs")
    with contextlib.ExitStack() as stack:
        devices = tuple(stack.enter_context(VfioDevice.open(u)) for u in (SOURCE, DESTINATION))
        for device in devices:
            DeviceStateMachine(device).reset()
        yield devices[0], devices[1]
        for device in devices:
            DeviceStateMachine(device).reset()


def uart(device: VfioDevice, port: int, register: int) -> int:
    return device.read(port, register, 1)[0]


def set_uart(device: VfioDevice, port: int, register: int, value: int) -> None:
    device.write(port, register, bytes([value]))


def program_source(device: VfioDevice) -> None:
    """Non-default state in both ports: line control, scratch, modem control, two bytes
    waiting in port 0's (emptied) loopback FIFO, and port 1 left with DLAB set on
    divisor 12."""
    set_uart(device, 0, FCR, FCR_ENABLE_AND_CLEAR)
    set_uart(device, 0, LCR, 0x1B)
    set_uart(device, 0, SCR, 0xA5)
    set_uart(device, 0, MCR, 0x03)
    set_uart(device, 0, RX_TX, ord("v"))
    set_uart(device, 0, RX_TX, ord("m"))
    set_uart(device, 1, LCR, LCR_DLAB | 0x03)
    set_uart(device, 1, RX_TX, 0x0C)  # divisor low byte, with DLAB set
    set_uart(device, 1, IER, 0x00)  # divisor high byte
    set_uart(device, 1, SCR, 0x5A)


def assert_programmed(device: VfioDevice) -> None:
    assert (uart(device, 0, LCR), uart(device, 0, SCR), uart(device, 0, MCR)) == (0x1B, 0xA5, 0x03)
    assert (uart(device, 1, LCR), uart(device, 1, SCR)) == (LCR_DLAB | 0x03, 0x5A)
    assert (uart(device, 1, RX_TX), uart(device, 1, IER)) == (0x0C, 0x00)  # the divisor
    assert bytes([uart(device, 0, RX_TX), uart(device, 0, RX_TX)]) == b"vm"  # the FIFO


def saved_source(device: VfioDevice) -> bytes:
    program_source(device)
    sink = io.BytesIO()
    save_device_data(device, sink)
    return sink.getvalue()


def test_mtty_offers_every_migration_feature(mtty: tuple[VfioDevice, VfioDevice]) -> None:
    source, _ = mtty
    caps = probe(source)
    assert caps == MigrationCaps(0x7)  # STOP_COPY | P2P | PRE_COPY
    assert stop_copy_size(source) == STREAM_SIZE
    assert DeviceStateMachine(source).state() == S.RUNNING


def test_save_pre_copy_then_stop_copy(mtty: tuple[VfioDevice, VfioDevice]) -> None:
    """RUNNING -> PRE_COPY (read the header) -> STOP_COPY (read the ports) -> STOP.

    mtty ends a PRE_COPY read with 0 rather than ENOMSG: both are a pause there."""
    source, _ = mtty
    program_source(source)
    sink = io.BytesIO()
    reports: list[tuple[int, int | None]] = []
    saved = save_device_data(source, sink, lambda done, total: reports.append((done, total)))
    data = sink.getvalue()
    assert (saved.size, saved.precopy_size, saved.precopy_rounds) == (STREAM_SIZE, 24, 1)
    assert DeviceStateMachine(source).state() == S.STOP
    assert HEADER.unpack_from(data) == (MTTY_MAGIC, 1, 0, 2, 0)
    port0, port1 = HEADER.size, HEADER.size + PORT_SIZE
    assert data[port0 + SCR] == 0xA5 and data[port1 + SCR] == 0x5A
    assert data[port0 + FIFO_AT : port0 + FIFO_AT + 2] == b"vm" and data[port0 + COUNT_AT] == 2
    assert data[port1 + DLAB_AT] == 1
    assert struct.unpack_from("<H", data, port1 + DIVISOR_AT) == (0x0C,)
    assert reports[0] == (24, 24) and reports[-1] == (STREAM_SIZE, STREAM_SIZE)


def test_load_carries_the_registers_over(mtty: tuple[VfioDevice, VfioDevice]) -> None:
    """STOP -> RESUMING (write) -> STOP on the destination, then RUNNING again."""
    source, destination = mtty
    data = saved_source(source)
    set_uart(destination, 0, SCR, 0x33)
    machine = DeviceStateMachine(destination)
    machine.goto(S.STOP)
    reports: list[tuple[int, int | None]] = []
    load_device_data(destination, io.BytesIO(data), len(data), lambda d, t: reports.append((d, t)))
    assert machine.state() == S.STOP
    assert reports == [(STREAM_SIZE, STREAM_SIZE)]
    machine.goto(S.RUNNING)
    assert_programmed(destination)


def damage_magic(data: bytes) -> bytes:
    return bytes([data[0] ^ 0xFF]) + data[1:]


def damage_version(data: bytes) -> bytes:
    return data[:8] + struct.pack("<I", 2) + data[12:]


def damage_ports(data: bytes) -> bytes:
    return data[:16] + struct.pack("<I", 1) + data[20:]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (damage_magic, "refused the data at byte 0: EFAULT"),
        (damage_version, "refused the data at byte 0: EFAULT"),
        (damage_ports, "refused the data at byte 0: EFAULT"),
        (lambda d: d[:60], r"RESUMING->STOP failed, the device is now in RESUMING"),
        (lambda d: d + bytes(8), "refused the data at byte 0: ENOMEM"),
    ],
    ids=["magic", "version", "nr-ports", "short", "long"],
)
def test_corrupted_data_is_refused_and_the_destination_reset(
    mtty: tuple[VfioDevice, VfioDevice], damage: Callable[[bytes], bytes], message: str
) -> None:
    source, destination = mtty
    data = saved_source(source)
    set_uart(destination, 0, SCR, 0x33)
    bad = damage(data)
    with pytest.raises(DeviceError, match=message) as caught:
        load_device_data(destination, io.BytesIO(bad), len(bad))
    assert "was left in RESUMING and was reset (now RUNNING)" in str(caught.value)
    machine = DeviceStateMachine(destination)
    assert machine.state() == S.RUNNING
    assert uart(destination, 0, SCR) == 0x33  # nothing of the bad stream was taken
    load_device_data(destination, io.BytesIO(data), len(data))  # still usable
    machine.goto(S.RUNNING)
    assert_programmed(destination)


def _bring(machine: DeviceStateMachine, state: S, stream: bytes, fds: list[int]) -> None:
    """From RUNNING to *state*; a RESUMING device is given a whole stream to validate."""
    fd = machine.goto(state)
    if fd is not None:
        fds.append(fd)
    if state == S.RESUMING:
        assert fd is not None
        assert os.write(fd, stream) == len(stream)


def test_the_kernel_takes_every_planned_path(mtty: tuple[VfioDevice, VfioDevice]) -> None:
    """Each path the planner makes between two of mtty's seven states, arc by arc."""
    source, destination = mtty
    stream = saved_source(source)
    machine = DeviceStateMachine(destination)
    states = [s for s in S if machine.caps.supports(s)]
    walked = 0
    for current in states:
        for target in states:
            if current == target or (current, target) in {
                (S.STOP_COPY, S.PRE_COPY),
                (S.STOP_COPY, S.PRE_COPY_P2P),
            }:
                continue
            fds: list[int] = []
            try:
                _bring(machine, current, stream, fds)
                _bring(machine, target, stream, fds)
                assert machine.state() == target, (current, target)
            finally:
                for fd in fds:
                    os.close(fd)
                machine.reset()
            walked += 1
    assert walked == 40


def test_stop_copy_to_pre_copy_is_refused_before_the_kernel_sees_it(
    mtty: tuple[VfioDevice, VfioDevice],
) -> None:
    """Sent to this guest's 6.12 kernel, the request would never return."""
    source, _ = mtty
    machine = DeviceStateMachine(source)
    fd = machine.goto(S.STOP_COPY)
    assert fd is not None
    try:
        with pytest.raises(UsageError, match="blocks STOP_COPY -> PRE_COPY"):
            machine.goto(S.PRE_COPY)
        assert machine.state() == S.STOP_COPY
        with pytest.raises(UsageError):
            plan(S.STOP_COPY, S.PRE_COPY_P2P, machine.caps)
    finally:
        os.close(fd)
    machine.goto(S.RUNNING)


def test_plain_vfio_pci_devices_cannot_migrate() -> None:
    """vfio-pci answers ENOTTY: the device is blocked with that reason, its data refused."""
    _available(VFIO_PCI, "the test guest binds QEMU's test devices to vfio-pci")
    names = sorted(p.name for p in VFIO_PCI.iterdir() if p.name.count(":") == 2)
    assert names, f"no device is bound to {VFIO_PCI}"
    for name in names:
        with VfioDevice.open(name) as device:
            caps = probe(device)
            assert caps.flags == 0 and caps.blocker is not None and "ENOTTY" in caps.blocker
            with pytest.raises(DeviceError, match=f"{name}: device does not support migration"):
                save_device_data(device, io.BytesIO())
