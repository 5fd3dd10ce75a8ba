"""vmstate save/load through real VFIO: the QEMU test guest's edu, pci-testdev,
two e1000e and ivshmem, bound to vfio-pci behind a virtual IOMMU (tests/vm).

On the host these stand in for their run in the guest (see tests/vfio/conftest.py).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfio.test_vfio_device import IN_GUEST, SYSFS_PCI, VFIO_PCI, bound, ids
from vmstate import pci_device_state
from vmstate.cli import main
from vmstate.device_regions import VfioDevice
from vmstate.errors import IncompatibleError
from vmstate.pci.decode import decode_config
from vmstate.pci.ids import pci_ids
from vmstate.pci_device_state import CONFIG

pytestmark = pytest.mark.vfio

E1000E = (0x8086, 0x10D3)
MSIX_BAR = 3  # e1000e: MSI-X table at BAR3 + 0, PBA at BAR3 + 0x2000


@pytest.fixture
def names() -> list[str]:
    found = bound()
    if not found:
        message = f"no device is bound to vfio-pci ({VFIO_PCI})"
        if IN_GUEST:
            pytest.fail(f"{message}, yet VMSTATE_IN_GUEST=1")
        pytest.skip(f"{message}; these tests run in the QEMU test guest (tests/vm)")
    return found


@contextlib.contextmanager
def opened(*bdfs: str) -> Iterator[list[VfioDevice]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(VfioDevice.open(b)) for b in bdfs]


def test_save_through_vfio_agrees_with_sysfs(
    names: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for bdf in names:
        out = tmp_path / f"{bdf}.vms"
        assert main(["save", bdf, "-o", str(out)]) == 0
        assert "through VFIO" in capsys.readouterr().out
        with open(out, "rb") as f:
            state = pci_device_state.find_section(f.read()).state
        assert state is not None
        sysfs = (SYSFS_PCI / bdf / "config").read_bytes()
        saved = state["config"] + state.get("extended_config", b"")
        ours, theirs = decode_config(saved), decode_config(sysfs[: len(saved)])
        assert (state["vendor_id"], state["device_id"]) == ids(bdf)
        assert ours.header.class_code == theirs.header.class_code
        assert [(c.offset, c.id) for c in ours.capabilities] == [
            (c.offset, c.id) for c in theirs.capabilities
        ]
        resources = (SYSFS_PCI / bdf / "resource").read_text().splitlines()
        for index in range(6):
            start, end, _ = (int(x, 16) for x in resources[index].split())
            assert state["bars"][index]["size"] == (end - start + 1 if end else 0), (bdf, index)
        assert main(["show", str(out)]) == 0
        name = pci_ids().device_name(state["vendor_id"], state["device_id"])
        assert name in capsys.readouterr().out


def _e1000e_pair(names: list[str]) -> tuple[str, str]:
    pair = [b for b in names if ids(b) == E1000E]
    assert len(pair) == 2, f"the guest must have two e1000e bound to vfio-pci, found {pair}"
    return pair[0], pair[1]


def _program(dev: VfioDevice) -> None:
    """Leave the source as a driver would: decoding and mastering on, MSI and MSI-X set up."""
    state = pci_device_state.read_state(dev)
    msi = state["msi_offset"]
    dev.write(CONFIG, msi + 4, struct.pack("<IIH", 0xFEE0100C, 0, 0x4061))
    dev.write(CONFIG, 0x3C, b"\x0a")
    msix = pci_device_state.read_state(dev)["vfio-pci-config/msix-table"]
    table = b"".join(
        struct.pack("<IIII", 0xFEE00000 | v << 12, 0, 0x4030 + v, 0)
        for v in range(msix["table_size"])
    )
    pci_device_state._bar_io(dev, MSIX_BAR, msix["table_offset"], table)
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
        saved = pci_device_state.read_state(src)
        assert saved["msix_saved"], "the MSI-X table must be reachable (MSIX_MAPPABLE)"
        data = pci_device_state.save(src)
    out = tmp_path / "e1000e.vms"
    out.write_bytes(data)
    assert main(["load", str(out), dst_bdf, "--dry-run"]) == 0
    with opened(dst_bdf) as (dst,):
        pci_device_state.load(dst, data)
        after = pci_device_state.read_state(dst)
    assert [b["address"] for b in after["bars"]] == [b["address"] for b in saved["bars"]]
    assert after["command"] & 0x7 == saved["command"] & 0x7
    assert after["vfio-pci-config/msi-vectors"] == saved["vfio-pci-config/msi-vectors"]
    src_msix, dst_msix = saved["vfio-pci-config/msix-table"], after["vfio-pci-config/msix-table"]
    assert dst_msix["control"] & 0xC000 == src_msix["control"] & 0xC000
    assert dst_msix["table"] == src_msix["table"]
    assert after["interrupt_line"] == saved["interrupt_line"]


def _config(bdf: str) -> bytes:
    with opened(bdf) as (dev,):
        return pci_device_state.read_config(dev)


def test_load_into_another_type_and_corrupt_identity_are_refused(
    names: list[str], tmp_path: Path
) -> None:
    src_bdf, dst_bdf = _e1000e_pair(names)
    others = [b for b in names if ids(b) != E1000E]
    assert others, "the guest must have devices of other types bound to vfio-pci"
    with opened(src_bdf) as (src,):
        data = pci_device_state.save(src)
    for other in others:
        before = _config(other)
        with opened(other) as (dev,), pytest.raises(IncompatibleError) as info:
            pci_device_state.load(dev, data)
        assert info.value.path[0] == "vfio-pci-config"
        assert _config(other) == before, f"{other} changed after a rejected load"
    section = pci_device_state.find_section(data)
    vendor_at = data.index(struct.pack(">HH", *E1000E), section.start + 2 + 256)
    corrupt = bytearray(data)
    corrupt[vendor_at] ^= 0x01
    path = tmp_path / "corrupt.vms"
    path.write_bytes(bytes(corrupt))
    before = _config(dst_bdf)
    assert main(["load", str(path), dst_bdf]) == 1
    assert _config(dst_bdf) == before
