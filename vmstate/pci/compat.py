"""Would state saved from one device fit another?  Config space against config space.

Before a VFIO device's state is loaded we want to know, from bytes alone, whether the
destination device is the same kind of device with the same layout.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import attrs

from vmstate.pci.decode import decode_config
from vmstate.pci.masks import ConfigMasks
from vmstate.pci.model import Bar, Capability, ConfigSpace, ExtendedCapability
from vmstate.pci.problems import ConfigProblem, Difference
from vmstate.pci.registers import (
    BAR0,
    CAP_MSI,
    CAP_MSIX,
    CLASS_PROG,
    DEVICE_ID,
    HEADER_TYPE,
    REVISION_ID,
    VENDOR_ID,
    bar_count,
)


def check_compatible(
    src_config: bytes,
    dst_config: bytes,
    dst_masks: ConfigMasks | None = None,
    *,
    src_bar_sizes: Mapping[int, int] | None = None,
    dst_bar_sizes: Mapping[int, int] | None = None,
) -> tuple[ConfigProblem, ...]:
    """Why state saved from the device with *src_config* would not fit the one with *dst_config*.

    Compares identity, header layout, capability layout, MSI/MSI-X shape and BAR kinds
    (and sizes, where both sides give them).  With *dst_masks* (see :func:`build_masks`)
    it also applies QEMU's byte rule.  Empty means compatible.
    """
    src = decode_config(src_config, src_bar_sizes)
    dst = decode_config(dst_config, dst_bar_sizes)
    out: list[ConfigProblem] = []
    out += [attrs.evolve(p, message=f"source: {p.message}") for p in src.problems]
    out += [attrs.evolve(p, message=f"destination: {p.message}") for p in dst.problems]
    if src.size != dst.size:
        out.append(
            Difference(
                "size",
                0,
                f"config space is {src.size} bytes, destination's {dst.size}",
                f"{src.size} bytes",
                f"{dst.size} bytes",
            )
        )
    out += _compare_identity(src, dst)
    out += _compare_layout(src, dst)
    out += _compare_interrupts(src, dst)
    out += _compare_bars(src, dst)
    if dst_masks is not None:
        named = [p for p in out if isinstance(p, Difference)]
        out += (  # a byte of a register already named is the same difference, said once
            p
            for p in dst_masks.mismatches(bytes(src_config), bytes(dst_config))
            if not any(n.covers(p.offset) for n in named)
        )
    return tuple(out)


def _differs(
    code: str, offset: int, what: str, a: object, b: object, fmt: str = "#x", width: int = 1
) -> Iterator[ConfigProblem]:
    """A difference of register *what* (*width* bytes at *offset*) when *a* != *b*."""
    if a != b:
        source, destination = f"{a:{fmt}}", f"{b:{fmt}}"
        message = f"{what}: source {source}, destination {destination}"
        yield Difference(code, offset, message, source, destination, width)


def _compare_identity(src: ConfigSpace, dst: ConfigSpace) -> Iterator[ConfigProblem]:
    s, d = src.header, dst.header
    yield from _differs("identity", VENDOR_ID, "vendor id", s.vendor_id, d.vendor_id, "#06x", 2)
    yield from _differs("identity", DEVICE_ID, "device id", s.device_id, d.device_id, "#06x", 2)
    yield from _differs("identity", REVISION_ID, "revision", s.revision_id, d.revision_id, "#04x")
    src_class = (s.class_code.base, s.class_code.sub, s.class_code.prog_if)
    dst_class = (d.class_code.base, d.class_code.sub, d.class_code.prog_if)
    if src_class != dst_class:
        source, destination = ("{:02x}{:02x}{:02x}".format(*c) for c in (src_class, dst_class))
        yield Difference(
            "identity",
            CLASS_PROG,
            f"class code: source {source}, destination {destination}",
            source,
            destination,
            3,
        )
    yield from _differs(
        "header-type", HEADER_TYPE, "header type", s.header_type, d.header_type, "d"
    )
    yield from _differs(
        "header-type", HEADER_TYPE, "multi-function", s.multifunction, d.multifunction, ""
    )
    if s.endpoint is not None and d.endpoint is not None:
        se, de = s.endpoint, d.endpoint
        yield from _differs(
            "identity",
            0x2C,
            "subsystem vendor id",
            se.subsystem_vendor_id,
            de.subsystem_vendor_id,
            "#06x",
            2,
        )
        yield from _differs(
            "identity", 0x2E, "subsystem id", se.subsystem_id, de.subsystem_id, "#06x", 2
        )


def _layout(caps: tuple[Capability, ...] | tuple[ExtendedCapability, ...]) -> dict[int, int]:
    return {c.offset: c.id for c in caps}


def _compare_layout(src: ConfigSpace, dst: ConfigSpace) -> Iterator[ConfigProblem]:
    for kind, a, b, width in (
        ("capability", _layout(src.capabilities), _layout(dst.capabilities), 2),
        (
            "extended capability",
            _layout(src.extended_capabilities),
            _layout(dst.extended_capabilities),
            3,
        ),
    ):
        for offset in sorted(a.keys() | b.keys()):
            if a.get(offset) == b.get(offset):
                continue
            side_a = f"{a[offset]:#x}" if offset in a else "none"
            side_b = f"{b[offset]:#x}" if offset in b else "none"
            yield Difference(
                "cap-layout",
                offset,
                f"{kind} at {offset:#0{width + 2}x}: source {side_a}, destination {side_b}",
                side_a,
                side_b,
                2 if width == 2 else 4,  # the capability's header: id and next pointer
            )


def _compare_interrupts(src: ConfigSpace, dst: ConfigSpace) -> Iterator[ConfigProblem]:
    s_msi, d_msi, cap = src.msi, dst.msi, src.capability(CAP_MSI)
    if s_msi is not None and d_msi is not None and cap is not None:
        yield from _differs(
            "msi", cap.offset + 2, "MSI vectors", s_msi.vectors, d_msi.vectors, "d", 2
        )
        yield from _differs(
            "msi", cap.offset + 2, "MSI 64-bit", s_msi.is_64bit, d_msi.is_64bit, "", 2
        )
        yield from _differs(
            "msi",
            cap.offset + 2,
            "MSI per-vector masking",
            s_msi.per_vector_masking,
            d_msi.per_vector_masking,
            "",
            2,
        )
    s_x, d_x, cap = src.msix, dst.msix, src.capability(CAP_MSIX)
    if s_x is not None and d_x is not None and cap is not None:
        yield from _differs(
            "msix", cap.offset + 2, "MSI-X table size", s_x.table_size, d_x.table_size, "d", 2
        )
        yield from _differs(
            "msix",
            cap.offset + 4,
            "MSI-X table",
            (s_x.table_bir, s_x.table_offset),
            (d_x.table_bir, d_x.table_offset),
            "",
            4,
        )
        yield from _differs(
            "msix",
            cap.offset + 8,
            "MSI-X PBA",
            (s_x.pba_bir, s_x.pba_offset),
            (d_x.pba_bir, d_x.pba_offset),
            "",
            4,
        )


_PLAIN_MEMORY = "memory 32-bit non-prefetchable"


def _bar_kind(bar: Bar | None) -> str:
    if bar is None:
        return "none"
    if bar.kind == "io":
        return "io"
    return f"memory {'64' if bar.is_64bit else '32'}-bit {'prefetchable' if bar.prefetchable else 'non-prefetchable'}"


def _compare_bars(src: ConfigSpace, dst: ConfigSpace) -> Iterator[ConfigProblem]:
    for index in range(bar_count(src.header.header_type)):
        s, d = src.bar(index), dst.bar(index)
        offset = BAR0 + 4 * index
        if (s is None or d is None) and {_bar_kind(s), _bar_kind(d)} <= {"none", _PLAIN_MEMORY}:
            # a 32-bit non-prefetchable memory BAR at address 0 reads as no BAR at all: from
            # bytes the two cannot be told apart
            continue
        yield from _differs("bar-kind", offset, f"BAR {index}", _bar_kind(s), _bar_kind(d), "", 4)
        if s is not None and d is not None and s.size is not None and d.size is not None:
            yield from _differs("bar-size", offset, f"BAR {index} size", s.size, d.size, "#x", 4)
    s_rom, d_rom = src.expansion_rom, dst.expansion_rom
    if (
        s_rom is not None
        and d_rom is not None
        and s_rom.size is not None
        and d_rom.size is not None
    ):
        yield from _differs(
            "bar-size", s_rom.offset, "expansion ROM size", s_rom.size, d_rom.size, "#x", 4
        )
