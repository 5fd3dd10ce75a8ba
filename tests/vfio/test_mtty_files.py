"""vmstate save / show / load of whole mtty devices (config state + device data) in
the QEMU test guest: the files the command line writes, checked end to end."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from vfio.test_mtty_migration import (
    DESTINATION,
    FCR,
    FCR_ENABLE_AND_CLEAR,
    HEADER,
    SCR,
    SOURCE,
    assert_programmed,
    mtty,  # noqa: F401  (fixture)
    program_source,
    set_uart,
    uart,
)
from vmstate import vfio_state
from vmstate.cli import main
from vmstate.device_regions import VfioDevice
from vmstate.migration import DeviceState, DeviceStateMachine

pytestmark = pytest.mark.vfio


def _state(device: VfioDevice) -> DeviceState:
    return DeviceStateMachine(device).state()


def test_save_show_and_load_an_mtty_through_the_command_line(
    mtty: tuple[VfioDevice, VfioDevice],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, destination = mtty
    program_source(source)
    path = tmp_path / "mtty.vms"
    assert main(["save", SOURCE, "-o", str(path)]) == 0
    said = capsys.readouterr().out
    assert "through VFIO (mediated device mtty-2)" in said and "device data 96 bytes" in said
    assert _state(source) == DeviceState.RUNNING
    assert main(["show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "device data as mtty-migration-data:" in shown
    assert "magic: 0x7e9d09898c3e2c4e" in shown and "nr_ports: 2" in shown
    set_uart(destination, 0, SCR, 0x33)
    assert main(["load", str(path), DESTINATION, "--dry-run"]) == 0
    assert uart(destination, 0, SCR) == 0x33
    assert main(["load", str(path), DESTINATION]) == 0
    assert _state(destination) == DeviceState.RUNNING
    assert_programmed(destination)


def _damaged(data: bytes, at: int, value: bytes) -> bytes:
    saved = vfio_state.read_file(data)
    assert saved.payload is not None
    start, _ = saved.payload.chunks[0]
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
    mtty: tuple[VfioDevice, VfioDevice],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    offset: int,
    value: bytes,
    message: str,
) -> None:
    source, destination = mtty
    program_source(source)
    good = tmp_path / "good.vms"
    assert main(["save", SOURCE, "-o", str(good)]) == 0
    bad = tmp_path / "bad.vms"
    bad.write_bytes(_damaged(good.read_bytes(), offset, value))
    set_uart(destination, 0, FCR, FCR_ENABLE_AND_CLEAR)
    set_uart(destination, 0, SCR, 0x33)
    capsys.readouterr()
    assert main(["load", str(bad), DESTINATION]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert _state(destination) not in (DeviceState.RESUMING, DeviceState.ERROR)
    assert uart(destination, 0, SCR) == 0x33


def test_a_wrong_size_is_refused(
    mtty: tuple[VfioDevice, VfioDevice],  # noqa: F811
    tmp_path: Path,
) -> None:
    _source, destination = mtty
    good = tmp_path / "good.vms"
    assert main(["save", SOURCE, "-o", str(good)]) == 0
    saved = vfio_state.read_file(good.read_bytes())
    assert saved.payload is not None
    start, size = saved.payload.chunks[-1]
    data = bytearray(good.read_bytes())
    # a chunk that claims more bytes than the file holds
    data[start - 8 : start] = (size + 1 << 20).to_bytes(8, "big")
    bad = tmp_path / "bad.vms"
    bad.write_bytes(bytes(data))
    assert main(["load", str(bad), DESTINATION]) == 1
    assert _state(destination) not in (DeviceState.RESUMING, DeviceState.ERROR)
    assert HEADER.size == 24
