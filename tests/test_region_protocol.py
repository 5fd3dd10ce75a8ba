"""The 2019 device-state region protocol against an emulated device that speaks it:
device config out and back in, the dirty-bitmap walk, and the checks the patch lacked
(a bitmap loop that doubled its start address, a length from the stream used unchecked,
allocations sized by it)."""

from __future__ import annotations

import io
import struct

import pytest

from vmstate.device_regions import RegionDevice, RegionInfo
from vmstate.errors import DeviceError, LimitError, TruncatedError, UsageError
from vmstate.region_protocol import (
    ACTION_GET_BUFFER,
    ACTION_SET_BUFFER,
    CAP_DEVICE_MEMORY,
    CAP_SYSTEM_MEMORY,
    CONTROL,
    MAX_BITMAP_CHUNK,
    REGION_TYPE_DEVICE_STATE,
    SUBTYPE_CONFIG,
    SUBTYPE_CONTROL,
    SUBTYPE_DIRTY_BITMAP,
    DeviceStateRegions,
    RegionState,
    ffi,
)

CONTROL_INDEX, CONFIG_INDEX, BITMAP_INDEX = 9, 10, 11
PAGE = 4096


def offset(*field: str) -> int:
    return ffi.offsetof(CONTROL, *field)


class StateRegionsDevice(RegionDevice):
    """A device's driver side of the protocol, its regions plain bytearrays.

    Writing device_config.action GET_BUFFER puts the device's config snapshot in the
    config region (and its size, or ``reported_size``, in device_config.size);
    SET_BUFFER takes device_config.size bytes back as ``loaded``.  Writing
    system_memory.page_nr answers with the dirty bitmap of that range, every bit past
    the range set (a driver's garbage the reader must ignore), and logs the query.
    """

    def __init__(
        self,
        *,
        snapshot: bytes = b"",
        config_size: int = 4096,
        bitmap_size: int | None = 16,
        caps: int = CAP_SYSTEM_MEMORY,
        version: int = 1,
        control_size: int = ffi.sizeof(CONTROL),
        dirty: frozenset[int] = frozenset(),
        reported_size: int | None = None,
    ) -> None:
        sizes = {CONTROL_INDEX: control_size, CONFIG_INDEX: config_size}
        subtypes = {CONTROL_INDEX: SUBTYPE_CONTROL, CONFIG_INDEX: SUBTYPE_CONFIG}
        if bitmap_size is not None:
            sizes[BITMAP_INDEX] = bitmap_size
            subtypes[BITMAP_INDEX] = SUBTYPE_DIRTY_BITMAP
        super().__init__(
            "state-regions",
            (
                RegionInfo(
                    index=index,
                    size=size,
                    readable=True,
                    writable=True,
                    type=REGION_TYPE_DEVICE_STATE,
                    subtype=subtypes[index],
                )
                for index, size in sizes.items()
            ),
        )
        self.memory = {index: bytearray(size) for index, size in sizes.items()}
        struct.pack_into("=I", self.memory[CONTROL_INDEX], offset("version"), version)
        struct.pack_into("=I", self.memory[CONTROL_INDEX], offset("caps"), caps)
        self.snapshot = snapshot
        self.reported_size = reported_size
        self.dirty = dirty
        self.writes: list[tuple[int, int, int]] = []
        self.reads: list[tuple[int, int, int]] = []
        self.queries: list[tuple[int, int]] = []
        self.loaded: bytes | None = None

    def write(self, index: int, offset_: int, data: bytes) -> None:
        self._checked(index, offset_, len(data), "writable")
        self.writes.append((index, offset_, len(data)))
        self.memory[index][offset_ : offset_ + len(data)] = data
        if index == CONTROL_INDEX:
            self._react(offset_, offset_ + len(data))

    def field(self, *name: str, fmt: str = "=Q") -> int:
        return int(struct.unpack_from(fmt, self.memory[CONTROL_INDEX], offset(*name))[0])

    def _react(self, start: int, end: int) -> None:
        control = self.memory[CONTROL_INDEX]
        if start <= offset("device_config", "action") < end:
            action = self.field("device_config", "action", fmt="=I")
            if action == ACTION_GET_BUFFER:
                self.memory[CONFIG_INDEX][: len(self.snapshot)] = self.snapshot
                size = len(self.snapshot) if self.reported_size is None else self.reported_size
                struct.pack_into("=Q", control, offset("device_config", "size"), size)
            elif action == ACTION_SET_BUFFER:
                size = self.field("device_config", "size")
                self.loaded = bytes(self.memory[CONFIG_INDEX][:size])
        if start <= offset("system_memory", "page_nr") < end:
            first = self.field("system_memory", "start_addr")
            count = self.field("system_memory", "page_nr")
            self.queries.append((first, count))
            bitmap = self.memory[BITMAP_INDEX]
            bits = ~((1 << count) - 1)  # garbage past the range
            for address in self.dirty:
                if first <= address < first + count * PAGE:
                    bits |= 1 << (address - first) // PAGE
            bitmap[:] = (bits & ((1 << 8 * len(bitmap)) - 1)).to_bytes(len(bitmap), "little")

    def _read(self, info: RegionInfo, offset_: int, size: int) -> bytes:
        self.reads.append((info.index, offset_, size))
        return bytes(self.memory[info.index][offset_ : offset_ + size])


def test_control_layout_is_the_patch_struct() -> None:
    """x86-64 layout of struct vfio_device_state_ctl: u64 members are 8-byte aligned."""
    assert ffi.sizeof(CONTROL) == 72
    assert offset("device_config", "action") == 16
    assert offset("device_config", "size") == 24
    assert offset("device_memory", "pos") == 48
    assert offset("system_memory", "start_addr") == 56
    assert offset("system_memory", "page_nr") == 64


@pytest.mark.parametrize(
    ("device", "reason"),
    [
        (StateRegionsDevice(version=2), "interface version 2, not 1"),
        (StateRegionsDevice(caps=CAP_DEVICE_MEMORY), "device-memory transfer"),
        (StateRegionsDevice(bitmap_size=None), "no readable bitmap region"),
        (StateRegionsDevice(bitmap_size=4), "no readable bitmap region"),
        (StateRegionsDevice(control_size=64), "64 bytes, fewer than the 72"),
    ],
    ids=["version", "device-memory", "no-bitmap", "tiny-bitmap", "short-control"],
)
def test_unfit_devices_are_blocked_with_the_reason(device: StateRegionsDevice, reason: str) -> None:
    with pytest.raises(
        DeviceError, match=f"state-regions: device does not support migration: .*{reason}"
    ):
        DeviceStateRegions.open(device)


def test_a_device_without_the_regions_is_blocked() -> None:
    class Plain(StateRegionsDevice):
        def find_region(self, type: int, subtype: int) -> RegionInfo | None:
            return None

    with pytest.raises(
        DeviceError, match="does not support migration: it has no device-state control"
    ):
        DeviceStateRegions.open(Plain())


def test_a_device_without_dirty_logging_needs_no_bitmap() -> None:
    regions = DeviceStateRegions.open(StateRegionsDevice(caps=0, bitmap_size=None))
    assert regions.bitmap is None
    with pytest.raises(UsageError, match="does not log dirty system memory"):
        regions.dirty_bitmap(0, 1)


def test_device_state_is_written_to_the_control_region() -> None:
    device = StateRegionsDevice()
    regions = DeviceStateRegions.open(device)
    regions.set_state(RegionState.STOP_LOGGING)
    assert device.field("device_state", fmt="=I") == 3
    with pytest.raises(UsageError, match="device_state 4"):
        regions.set_state(4)  # type: ignore[arg-type]


# --- device config -------------------------------------------------------------------


def test_config_round_trip() -> None:
    snapshot = bytes(range(256)) * 10
    source = StateRegionsDevice(snapshot=snapshot)
    sink = io.BytesIO()
    assert DeviceStateRegions.open(source).save_config(sink) == len(snapshot)
    assert sink.getvalue() == snapshot
    # GET_BUFFER comes first, so the size read after it describes the snapshot taken.
    assert source.writes == [(CONTROL_INDEX, offset("device_config", "action"), 4)]

    target = StateRegionsDevice()
    DeviceStateRegions.open(target).load_config(io.BytesIO(snapshot), len(snapshot))
    assert target.loaded == snapshot
    assert target.writes == [
        (CONTROL_INDEX, offset("device_config", "size"), 8),
        (CONFIG_INDEX, 0, len(snapshot)),
        (CONTROL_INDEX, offset("device_config", "action"), 4),  # SET_BUFFER last
    ]


@pytest.mark.parametrize(("reported", "limit"), [(4097, 1 << 24), (1 << 63, 1 << 24), (3000, 2000)])
def test_a_config_size_the_device_cannot_hold_is_refused(reported: int, limit: int) -> None:
    device = StateRegionsDevice(snapshot=b"x" * 100, reported_size=reported)
    with pytest.raises(DeviceError, match=f"device reports {reported} bytes of config data"):
        DeviceStateRegions.open(device).save_config(io.BytesIO(), limit=limit)
    assert not [read for read in device.reads if read[0] == CONFIG_INDEX]


@pytest.mark.parametrize(
    ("size", "limit"), [(4097, 1 << 24), (1 << 63, 1 << 24), (3000, 2000), (-1, 100)]
)
def test_an_oversized_len_from_the_stream_is_refused_before_any_write(
    size: int, limit: int
) -> None:
    """The patch passed the stream's len to g_malloc and pwrite unchecked."""
    device = StateRegionsDevice()
    regions = DeviceStateRegions.open(device)
    with pytest.raises(
        LimitError, match=f"{size} bytes of device config data do not fit"
    ) as caught:
        regions.load_config(io.BytesIO(bytes(64)), size, limit=limit)
    assert caught.value.found == f"{size} bytes"
    assert device.writes == []
    assert device.loaded is None


def test_a_short_stream_is_refused_without_set_buffer() -> None:
    device = StateRegionsDevice()
    with pytest.raises(TruncatedError, match="end after 100 of 200 bytes"):
        DeviceStateRegions.open(device).load_config(io.BytesIO(bytes(100)), 200)
    assert device.loaded is None


# --- dirty bitmap --------------------------------------------------------------------


def test_each_bitmap_chunk_starts_where_the_last_ended() -> None:
    """The patch advanced with ``start_addr += start_addr``: from 1 MiB it would ask for
    2 MiB, then 4 MiB, instead of 1.5 MiB and 2 MiB."""
    start = 0x10_0000
    chunk = 16 * 8  # pages one 16-byte bitmap region describes
    dirty = frozenset(
        start + page * PAGE for page in (0, 5, chunk - 1, chunk, 2 * chunk + 7, 3 * chunk + 4)
    )
    device = StateRegionsDevice(dirty=dirty | {start - PAGE, start + (3 * chunk + 5) * PAGE})
    chunks = list(DeviceStateRegions.open(device).dirty_bitmap(start, 3 * chunk + 5))
    assert device.queries == [
        (start, chunk),
        (start + chunk * PAGE, chunk),
        (start + 2 * chunk * PAGE, chunk),
        (start + 3 * chunk * PAGE, 5),
    ]
    assert [(c.start_addr, c.page_nr) for c in chunks] == device.queries
    assert {page for c in chunks for page in c.dirty_pages()} == dirty  # garbage bits masked


def test_an_empty_range_asks_nothing() -> None:
    """The patch queried once more after the loop, for zero pages when the range divided evenly."""
    device = StateRegionsDevice()
    assert list(DeviceStateRegions.open(device).dirty_bitmap(0, 0)) == []
    assert list(DeviceStateRegions.open(device).dirty_bitmap(0, 128)) != []
    assert device.queries == [(0, 128)]


def test_bitmap_reads_are_capped_whatever_the_region_size() -> None:
    device = StateRegionsDevice(
        bitmap_size=4 * MAX_BITMAP_CHUNK, dirty=frozenset({0, PAGE * 8 * MAX_BITMAP_CHUNK})
    )
    chunks = DeviceStateRegions.open(device).dirty_bitmap(0, 8 * MAX_BITMAP_CHUNK + 1)
    assert [page for c in chunks for page in c.dirty_pages()] == [0, PAGE * 8 * MAX_BITMAP_CHUNK]
    assert device.queries == [(0, 8 * MAX_BITMAP_CHUNK), (PAGE * 8 * MAX_BITMAP_CHUNK, 1)]
    assert max(size for index, _, size in device.reads if index == BITMAP_INDEX) == MAX_BITMAP_CHUNK


@pytest.mark.parametrize(
    ("start", "pages", "page_size", "message"),
    [
        (0x1001, 1, PAGE, "aligned"),
        (0, 1, 3000, "aligned"),
        ((1 << 64) - PAGE, 2, PAGE, "outside 64-bit memory"),
        (0, -1, PAGE, "outside 64-bit memory"),
    ],
)
def test_bad_ranges_are_refused_before_any_query(
    start: int, pages: int, page_size: int, message: str
) -> None:
    device = StateRegionsDevice()
    with pytest.raises(UsageError, match=message):
        DeviceStateRegions.open(device).dirty_bitmap(start, pages, page_size=page_size)
    assert device.queries == []
