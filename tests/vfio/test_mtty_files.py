"""vmstate save / show / load of whole mtty devices (config state + device data) in
the QEMU test guest: the files the command line writes, checked end to end."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfio.test_mtty_migration import (
    DESTINATION,
    FCR,
    FCR_ENABLE_AND_CLEAR,
    MDEVS,
    SCR,
    SOURCE,
    _available,
    assert_programmed,
    program_source,
    set_uart,
    uart,
)
from vmstate._lowlevel import ioctl, vfio
from vmstate.cli import main
from vmstate.device_load import load
from vmstate.device_regions import VfioDevice
from vmstate.migration import DeviceState, DeviceStateMachine
from vmstate.saved_file import read_file

pytestmark = pytest.mark.vfio


@contextlib.contextmanager
def opened(uuid: str) -> Iterator[VfioDevice]:
    """A VFIO group opens once: tests open a device only while the command line does not."""
    with VfioDevice.open(uuid) as device:
        yield device


@pytest.fixture
def mtty_pair() -> Iterator[None]:
    """Both mtty mdevs reset (RUNNING) before and after each test, and closed in between."""
    for uuid in (SOURCE, DESTINATION):
        _available(MDEVS / uuid, "the test guest creates two mtty mdevs")
    for uuid in (SOURCE, DESTINATION):
        with opened(uuid) as device:
            DeviceStateMachine(device).reset()
    yield
    for uuid in (SOURCE, DESTINATION):
        with opened(uuid) as device:
            DeviceStateMachine(device).reset()


def state_of(uuid: str) -> DeviceState:
    with opened(uuid) as device:
        return DeviceStateMachine(device).state()


def scratch(uuid: str) -> int:
    with opened(uuid) as device:
        return uart(device, 0, SCR)


def prepare() -> None:
    """Non-default registers on the source; a marker in the destination's scratch register."""
    with opened(SOURCE) as source:
        program_source(source)
    with opened(DESTINATION) as destination:
        set_uart(destination, 0, FCR, FCR_ENABLE_AND_CLEAR)
        set_uart(destination, 0, SCR, 0x33)


def test_save_show_and_load_an_mtty_through_the_command_line(
    mtty_pair: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare()
    path = tmp_path / "mtty.vms"
    assert main(["save", SOURCE, "-o", str(path)]) == 0
    said = capsys.readouterr().out
    assert "through VFIO (mediated device mtty-2)" in said and "device data 96 bytes" in said
    assert state_of(SOURCE) == DeviceState.RUNNING
    assert main(["show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "device data as mtty-migration-data:" in shown
    assert "magic: 0x7e9d09898c3e2c4e" in shown and "nr_ports: 2" in shown
    assert main(["load", str(path), DESTINATION, "--dry-run"]) == 0
    assert scratch(DESTINATION) == 0x33
    assert main(["load", str(path), DESTINATION]) == 0
    assert state_of(DESTINATION) == DeviceState.RUNNING
    with opened(DESTINATION) as destination:
        assert_programmed(destination)


def damaged(data: bytes, at: int, value: bytes) -> bytes:
    """*data* with *value* written at byte *at* of its device data."""
    saved = read_file(data)
    assert saved.data is not None
    start, _ = saved.data.payload.chunks[0]
    out = bytearray(data)
    out[start + at : start + at + len(value)] = value
    return bytes(out)


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, struct.pack("<Q", 0x1234), "magic_ok"),
        (8, struct.pack("<I", 9), "version_ok"),
        (16, struct.pack("<I", 7), "ports_ok"),
    ],
    ids=["magic", "version", "ports"],
)
def test_corrupt_device_data_is_refused_and_the_destination_untouched(
    mtty_pair: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    offset: int,
    value: bytes,
    message: str,
) -> None:
    prepare()
    good = tmp_path / "good.vms"
    assert main(["save", SOURCE, "-o", str(good)]) == 0
    bad = tmp_path / "bad.vms"
    bad.write_bytes(damaged(good.read_bytes(), offset, value))
    capsys.readouterr()
    assert main(["load", str(bad), DESTINATION]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert state_of(DESTINATION) not in (DeviceState.RESUMING, DeviceState.ERROR)
    assert scratch(DESTINATION) == 0x33


def test_a_chunk_size_beyond_the_file_is_refused(mtty_pair: None, tmp_path: Path) -> None:
    prepare()
    good = tmp_path / "good.vms"
    assert main(["save", SOURCE, "-o", str(good)]) == 0
    saved = read_file(good.read_bytes())
    assert saved.data is not None
    start, size = saved.data.payload.chunks[-1]
    data = bytearray(good.read_bytes())
    data[start - 8 : start] = (size + (1 << 20)).to_bytes(8, "big")
    bad = tmp_path / "bad.vms"
    bad.write_bytes(bytes(data))
    assert main(["load", str(bad), DESTINATION]) == 1
    assert state_of(DESTINATION) not in (DeviceState.RESUMING, DeviceState.ERROR)
    assert scratch(DESTINATION) == 0x33


class StateLoggingVfio(VfioDevice):
    """A real VFIO device that asks the kernel its migration state at each config write."""

    states: list[DeviceState]

    def write(self, index: int, offset: int, data: bytes) -> None:
        if index == vfio.VFIO_PCI_CONFIG_REGION_INDEX:
            self.states.append(DeviceState(ioctl.get_mig_state(self.fd).device_state))
        super().write(index, offset, data)


def test_the_config_is_restored_while_the_device_is_stopped(
    mtty_pair: None, tmp_path: Path
) -> None:
    """As QEMU restores a VFIO device: its config before it runs again."""
    prepare()
    path = tmp_path / "mtty.vms"
    assert main(["save", SOURCE, "-o", str(path)]) == 0
    with contextlib.closing(StateLoggingVfio.open(DESTINATION)) as destination:
        assert isinstance(destination, StateLoggingVfio)
        destination.states = []
        load(destination, path.read_bytes())
        assert destination.states and set(destination.states) == {DeviceState.STOP}
        assert DeviceStateMachine(destination).state() == DeviceState.RUNNING
        assert_programmed(destination)
