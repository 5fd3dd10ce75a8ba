"""The emulated PCI function (vmstate.testing.pci): real config-space write semantics
(read-only, writable and write-1-to-clear bits, BAR sizing), bounds checks, reset,
and the builder's refusals."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from vmstate._lowlevel import vfio
from vmstate.device_regions import Device, RegionInfo
from vmstate.errors import DeviceError, UsageError
from vmstate.testing.pci import EmulatedPciBuilder, EmulatedPciDevice, e1000e_like

CONFIG = vfio.VFIO_PCI_CONFIG_REGION_INDEX


def u16(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<H", data, offset)[0])


def u32(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", data, offset)[0])



def small_device() -> EmulatedPciDevice:
    return (
        EmulatedPciBuilder()
        .header(vendor=0x1234, device=0x5678, class_code=0x020000, interrupt_pin=1)
        .set(0x06, 0xF910, 2, w1cmask=0xF900)  # status: error bits set, W1C
        .set(0x40, 0x5A, 1, wmask=0x0F)  # low nibble writable, high read-only
        .bar(0, 0x1000)
        .bar(1, 0x20, io=True)
        .bar(2, 0x100000, mem64=True, prefetch=True)
        .rom(0x8000)
        .build("small")
    )


def test_read_only_bits_ignore_writes() -> None:
    device = small_device()
    device.write(CONFIG, 0, b"\xff\xff\xff\xff")
    assert device.read(CONFIG, 0, 4) == struct.pack("<HH", 0x1234, 0x5678)


def test_writable_bits_take_writes() -> None:
    device = small_device()
    device.write(CONFIG, 0x04, b"\xff\xff")
    assert u16(device.read(CONFIG, 0x04, 2), 0) == 0x0547  # only COMMAND's writable bits
    device.write(CONFIG, 0x40, b"\xa3")
    assert device.read(CONFIG, 0x40, 1) == b"\x53"  # high nibble kept, low nibble written
    device.write(CONFIG, 0x3C, b"\x0b")
    assert device.read(CONFIG, 0x3C, 2) == b"\x0b\x01"  # line written, pin read-only


def test_write_one_to_clear_bits() -> None:
    device = small_device()
    device.write(CONFIG, 0x06, b"\x00\x00")
    assert u16(device.read(CONFIG, 0x06, 2), 0) == 0xF910  # writing 0 changes nothing
    device.write(CONFIG, 0x06, struct.pack("<H", 0x0100 | 0x0010))
    assert u16(device.read(CONFIG, 0x06, 2), 0) == 0xF810  # bit 8 cleared, bit 4 read-only
    device.write(CONFIG, 0x06, b"\xff\xff")
    assert u16(device.read(CONFIG, 0x06, 2), 0) == 0x0010


def test_bar_sizing_reads_back_the_size_mask() -> None:
    device = small_device()
    for offset in range(0x10, 0x28, 4):
        device.write(CONFIG, offset, b"\xff\xff\xff\xff")
    device.write(CONFIG, 0x30, b"\xff\xff\xff\xff")
    bars = struct.unpack("<6I", device.read(CONFIG, 0x10, 24))
    assert bars[0] == 0xFFFFF000  # 4 KiB memory
    assert bars[1] == 0xFFFFFFE1  # 32 bytes I/O
    assert bars[2] == 0xFFF0000C  # 1 MiB 64-bit prefetchable, low dword
    assert bars[3] == 0xFFFFFFFF  # ... high dword
    assert bars[4:] == (0, 0)  # unimplemented
    assert u32(device.read(CONFIG, 0x30, 4), 0) == 0xFFFF8001  # 32 KiB ROM, enable bit
    device.write(CONFIG, 0x10, struct.pack("<I", 0xFEB00000))
    assert u32(device.read(CONFIG, 0x10, 4), 0) == 0xFEB00000


def test_reset_restores_initial_contents() -> None:
    device = small_device()
    initial = device.read(CONFIG, 0, 256)
    device.write(CONFIG, 0x04, b"\x07\x00")
    device.write(0, 0, b"data")
    device.reset()
    assert device.read(CONFIG, 0, 256) == initial
    assert device.read(0, 0, 4) == bytes(4)


def test_emulated_regions() -> None:
    device = small_device()
    assert [(r.index, r.size) for r in device.regions()] == [
        (0, 0x1000),
        (1, 0x20),
        (2, 0x100000),
        (6, 0x8000),
        (CONFIG, 256),
    ]
    assert device.region(0) == RegionInfo(index=0, size=0x1000, readable=True, writable=True)
    assert device.find_region(1, 1) is None
    device.write(2, 0xFFFFC, b"\x01\x02\x03\x04")
    assert device.read(2, 0xFFFFC, 4) == b"\x01\x02\x03\x04"


@pytest.mark.parametrize(
    ("index", "offset", "size", "message"),
    [
        (CONFIG, 250, 8, r"region 7: 8 bytes at offset 0xfa lie outside the region \(0x100"),
        (CONFIG, -1, 1, "region 7: 1 bytes at offset -0x1 lie outside"),
        (CONFIG, 256, 0, None),  # empty access at the end is fine
        (0, 0x1000, 1, "region 0: 1 bytes at offset 0x1000 lie outside"),
        (5, 0, 1, "no region 5"),
    ],
)
def test_accesses_are_bounds_checked(index: int, offset: int, size: int, message: str) -> None:
    device: Device = small_device()
    if message is None:
        assert device.read(index, offset, size) == b""
        device.write(index, offset, b"")
        return
    with pytest.raises(DeviceError, match=f"small: {message}"):
        device.read(index, offset, size)
    with pytest.raises(DeviceError, match=f"small: {message}"):
        device.write(index, offset, bytes(max(size, 0)))


def test_e1000e_like_device() -> None:
    device = e1000e_like()
    config = device.read(CONFIG, 0, 4096)
    assert (u16(config, 0), u16(config, 2), u32(config, 8) >> 8) == (0x8086, 0x10D3, 0x020000)
    assert u16(config, 6) & 0x10  # capability list
    chain, offset = [], config[0x34]
    while offset:
        chain.append((offset, config[offset]))
        offset = config[offset + 1]
    assert chain == [(0xC8, 0x01), (0xD0, 0x05), (0xE0, 0x10), (0xA0, 0x11)]
    assert u32(config, 0x100) == 0x0002_0001  # AER v2, last extended capability
    # MSI-X: 5 vectors, table and PBA in BAR3; enable bit writable, size read-only.
    device.write(CONFIG, 0xA2, b"\xff\xff")
    assert u16(device.read(CONFIG, 0xA2, 2), 0) == 0xC004
    table = device.read(3, 0, 5 * 16)
    assert [u32(table, 16 * i + 12) for i in range(5)] == [1] * 5  # all masked
    # AER uncorrectable status is write-1-to-clear.
    device.write(CONFIG, 0x104, b"\xff\xff\xff\xff")
    assert device.read(CONFIG, 0x104, 4) == bytes(4)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda b: b.bar(0, 0x1800), "power of two"),
        (lambda b: b.bar(0, 8), "power of two"),
        (lambda b: b.bar(5, 0x1000, mem64=True), "no such 64-bit BAR"),
        (lambda b: b.bar(0, 0x1000, mem64=True).bar(1, 0x1000), "already in use"),
        (lambda b: b.bar(1, 0x1000).bar(0, 0x1000, mem64=True), "already in use"),
        (lambda b: b.bar(0, 0x100, io=True, prefetch=True), "no such"),
        (lambda b: b.rom(0x400), "power of two"),
        (lambda b: b.bar(0, 0x10, contents=bytes(17)), "exceed"),
        (lambda b: b.capability(0x40, 5, bytes(8)).capability(0x48, 1, bytes(2)), "overlaps"),
        (lambda b: b.capability(0x3C, 5), "outside"),
        (lambda b: b.capability(0x42, 5), "outside"),
        (lambda b: b.capability(0x40, 5, bytes(2), wmask=bytes(3)), "longer"),
        (lambda b: b.extended_capability(0x100, 1, 1), "cannot go"),  # 256-byte config
        (lambda b: b.set(0xFE, 0, 4), "do not fit"),
    ],
)
def test_builder_rejects_misuse(
    build: Callable[[EmulatedPciBuilder], object], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        build(EmulatedPciBuilder())


def test_extended_capabilities_chain_from_0x100() -> None:
    builder = EmulatedPciBuilder(config_size=4096)
    with pytest.raises(UsageError, match="cannot go"):
        builder.extended_capability(0x140, 3, 1)
    builder.extended_capability(0x100, 1, 2, bytes(4)).extended_capability(0x140, 3, 1, bytes(8))
    config = builder.build("ext").read(CONFIG, 0, 4096)
    assert u32(config, 0x100) == 0x140 << 20 | 2 << 16 | 1
    assert u32(config, 0x140) == 1 << 16 | 3


def test_emulated_device_rejects_bad_masks() -> None:
    with pytest.raises(UsageError, match="256 or 4096"):
        EmulatedPciDevice("x", bytes(256), bytes(256), bytes(64))
    with pytest.raises(UsageError, match="overlap at config offset 0x6"):
        EmulatedPciDevice(
            "x", bytes(256), bytes(6) + b"\x01" + bytes(249), bytes(6) + b"\x03" + bytes(249)
        )
    with pytest.raises(UsageError, match="indexes 0-6"):
        EmulatedPciDevice("x", bytes(256), bytes(256), bytes(256), {7: b""})
