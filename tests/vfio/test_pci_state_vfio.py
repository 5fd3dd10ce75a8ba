"""vmstate save/load on real vfio-pci functions: the QEMU test guest's edu,
pci-testdev, two e1000e and ivshmem, bound to vfio-pci behind a virtual IOMMU (tests/vm).

vfio-pci resets a function when it is opened and restores the config it saved when it
is closed; these tests hold the kernel to that and vmstate to what it says about it.
On the host they stand in for their run in the guest (see tests/vfio/conftest.py).
"""

from __future__ import annotations

import contextlib
import io
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfio.test_vfio_device import SYSFS_PCI, VFIO_PCI, bound, ids, promised
from vmstate import pci_vfio
from vmstate.cli import main
from vmstate.device_load import load
from vmstate.device_regions import VfioDevice
from vmstate.device_save import write_state
from vmstate.errors import DeviceError, IncompatibleError
from vmstate.pci.decode import decode_config
from vmstate.pci.ids import pci_ids
from vmstate.pci_vfio import CONFIG
from vmstate.saved_file import read_file

pytestmark = pytest.mark.vfio

E1000E = (0x8086, 0x10D3)
MSIX_BAR = 3  # e1000e: MSI-X table at BAR3 + 0, PBA at BAR3 + 0x2000


@pytest.fixture
def names() -> list[str]:
    found = bound()
    if not found:
        promised(f"no device is bound to vfio-pci ({VFIO_PCI})")
    return found


@contextlib.contextmanager
def opened(*bdfs: str) -> Iterator[list[VfioDevice]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(VfioDevice.open(b)) for b in bdfs]


def test_save_reads_sysfs_without_opening_through_vfio(
    names: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for bdf in names:
        out = tmp_path / f"{bdf}.vms"
        sysfs = (SYSFS_PCI / bdf / "config").read_bytes()
        assert main(["save", bdf, "-o", str(out)]) == 0
        said = capsys.readouterr().out
        assert "read-only from sysfs (bound to vfio-pci, not opened: that resets it)" in said
        state = read_file(out.read_bytes()).config.state
        saved = state["config"] + state.get("extended_config", b"")
        assert saved == sysfs, "the config as sysfs shows it (an idle function is in D3hot)"
        assert (SYSFS_PCI / bdf / "config").read_bytes() == sysfs, "the save changed nothing"
        ours = decode_config(saved)
        assert (state["vendor_id"], state["device_id"]) == ids(bdf)
        assert ours.problems == ()
        resources = (SYSFS_PCI / bdf / "resource").read_text().splitlines()
        for index in range(6):
            start, end, _ = (int(x, 16) for x in resources[index].split())
            assert state["bars"][index]["size"] == (end - start + 1 if end else 0), (bdf, index)
        assert main(["show", str(out)]) == 0
        name = pci_ids().device_name(state["vendor_id"], state["device_id"])
        assert name in capsys.readouterr().out


def saved_file_of(device: VfioDevice) -> bytes:
    """The file vmstate save writes, of a device the test holds open through VFIO."""
    out = io.BytesIO()
    write_state(device, out)
    return out.getvalue()


def _e1000e_pair(names: list[str]) -> tuple[str, str]:
    pair = [b for b in names if ids(b) == E1000E]
    assert len(pair) == 2, f"the guest must have two e1000e bound to vfio-pci, found {pair}"
    return pair[0], pair[1]


def _program(dev: VfioDevice) -> None:
    """Leave the source as a driver would: decoding and mastering on, MSI and MSI-X set up."""
    state = pci_vfio.read_state(dev)
    msi = state["msi_offset"]
    dev.write(CONFIG, msi + 4, struct.pack("<IIH", 0xFEE0100C, 0, 0x4061))
    dev.write(CONFIG, 0x3C, b"\x0a")
    msix = pci_vfio.read_state(dev)["vfio-pci-config/msix-table"]
    table = b"".join(
        struct.pack("<IIII", 0xFEE00000 | v << 12, 0, 0x4030 + v, 0)
        for v in range(msix["table_size"])
    )
    pci_vfio._bar_io(dev, MSIX_BAR, msix["table_offset"], table)
    dev.write(
        CONFIG, state["msix_offset"] + 2, struct.pack("<H", 0x8000 | (msix["control"] & 0x7FF))
    )
    dev.write(CONFIG, 0x04, struct.pack("<H", 0x0006))


def test_save_e1000e_and_load_into_the_second(names: list[str], tmp_path: Path) -> None:
    """vfio-pci restores a device's config when its last file descriptor closes, so the
    load is checked while the destination is still open, as a VMM would hold it."""
    src_bdf, dst_bdf = _e1000e_pair(names)
    with opened(src_bdf) as (src,):
        _program(src)
        saved = pci_vfio.read_state(src)
        assert saved["msix_saved"], "the MSI-X table must be reachable (MSIX_MAPPABLE)"
        data = saved_file_of(src)
    out = tmp_path / "e1000e.vms"
    out.write_bytes(data)
    assert main(["load", "--dry-run", str(out), dst_bdf]) == 0
    with opened(dst_bdf) as (dst,):
        load(dst, data)
        after = pci_vfio.read_state(dst)
    assert [b["address"] for b in after["bars"]] == [b["address"] for b in saved["bars"]]
    assert after["command"] & 0x7 == saved["command"] & 0x7
    assert after["vfio-pci-config/msi-vectors"] == saved["vfio-pci-config/msi-vectors"]
    src_msix, dst_msix = saved["vfio-pci-config/msix-table"], after["vfio-pci-config/msix-table"]
    assert dst_msix["control"] & 0xC000 == src_msix["control"] & 0xC000
    assert dst_msix["table"] == src_msix["table"]
    assert after["interrupt_line"] == saved["interrupt_line"]


def _config(bdf: str) -> bytes:
    with opened(bdf) as (dev,):
        return pci_vfio.read_config(dev)


def test_load_into_another_type_and_corrupt_identity_are_refused(
    names: list[str], tmp_path: Path
) -> None:
    src_bdf, dst_bdf = _e1000e_pair(names)
    others = [b for b in names if ids(b) != E1000E]
    assert others, "the guest must have devices of other types bound to vfio-pci"
    with opened(src_bdf) as (src,):
        data = saved_file_of(src)
    for other in others:
        before = _config(other)
        with opened(other) as (dev,), pytest.raises(IncompatibleError) as info:
            load(dev, data)
        assert info.value.path[0] == "vfio-pci-config"
        assert _config(other) == before, f"{other} changed after a rejected load"
    section = read_file(data).config.section
    vendor_at = data.index(struct.pack(">HH", *E1000E), section.start + 2 + 256)
    corrupt = bytearray(data)
    corrupt[vendor_at] ^= 0x01
    path = tmp_path / "corrupt.vms"
    path.write_bytes(bytes(corrupt))
    before = _config(dst_bdf)
    assert main(["load", str(path), dst_bdf, "--", "true"]) == 1
    assert _config(dst_bdf) == before


# -- what vfio-pci does on open and close, and what vmstate makes of it -------------------

COMMAND_AT = 0x04


def sysfs_command(bdf: str) -> int:
    return int(struct.unpack_from("<H", (SYSFS_PCI / bdf / "config").read_bytes(), COMMAND_AT)[0])


@contextlib.contextmanager
def sysfs_command_set(bdf: str, value: int) -> Iterator[int]:
    """The function's command register set through sysfs (no VFIO), put back after."""
    before = sysfs_command(bdf)
    with (SYSFS_PCI / bdf / "config").open("r+b", buffering=0) as config:
        config.seek(COMMAND_AT)
        config.write(struct.pack("<H", value))
        try:
            yield before
        finally:
            config.seek(COMMAND_AT)
            config.write(struct.pack("<H", before))


def test_a_save_leaves_the_function_as_it_was(names: list[str], tmp_path: Path) -> None:
    """Opening through VFIO and closing again would clear bus mastering (vfio-pci disables
    the function on close): the save reads sysfs, so the bit stays, and is saved."""
    bdf, _ = _e1000e_pair(names)
    with sysfs_command_set(bdf, 0x0107):
        assert main(["save", bdf, "-o", str(tmp_path / "s.vms")]) == 0
        assert sysfs_command(bdf) == 0x0107
        assert read_file((tmp_path / "s.vms").read_bytes()).config.state["command"] == 0x0107


def test_a_load_lasts_while_its_command_holds_the_function(
    names: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The loaded command register reaches the hardware (sysfs shows it) while the
    command runs; once vmstate exits, vfio-pci has put the function back."""
    src_bdf, dst_bdf = _e1000e_pair(names)
    saved = tmp_path / "src.vms"
    with sysfs_command_set(src_bdf, 0x0107):
        assert main(["save", src_bdf, "-o", str(saved)]) == 0
    before = sysfs_command(dst_bdf)
    assert before & 0x0004 == 0, "an idle function does no DMA"
    held = tmp_path / "held.bin"
    copy = f"import shutil; shutil.copyfile({str(SYSFS_PCI / dst_bdf / 'config')!r}, {str(held)!r})"
    assert main(["load", str(saved), dst_bdf, "--", sys.executable, "-c", copy]) == 0
    assert f"loaded: {saved} -> {dst_bdf}" in capsys.readouterr().out
    assert struct.unpack_from("<H", held.read_bytes(), COMMAND_AT)[0] & 0x0007 == 0x0007
    assert sysfs_command(dst_bdf) == before, "closed: vfio-pci restored its config"
    status = main(["load", str(saved), dst_bdf, "--", sys.executable, "-c", "exit(3)"])
    assert status == 3, "the command's exit status is the load's"


class FailingVfio(VfioDevice):
    """A real VFIO device whose config write number ``fail_at`` fails, once."""

    fail_at = 0
    writes = 0

    def write(self, index: int, offset: int, data: bytes) -> None:
        if index == CONFIG:
            self.writes += 1
            if self.writes == self.fail_at:
                raise DeviceError(f"{self.name}: write {self.writes} failed (injected)")
        super().write(index, offset, data)


def _held_view(dev: VfioDevice) -> tuple[bytes, bytes]:
    """Config space and MSI-X table as the kernel presents them (memory decoding is on)."""
    return pci_vfio.read_config(dev), pci_vfio._bar_io(dev, MSIX_BAR, 0, 5 * 16)


def test_a_load_failing_at_any_config_write_puts_the_config_back(
    names: list[str],
) -> None:
    src_bdf, dst_bdf = _e1000e_pair(names)
    with opened(src_bdf) as (src,):
        _program(src)
        data = saved_file_of(src)
    with contextlib.closing(FailingVfio.open(dst_bdf)) as dst:
        assert isinstance(dst, FailingVfio)
        dst.write(CONFIG, 0x3C, b"\x05")  # an interrupt line of its own
        dst.write(CONFIG, COMMAND_AT, struct.pack("<H", 0x0002))  # memory on: the table reads
        before = _held_view(dst)
        for fail_at in range(1, 64):
            dst.writes, dst.fail_at = 0, fail_at
            try:
                load(dst, data)
            except DeviceError as e:
                assert "(injected); its config was restored as it was before the load" in str(e)
                assert _held_view(dst) == before, f"config not restored after write {fail_at}"
                continue
            break
        else:
            raise AssertionError("the load never succeeded")
        assert dst.writes == fail_at - 1 > 10, "each config write of the load failed once"
        assert _held_view(dst) != before
        after = pci_vfio.read_state(dst)
    assert after["interrupt_line"] == 0x0A and after["command"] & 0x7 == 0x6
