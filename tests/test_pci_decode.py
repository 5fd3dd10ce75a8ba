"""Config-space decoding: captured devices (snapshots), bounded walks over broken chains,
QEMU's masks and the compatibility check."""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import DATA, require_tool
from hypothesis import given, settings
from hypothesis import strategies as st

from vmstate.errors import DecodeError, TruncatedError, VMStateError
from vmstate.pci.compat import check_compatible
from vmstate.pci.decode import decode_config
from vmstate.pci.extended import Acs, Ari, SrIov
from vmstate.pci.ids import PciIds
from vmstate.pci.masks import build_masks
from vmstate.pci.model import ChainEnd
from vmstate.pci.registers import MAX_CAPABILITIES, MAX_EXTENDED_CAPABILITIES
from vmstate.pci.render import render_text

PCI = DATA / "pci"
CAPTURED = sorted(PCI.glob("*.bin"))


def config(name: str) -> bytes:
    return (PCI / f"{name}.bin").read_bytes()


def codes(problems: tuple) -> list[str]:
    return [p.code for p in problems]


def layout(space) -> list[tuple[int, int]]:
    return [(c.offset, c.id) for c in space.capabilities]


def ext_layout(space) -> list[tuple[int, int]]:
    return [(c.offset, c.id) for c in space.extended_capabilities]


# --- every capture, as JSON and as text --------------------------------------------------


@pytest.mark.parametrize("path", CAPTURED, ids=lambda p: p.stem)
def test_decoded_json(path: Path, snapshot) -> None:
    decoded = decode_config(path.read_bytes()).to_json()
    assert json.loads(json.dumps(decoded)) == decoded
    assert decoded == snapshot


@pytest.mark.parametrize(
    "name",
    [
        "qemu-q35-nvme-sriov",
        "qemu-q35-pcie-root-port",
        "qemu-q35-e1000e-pcie",
        "qemu-pc-pci-bridge",
        "bad-cap-loop",
    ],
)
def test_rendered_text(name: str, snapshot) -> None:
    """A regression guard (tests/test_pci_lspci.py holds the text to lspci's); without a
    pci.ids so that the system's database does not change it."""
    assert render_text(decode_config(config(name), {0: 0x4000}), names=PciIds()) == snapshot


def test_captures_decode_without_problems() -> None:
    """Real devices are well formed; only the hand-made ones (and one QEMU oddity) are not."""
    troubled = {p.stem: codes(decode_config(p.read_bytes()).problems) for p in CAPTURED}
    troubled = {name: found for name, found in troubled.items() if found}
    assert troubled == {
        "bad-cap-id-ff": ["cap-broken"],
        "bad-cap-into-header": ["cap-pointer"],
        "bad-cap-loop": ["cap-loop"],
        "bad-ext-empty": ["ext-empty"],
        "bad-ext-loop": ["ext-loop"],
        "bad-ext-pointer-low": ["ext-pointer"],
        "bad-msi-count": ["msi-count"],
        "bad-msix-bir": ["msix-bir"],
        # QEMU gives vmxnet3 a DSN at 0x100 even where it has no PCIe capability
        "qemu-pc-vmxnet3": ["ext-not-express"],
    }


# --- sizes --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 16, 63])
def test_shorter_than_the_header_is_truncated(size: int) -> None:
    with pytest.raises(TruncatedError) as info:
        decode_config(config("qemu-pc-e1000")[:size])
    assert info.value.offset == size


@pytest.mark.parametrize("size", [65, 128, 255, 257, 4095, 4097, 8192])
def test_other_sizes_are_rejected(size: int) -> None:
    data = (config("qemu-q35-e1000e-pcie") * 2)[:size]
    with pytest.raises(DecodeError) as info:
        decode_config(data)
    assert not isinstance(info.value, TruncatedError)
    assert info.value.expected == "64, 256 or 4096 bytes"


def test_64_byte_header_alone() -> None:
    space = decode_config(config("qemu-pc-e1000")[:64])
    assert space.size == 64
    assert space.header.vendor_id == 0x8086
    assert [b.kind for b in space.bars] == ["memory", "io"]
    assert space.problems == ()


# --- bounded walks --------------------------------------------------------------------------


def test_capability_loop_stops_at_the_revisit() -> None:
    space = decode_config(config("bad-cap-loop"))
    assert layout(space) == [(0xC8, 0x01), (0xD0, 0x05), (0xE0, 0x10), (0xA0, 0x11)]
    (problem,) = space.problems
    assert (problem.code, problem.offset) == ("cap-loop", 0xA1)
    assert ext_layout(space) == [(0x100, 0x01), (0x140, 0x03)]  # the extended list is unaffected


def test_capability_pointer_into_the_header() -> None:
    space = decode_config(config("bad-cap-into-header"))
    assert layout(space) == [(0x4C, 0x05), (0x48, 0x04)]
    (problem,) = space.problems
    assert (problem.code, problem.offset) == ("cap-pointer", 0x49)
    assert "0x20" in problem.message


def test_capability_id_ff_breaks_the_chain() -> None:
    space = decode_config(config("bad-cap-id-ff"))
    assert layout(space) == [(0x68, 0x11)]
    assert [(p.code, p.offset) for p in space.problems] == [("cap-broken", 0x50)]


def test_capability_pointer_outside_a_64_byte_config() -> None:
    """64 bytes are what an unprivileged read of sysfs gives: the list is unreadable past
    the header, which is no fault of the device's."""
    space = decode_config(config("bad-cap-outside-64"))
    assert space.capabilities == ()
    assert space.capabilities_end == ChainEnd(0x60, "unreadable")
    assert space.problems == ()


def test_reserved_pointer_bits_are_masked() -> None:
    odd = decode_config(config("odd-cap-pointer-bits"))
    plain = decode_config(config("qemu-q35-pcie-root-port"))
    assert layout(odd) == layout(plain) == [(0x54, 0x10), (0x48, 0x11), (0x40, 0x0D)]
    assert odd.problems == ()


def test_extended_loop() -> None:
    space = decode_config(config("bad-ext-loop"))
    assert ext_layout(space) == [(0x100, 0x01), (0x148, 0x0D)]
    assert [(p.code, p.offset) for p in space.problems] == [("ext-loop", 0x148)]


def test_extended_pointer_below_0x100() -> None:
    space = decode_config(config("bad-ext-pointer-low"))
    assert ext_layout(space) == [(0x100, 0x01), (0x140, 0x03)]
    assert [(p.code, p.offset) for p in space.problems] == [("ext-pointer", 0x140)]


def test_extended_pointer_to_an_empty_header() -> None:
    space = decode_config(config("bad-ext-empty"))
    assert ext_layout(space) == [(0x100, 0x0E)]
    assert [(p.code, p.offset) for p in space.problems] == [("ext-empty", 0x120)]


def _chain(size: int, offsets: list[int], *, express: bool = False) -> bytearray:
    """A config whose standard capabilities sit at *offsets*, in that order (id 0x0a)."""
    data = bytearray(size)
    data[0x06] = 0x10
    data[0x34] = offsets[0] if offsets else 0
    for here, nxt in zip(offsets, [*offsets[1:], 0], strict=True):
        data[here] = 0x0A
        data[here + 1] = nxt
    if express:
        data[offsets[0]] = 0x10
    return data


def test_every_dword_a_capability_is_48_and_no_problem() -> None:
    offsets = list(range(0x40, 0x100, 4))
    assert len(offsets) == MAX_CAPABILITIES
    space = decode_config(bytes(_chain(256, offsets)))
    assert len(space.capabilities) == MAX_CAPABILITIES
    assert space.problems == ()


def test_48_capabilities_then_a_loop() -> None:
    offsets = list(range(0xFC, 0x3C, -4))
    data = _chain(256, offsets)
    data[0x41] = 0xFC  # the last one points back to the first
    space = decode_config(bytes(data))
    assert len(space.capabilities) == MAX_CAPABILITIES
    assert codes(space.problems) == ["cap-loop"]


def test_every_extended_dword_a_capability() -> None:
    data = _chain(4096, [0x40], express=True)
    for where in range(0x100, 0x1000, 4):
        nxt = where + 4 if where + 4 < 0x1000 else 0
        # Power Budgeting: a capability without registers we decode, so any dword can hold one
        data[where : where + 4] = (0x0004 | 1 << 16 | nxt << 20).to_bytes(4, "little")
    space = decode_config(bytes(data))
    assert len(space.extended_capabilities) == MAX_EXTENDED_CAPABILITIES
    assert space.problems == ()


def test_extended_space_is_walked_only_for_express() -> None:
    data = bytearray(config("qemu-q35-pcie-root-port"))
    data[0x34] = 0x48  # skip the PCIe capability at 0x54
    space = decode_config(bytes(data))
    assert space.extended_capabilities == ()
    assert codes(space.problems) == ["ext-not-express"]


def test_unsupported_header_type_is_a_problem() -> None:
    data = bytearray(config("qemu-pc-e1000"))
    data[0x0E] = 0x02  # CardBus
    space = decode_config(bytes(data))
    assert space.header.header_type == 2
    assert (space.bars, space.capabilities, space.header.endpoint, space.header.bridge) == (
        (),
        (),
        None,
        None,
    )
    assert codes(space.problems) == ["header-type"]


_sizes = st.sampled_from([64, 256, 4096])


@st.composite
def _configs(draw: st.DrawFn) -> bytes:
    """Random bytes, half of them with a PCIe capability at 0x40 so the extended walk runs."""
    size = draw(_sizes)
    data = bytearray(draw(st.binary(min_size=size, max_size=size)))
    data[0x06] |= 0x10
    if size == 4096 and draw(st.booleans()):
        data[0x34], data[0x40] = 0x40, 0x10
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(_configs(), st.dictionaries(st.integers(-2, 8), st.integers(0, 1 << 40), max_size=4))
def test_any_bytes_decode_within_bounds(data: bytes, sizes: dict[int, int]) -> None:
    space = decode_config(data, sizes)
    offsets = [c.offset for c in space.capabilities]
    assert len(offsets) == len(set(offsets)) <= MAX_CAPABILITIES
    ext = [c.offset for c in space.extended_capabilities]
    assert len(ext) == len(set(ext)) <= MAX_EXTENDED_CAPABILITIES
    assert all(0x40 <= o < len(data) for o in offsets)
    assert all(0x100 <= o < len(data) for o in ext)
    json.dumps(space.to_json())
    render_text(space)
    masks = build_masks(data, sizes)
    assert len(masks.checked) == len(data)
    assert masks.mismatches(data, data) == ()
    same = check_compatible(data, data, masks, src_bar_sizes=sizes, dst_bar_sizes=sizes)
    assert all(p.message.startswith(("source: ", "destination: ")) for p in same)
    assert len(same) == 2 * len(space.problems)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=5000))
def test_any_length_raises_only_vmstate_errors(data: bytes) -> None:
    try:
        decode_config(data)
    except VMStateError:
        assert len(data) not in (64, 256, 4096)


# --- decoded fields ---------------------------------------------------------------------------


def test_msi_32_bit_maskable_two_vectors() -> None:
    msi = decode_config(config("qemu-q35-ioh3420")).msi
    assert msi is not None
    assert (msi.vectors, msi.vectors_enabled, msi.is_64bit, msi.per_vector_masking) == (
        2,
        1,
        False,
        True,
    )
    assert (msi.mask_offset, msi.pending_offset, msi.size) == (0x60 + 0x0C, 0x60 + 0x10, 0x14)


def test_msi_64_bit_maskable() -> None:
    msi = decode_config(config("qemu-pc-pci-bridge")).msi
    assert msi is not None
    assert (msi.vectors, msi.is_64bit, msi.per_vector_masking) == (1, True, True)
    assert (msi.mask_offset, msi.pending_offset, msi.size) == (0x4C + 0x10, 0x4C + 0x14, 0x18)


def test_msi_64_bit_without_masking() -> None:
    msi = decode_config(config("qemu-q35-e1000e-pcie")).msi
    assert msi is not None
    assert (msi.is_64bit, msi.per_vector_masking, msi.mask_offset, msi.size) == (
        True,
        False,
        None,
        0x0E,
    )


def test_msi_reserved_count_keeps_the_field_value() -> None:
    space = decode_config(config("bad-msi-count"))
    assert space.msi is not None and space.msi.vectors == 128  # what lspci shows too
    assert codes(space.problems) == ["msi-count"]


def test_msix_table_and_pba() -> None:
    msix = decode_config(config("qemu-q35-e1000e-pcie")).msix
    assert msix is not None
    assert (msix.table_size, msix.table_bir, msix.table_offset) == (5, 3, 0)
    assert (msix.pba_bir, msix.pba_offset, msix.enabled, msix.function_mask) == (
        3,
        0x2000,
        False,
        False,
    )


def test_msix_enabled_by_a_driver() -> None:
    msix = decode_config(config("host-0000_00_03.0-1af4-1041")).msix
    assert msix is not None and msix.enabled and msix.table_size == 3


def test_msix_must_fit_its_bar() -> None:
    data = config("qemu-q35-e1000e-pcie")
    assert decode_config(data, {3: 0x4000}).problems == ()
    space = decode_config(data, {3: 0x1000})
    assert [(p.code, p.offset) for p in space.problems] == [("msix-outside-bar", 0xA0 + 8)]


def test_msix_bir_on_an_io_bar() -> None:
    data = bytearray(config("qemu-q35-e1000e-pcie"))
    data[0xA4] = (data[0xA4] & ~7) | 2  # BAR 2 is I/O
    assert codes(decode_config(bytes(data)).problems) == ["msix-bir"]


def test_express_capability() -> None:
    root = decode_config(config("qemu-q35-pcie-root-port")).express
    assert root is not None
    assert (root.version, root.port_type_name, root.slot_implemented, root.size) == (
        2,
        "Root Port",
        True,
        0x3C,
    )
    v1 = decode_config(config("qemu-q35-e1000e-rciep")).express
    assert v1 is not None
    assert (v1.version, v1.port_type_name, v1.size) == (1, "Root Complex Integrated Endpoint", 0x14)


def test_power_management() -> None:
    cap = decode_config(config("qemu-q35-nvme-sriov")).capability(0x01)
    assert cap is not None and cap.name == "Power Management"
    assert cap.body.version == 3 and cap.body.power_state == 0 and cap.body.no_soft_reset


def test_sriov_and_ari() -> None:
    space = decode_config(config("qemu-q35-nvme-sriov"))
    sriov = space.extended_capability(0x10)
    assert sriov is not None and isinstance(sriov.body, SrIov)
    assert (sriov.body.total_vfs, sriov.body.initial_vfs, sriov.body.num_vfs) == (4, 4, 0)
    assert (sriov.body.first_vf_offset, sriov.body.vf_stride) == (1, 1)
    assert not sriov.body.control["Enable"]
    assert sriov.name == "Single Root I/O Virtualization"
    ari = space.extended_capability(0x0E)
    assert ari is not None and isinstance(ari.body, Ari) and ari.body.next_function == 1


def test_acs_and_aer() -> None:
    space = decode_config(config("qemu-q35-pcie-root-port"))
    acs = space.extended_capability(0x0D)
    assert acs is not None and isinstance(acs.body, Acs)
    assert acs.body.capabilities.text() == (  # 0x005f
        "SrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans+"
    )
    aer = space.extended_capability(0x01)
    assert aer is not None and aer.version == 2 and aer.name == "Advanced Error Reporting"


def test_serial_number() -> None:
    dsn = decode_config(config("qemu-q35-e1000e-pcie")).extended_capability(0x03)
    assert dsn is not None and dsn.body.serial == 0x525400FFFF123458


def test_bridge_windows() -> None:
    bridge = decode_config(config("qemu-pc-pci-bridge")).header.bridge
    assert bridge is not None
    assert (bridge.primary_bus, bridge.secondary_bus, bridge.subordinate_bus) == (0, 1, 1)
    io, mem, pref = bridge.io_window, bridge.memory_window, bridge.prefetchable_window
    assert (io.base, io.limit, io.width, io.enabled) == (0xC000, 0xCFFF, 16, True)
    assert (mem.base, mem.limit) == (0xFE600000, 0xFE7FFFFF)
    assert (pref.base, pref.limit, pref.width) == (0xFE000000, 0xFE1FFFFF, 64)
    root = decode_config(config("qemu-q35-pcie-root-port")).header.bridge
    assert root is not None and not root.io_window.enabled  # base 0x5000 > limit 0x4fff


def test_header_identity() -> None:
    h = decode_config(config("qemu-q35-nvme-sriov")).header
    assert (h.vendor_id, h.device_id, h.revision_id) == (0x1B36, 0x0010, 0x02)
    assert (h.class_code.base, h.class_code.sub, h.class_code.prog_if) == (0x01, 0x08, 0x02)
    assert h.endpoint is not None and (h.endpoint.subsystem_vendor_id, h.endpoint.subsystem_id) == (
        0x1AF4,
        0x1100,
    )
    assert decode_config(config("qemu-pc-piix3")).header.multifunction


def test_bars_with_sizes() -> None:
    space = decode_config(
        config("qemu-q35-e1000e-pcie"), {0: 0x20000, 1: 0x20000, 2: 0x20, 3: 0x4000, 6: 0x40000}
    )
    assert [(b.index, b.kind, b.is_64bit, b.prefetchable, b.size) for b in space.bars] == [
        (0, "memory", False, False, 0x20000),
        (1, "memory", False, False, 0x20000),
        (2, "io", False, False, 0x20),
        (3, "memory", False, False, 0x4000),
    ]
    assert space.bar(2).address == 0x4000
    assert space.expansion_rom is not None and space.expansion_rom.size == 0x40000
    assert space.problems == ()


def test_64_bit_bar_takes_two_registers() -> None:
    space = decode_config(config("qemu-q35-nvme-sriov"), {0: 0x4000, 1: 0})
    (bar,) = space.bars
    assert (bar.index, bar.is_64bit, bar.address, bar.size) == (0, True, 0xFE600000, 0x4000)
    assert space.problems == ()


@pytest.mark.parametrize(
    ("sizes", "offset"),
    [
        ({0: 0x3000}, 0x10),  # not a power of two
        ({2: 0x2}, 0x18),  # I/O BARs are at least 4 bytes
        ({1: 0x1000}, 0x14),  # BAR 1 is the upper half of 64-bit BAR 0
        ({7: 0x1000}, 0x10),  # no such BAR
        ({6: 0x100}, 0x30),  # a ROM is at least 2 KiB
    ],
)
def test_bad_sizes_are_problems(sizes: dict[int, int], offset: int) -> None:
    name = "qemu-q35-nvme-sriov" if 1 in sizes else "qemu-q35-e1000e-pcie"
    space = decode_config(config(name), sizes)
    assert [(p.code, p.offset) for p in space.problems] == [("bar-size", offset)]


def test_64_bit_bar_in_the_last_register() -> None:
    data = bytearray(config("qemu-pc-e1000"))
    data[0x24:0x28] = (0xFE000000 | 0x4).to_bytes(4, "little")  # BAR 5 says 64-bit
    space = decode_config(bytes(data))
    assert codes(space.problems) == ["bar-64"]
    assert space.bar(5) is not None and not space.bar(5).is_64bit


# --- QEMU's masks --------------------------------------------------------------------------


def test_masks_header_as_qemu_sets_them() -> None:
    masks = build_masks(config("qemu-q35-e1000e-pcie"))
    checked = masks.checked
    assert checked[0x00:0x04] == b"\xff\xff\xff\xff"  # vendor, device
    assert checked[0x04:0x06] == b"\x00\x00"  # command is not checked
    assert checked[0x06] == 0x10  # status: only the capability-list bit
    assert checked[0x08:0x0C] == b"\xff\xff\xff\xff"  # revision, class
    assert checked[0x0E] == 0xFF and checked[0x34] == 0xFF
    assert checked[0x3C] == 0  # interrupt line is writable
    assert masks.w1cmask[0x07] == 0xF9


def test_masks_bars() -> None:
    data = config("qemu-q35-e1000e-pcie")
    unsized = build_masks(data).checked
    assert unsized[0x10:0x14] == b"\x0f\x00\x00\x00" and unsized[0x18] == 0x03  # type bits only
    sized = build_masks(data, {0: 0x20000, 2: 0x20}).checked
    assert int.from_bytes(sized[0x10:0x14], "little") == 0x1FFFF  # below the size: checked
    assert int.from_bytes(sized[0x18:0x1C], "little") == 0x1F


def test_masks_msi_and_msix() -> None:
    masks = build_masks(config("qemu-pc-pci-bridge"))
    checked = masks.checked
    assert checked[0x4C:0x4E] == b"\xff\xff"  # id, next
    assert checked[0x4E] == 0xFF & ~0x71 and checked[0x4F] == 0xFF  # flags but MME and enable
    assert checked[0x50:0x5C] == bytes([0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF])
    assert checked[0x5C:0x60] == b"\xfe\xff\xff\xff"  # mask bits beyond the one vector
    assert checked[0x60:0x64] == b"\xff\xff\xff\xff"  # pending bits: read-only, so checked
    msix = build_masks(config("qemu-q35-e1000e-pcie")).checked
    assert msix[0xA2] == 0xFF and msix[0xA3] == 0x3F  # table size checked, enable/mask not


def test_masks_express_and_extended() -> None:
    checked = build_masks(config("qemu-q35-pcie-root-port")).checked
    at = 0x54
    assert checked[at + 0x02] == 0xFF  # PCIe flags: port type and version
    assert checked[at + 0x0C : at + 0x10] == b"\xff\xff\xff\xff"  # link capabilities
    assert checked[at + 0x12 : at + 0x14] == b"\x00\x00"  # link status: QEMU does not check it
    assert checked[at + 0x08 : at + 0x0A] == b"\x00\x00"  # device control
    assert checked[0x100:0x104] == b"\xff\xff\xff\xff"  # AER header
    assert checked[0x148:0x14E] == b"\xff" * 6 and checked[0x14E:0x150] == b"\x00\x00"  # ACS
    assert checked[0x200] == 0  # no capability there


def test_mismatches_follow_qemus_rule() -> None:
    current = config("qemu-q35-e1000e-pcie")
    masks = build_masks(current)

    def flipped(offset: int, bits: int) -> bytes:
        data = bytearray(current)
        data[offset] ^= bits
        return bytes(data)

    assert masks.mismatches(current, current) == ()
    assert masks.mismatches(flipped(0x04, 0x07), current) == ()  # command
    assert masks.mismatches(flipped(0xD2, 0x01), current) == ()  # MSI enable
    assert masks.mismatches(flipped(0xA3, 0x80), current) == ()  # MSI-X enable
    (p,) = masks.mismatches(flipped(0x02, 0x01), current)
    assert (p.code, p.offset) == ("config-byte", 0x02)
    (p,) = masks.mismatches(flipped(0xA2, 0x01), current)  # MSI-X table size
    assert p.offset == 0xA2
    assert codes(masks.mismatches(current[:256], current)) == ["config-size"]


# --- compatibility --------------------------------------------------------------------------


def test_identical_configs_are_compatible() -> None:
    data = config("qemu-q35-nvme-sriov")
    assert (
        check_compatible(data, data, build_masks(data, {0: 0x4000}), dst_bar_sizes={0: 0x4000})
        == ()
    )


def test_different_devices() -> None:
    problems = check_compatible(config("qemu-q35-e1000e-pcie"), config("qemu-q35-virtio-net-pcie"))
    found = {p.code for p in problems}
    assert {"identity", "cap-layout", "bar-kind"} <= found
    assert any(p.offset == 0x00 and "vendor id" in p.message for p in problems)


def test_same_model_other_port_type_only_the_masks_tell() -> None:
    src, dst = config("qemu-q35-e1000e-rciep"), config("qemu-q35-e1000e-pcie")
    assert check_compatible(src, dst) == ()
    found = check_compatible(src, dst, build_masks(dst))
    assert {p.offset for p in found} >= {0xE2, 0x144}  # PCIe flags (port type), DSN (MAC-derived)
    assert codes(found) == ["config-byte"] * len(found)


def test_msix_table_size_and_bar_size() -> None:
    src = config("qemu-q35-e1000e-pcie")
    dst = bytearray(src)
    dst[0xA2] = 7  # 8 entries
    problems = check_compatible(
        src, bytes(dst), src_bar_sizes={3: 0x4000}, dst_bar_sizes={3: 0x8000}
    )
    assert [(p.code, p.offset) for p in problems] == [("msix", 0xA2), ("bar-size", 0x1C)]


def test_bar_kinds() -> None:
    src = config("qemu-pc-pci-bridge")
    dst = bytearray(src)
    dst[0x10] |= 0x08  # prefetchable
    (p,) = check_compatible(src, bytes(dst))
    assert (p.code, p.offset) == ("bar-kind", 0x10)
    assert "non-prefetchable" in p.message


def test_msi_shape() -> None:
    src = config("qemu-q35-ioh3420")
    dst = bytearray(src)
    dst[0x62] &= ~0x0E  # one vector instead of two
    (p,) = check_compatible(src, bytes(dst))
    assert (p.code, p.offset) == ("msi", 0x62)


def test_decode_problems_are_reported_per_side() -> None:
    problems = check_compatible(config("bad-cap-loop"), config("qemu-q35-e1000e-pcie"))
    assert [(p.code, p.message.split(":")[0]) for p in problems] == [("cap-loop", "source")]


def test_size_and_header_type() -> None:
    problems = check_compatible(config("qemu-q35-pcie-root-port"), config("qemu-pc-pci-bridge"))
    found = codes(problems)
    assert "size" in found and "identity" in found and "cap-layout" in found


# --- the masks against QEMU itself ---------------------------------------------------------

QEMU_DEVICES = [
    *("-device", "e1000e,addr=03.0"),
    *("-device", "pci-bridge,addr=04.0,chassis_nr=1"),
    *("-device", "ioh3420,addr=05.0,chassis=2"),
    *("-device", "pcie-root-port,addr=06.0,chassis=3"),
]


class _Qemu:
    """A paused q35 QEMU with QEMU_DEVICES, driven over QMP."""

    def __init__(self, qemu: str, work: Path, *extra: str) -> None:
        sock = work / "qmp.sock"
        argv = [
            qemu,
            "-M",
            "q35",
            "-accel",
            "tcg",
            "-nodefaults",
            "-display",
            "none",
            "-m",
            "32",
            "-S",
        ]
        argv += ["-qmp", f"unix:{sock},server=on,wait=off", *QEMU_DEVICES, *extra]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(200):
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(sock))
                break
            except OSError:
                time.sleep(0.05)
        self.file = self.sock.makefile("rw")
        self.file.readline()
        self.cmd("qmp_capabilities")

    def cmd(self, name: str, **args: object) -> dict:
        self.file.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.file.flush()
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("QEMU exited")
            reply = json.loads(line)
            if "event" not in reply:
                return reply.get("return", reply)

    def migrate_until_done(self, command: str, uri: str) -> str:
        """Status of an outgoing or incoming migration once it ends; "exited" if QEMU did."""
        try:
            self.cmd(command, uri=uri)
            while (status := self.cmd("query-migrate").get("status")) not in (
                "completed",
                "failed",
            ):
                time.sleep(0.01)
            self.cmd("quit")
        except (ConnectionError, OSError):
            status = "exited"
        self.proc.wait(timeout=30)
        return status


def _load(qemu: str, stream: bytes) -> tuple[str, str]:
    """Status and stderr of a QEMU loading *stream*."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "stream").write_bytes(stream)
        vm = _Qemu(qemu, work, "-incoming", "defer")
        status = vm.migrate_until_done("migrate-incoming", f"exec:cat {work / 'stream'}")
        return status, vm.proc.stderr.read() if vm.proc.stderr else ""


def _flips(checked: bytes) -> list[tuple[int, int]]:
    """(offset, bits) to flip: every checked byte whole, and a partly checked one bit by bit."""
    out = []
    for i, bits in enumerate(checked):
        if bits == 0xFF:
            out.append((i, bits))
        else:
            out += [(i, 1 << b) for b in range(8) if bits & 1 << b]
    return out


@pytest.mark.qemu
def test_every_bit_the_masks_check_qemu_checks(tmp_path: Path) -> None:
    """Flip each bit build_masks marks checked in a real migration stream: QEMU must refuse
    it at that byte; flipping the (writable) command register it must take."""
    qemu = require_tool("qemu-system-x86_64")
    vm = _Qemu(qemu, tmp_path)
    devices = vm.cmd("query-pci")[0]["devices"]
    status = vm.migrate_until_done("migrate", f"exec:cat > {tmp_path / 'stream'}")
    assert status == "completed"
    stream = (tmp_path / "stream").read_bytes()
    cases: list[tuple[bytes, int | None]] = []
    for dev in devices:
        ids = dev["id"]["vendor"].to_bytes(2, "little") + dev["id"]["device"].to_bytes(2, "little")
        start = stream.find(b"\x00\x00\x00\x02" + ids) + 4  # PCIDevice: be32 version_id 2, config
        assert stream.count(b"\x00\x00\x00\x02" + ids) == 1
        size = 4096 if decode_config(stream[start : start + 256]).express is not None else 256
        sizes = {r["bar"]: r["size"] for r in dev["regions"]}
        masks = build_masks(stream[start : start + size], sizes)
        assert decode_config(stream[start : start + size], sizes).problems == ()
        for offset, bits in [(0x04, 0x04), *_flips(masks.checked)]:
            edited = bytearray(stream)
            edited[start + offset] ^= bits
            cases.append((bytes(edited), None if offset == 0x04 else offset))
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda case: _load(qemu, case[0]), cases))
    wrong = []
    for (_, offset), (status, stderr) in zip(cases, results, strict=True):
        if offset is None and status != "completed":
            wrong.append(f"command flip refused: {status} {stderr.strip()}")
        elif offset is not None and f"Bad config data: i=0x{offset:x} " not in stderr:
            wrong.append(f"byte {offset:#x} flipped but QEMU said {status}: {stderr.strip()[:200]}")
    assert len(cases) > 300
    assert wrong == []
