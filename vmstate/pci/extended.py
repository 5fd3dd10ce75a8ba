"""PCI Express extended capability bodies (offsets 0x100-0xfff): values and decoders."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from vmstate.pci.registers import (
    EXT_ACS,
    EXT_AER,
    EXT_ARI,
    EXT_DSN,
    EXT_LTR,
    EXT_SRIOV,
    u16,
    u32,
    u64,
)


@attrs.frozen
class Aer:
    uncorrectable_status: int
    uncorrectable_mask: int
    uncorrectable_severity: int
    correctable_status: int
    correctable_mask: int
    first_error_pointer: int
    ecrc_generation_capable: bool
    ecrc_check_capable: bool


@attrs.frozen
class SrIov:
    """SR-IOV: how many VFs the PF can have and where they appear."""

    capabilities: int
    control: int
    vf_enable: bool
    vf_memory_space: bool
    ari_hierarchy: bool
    status: int
    initial_vfs: int
    total_vfs: int
    num_vfs: int
    function_dependency_link: int
    first_vf_offset: int
    vf_stride: int
    vf_device_id: int
    supported_page_sizes: int
    system_page_size: int
    vf_bars: tuple[int, ...]  # the six raw VF BAR registers


@attrs.frozen
class Acs:
    capabilities: int
    control: int
    egress_vector_size: int


@attrs.frozen
class Ari:
    mfvc_groups: bool
    acs_groups: bool
    next_function: int
    control: int


@attrs.frozen
class SerialNumber:
    serial: int


@attrs.frozen
class Ltr:
    max_snoop_latency_ns: int
    max_no_snoop_latency_ns: int


ExtendedBody = Aer | SrIov | Acs | Ari | SerialNumber | Ltr


def _decode_aer(data: bytes, where: int) -> Aer:
    capctl = u32(data, where + 0x18)
    return Aer(
        uncorrectable_status=u32(data, where + 0x04),
        uncorrectable_mask=u32(data, where + 0x08),
        uncorrectable_severity=u32(data, where + 0x0C),
        correctable_status=u32(data, where + 0x10),
        correctable_mask=u32(data, where + 0x14),
        first_error_pointer=capctl & 0x1F,
        ecrc_generation_capable=bool(capctl & 0x20),
        ecrc_check_capable=bool(capctl & 0x80),
    )


def _decode_sriov(data: bytes, where: int) -> SrIov:
    control = u16(data, where + 0x08)
    return SrIov(
        capabilities=u32(data, where + 0x04),
        control=control,
        vf_enable=bool(control & 0x1),
        vf_memory_space=bool(control & 0x8),
        ari_hierarchy=bool(control & 0x10),
        status=u16(data, where + 0x0A),
        initial_vfs=u16(data, where + 0x0C),
        total_vfs=u16(data, where + 0x0E),
        num_vfs=u16(data, where + 0x10),
        function_dependency_link=data[where + 0x12],
        first_vf_offset=u16(data, where + 0x14),
        vf_stride=u16(data, where + 0x16),
        vf_device_id=u16(data, where + 0x1A),
        supported_page_sizes=u32(data, where + 0x1C),
        system_page_size=u32(data, where + 0x20),
        vf_bars=tuple(u32(data, where + 0x24 + 4 * i) for i in range(6)),
    )


def _decode_acs(data: bytes, where: int) -> Acs:
    caps = u16(data, where + 4)
    return Acs(capabilities=caps, control=u16(data, where + 6), egress_vector_size=caps >> 8)


def _decode_ari(data: bytes, where: int) -> Ari:
    caps = u16(data, where + 4)
    return Ari(
        mfvc_groups=bool(caps & 0x1),
        acs_groups=bool(caps & 0x2),
        next_function=caps >> 8,
        control=u16(data, where + 6),
    )


def _decode_dsn(data: bytes, where: int) -> SerialNumber:
    return SerialNumber(serial=u64(data, where + 4))


def _ltr_ns(value: int) -> int:
    return (value & 0x3FF) * (1 << (5 * ((value >> 10) & 0x7)))


def _decode_ltr(data: bytes, where: int) -> Ltr:
    return Ltr(
        max_snoop_latency_ns=_ltr_ns(u16(data, where + 4)),
        max_no_snoop_latency_ns=_ltr_ns(u16(data, where + 6)),
    )


#: decoder and the structure size it reads
EXTENDED_DECODERS: Mapping[int, tuple[Callable[[bytes, int], ExtendedBody], int]] = {
    EXT_AER: (_decode_aer, 0x1C),
    EXT_SRIOV: (_decode_sriov, 0x3C),
    EXT_ACS: (_decode_acs, 0x08),
    EXT_ARI: (_decode_ari, 0x08),
    EXT_DSN: (_decode_dsn, 0x0C),
    EXT_LTR: (_decode_ltr, 0x08),
}
