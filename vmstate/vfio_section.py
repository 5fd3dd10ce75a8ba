"""QEMU's vfio section framing (hw/vfio/migration.c), as QEMU writes it in migration
streams and vmstate in saved files.

A section is groups, each opened by a tag and closed by END_OF_STATE:
DEV_CONFIG_STATE with QEMU's VFIOPCIDevice state, DEV_SETUP_STATE empty, and
DEV_DATA_STATE with chunks of device data (be64 size + bytes, DEV_DATA_STATE between
chunks); END_OF_STATE alone is a pre-copy round that read nothing.  Walking checks
every size before it is used.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from vmstate.description import Description
from vmstate.errors import DecodeError, LimitError, TruncatedError
from vmstate.stream import Input, RawParser

END_OF_STATE: Final = 0xFFFFFFFFEF100001
DEV_CONFIG_STATE: Final = 0xFFFFFFFFEF100002
DEV_SETUP_STATE: Final = 0xFFFFFFFFEF100003
DEV_DATA_STATE: Final = 0xFFFFFFFFEF100004
_TAGS: Final = {END_OF_STATE, DEV_CONFIG_STATE, DEV_SETUP_STATE, DEV_DATA_STATE}
#: largest DEV_DATA_STATE chunk accepted (vmstate writes at most device_data.CHUNK_SIZE)
MAX_CHUNK: Final = 64 << 20
#: device data decoded for checking and showing when its format is known
MAX_DECODED_DATA: Final = 16 << 20
_BE64: Final = struct.Struct(">Q")


@attrs.frozen
class VfioPayload:
    """What a vfio section holds, at absolute offsets."""

    #: QEMU's VFIOPCIDevice state in DEV_CONFIG_STATE: (start, end)
    config: tuple[int, int] | None
    chunks: tuple[tuple[int, int], ...]
    end: int
    #: each group in order: its opening tag and how many chunks it carries
    #: (END_OF_STATE opens none: QEMU's pre-copy round that read nothing)
    groups: tuple[tuple[int, int], ...]
    #: the layout of the VFIOPCIDevice state (pci_vfio.qemu_held), with config
    config_held: Mapping[str, Any] | None = attrs.field(eq=False)
    #: the VFIOPCIDevice state, decoded
    config_state: dict[str, Any] | None = attrs.field(eq=False, repr=False)

    @property
    def data_size(self) -> int:
        return sum(size for _, size in self.chunks)


def raw_sections(idstr: str) -> RawParser | None:
    """The walker of vfio sections, for parsing streams that hold them."""
    return (lambda b, pos: walk_vfio(b, pos).end) if idstr.endswith("/vfio") else None


def walk_vfio(buf: Input, pos: int) -> VfioPayload:
    """Walk a vfio section's tags from *pos*; every size is checked before use.

    QEMU's VFIOPCIDevice state has no length; its layout follows from its config
    space (MSI-X vectors, read at its start) and from the size of the device's config
    region, which only the state's end shows (see :func:`qemu_config`)."""
    config: tuple[int, int] | None = None
    held: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    chunks: list[tuple[int, int]] = []
    groups: list[tuple[int, int]] = []
    while pos + 8 <= len(buf) and buf[pos] == 0xFF:
        tag = _u64(buf, pos, "vfio tag")
        if tag not in _TAGS:
            raise DecodeError(
                "unknown vfio tag",
                offset=pos,
                expected="DEV_CONFIG_STATE, DEV_SETUP_STATE, DEV_DATA_STATE or END_OF_STATE",
                found=f"{tag:#x}",
            )
        pos += 8
        opening, opened = tag, len(chunks)
        if tag == END_OF_STATE:
            groups.append((tag, 0))
            continue
        if tag == DEV_CONFIG_STATE:
            state, end, held = qemu_config(buf, pos)
            config = (pos, end)
            pos = end
        while tag == DEV_DATA_STATE:
            size = _u64(buf, pos, "chunk size")
            if size > MAX_CHUNK:
                raise LimitError(
                    "device data chunk too large",
                    offset=pos,
                    expected=f"<= {MAX_CHUNK} bytes",
                    found=str(size),
                )
            if pos + 8 + size > len(buf):
                raise TruncatedError(
                    "device data chunk cut short",
                    offset=pos + 8,
                    expected=f"{size} bytes",
                    found=f"{len(buf) - pos - 8} bytes",
                )
            chunks.append((pos + 8, size))
            pos += 8 + size
            tag = _u64(buf, pos, "vfio tag")
            if tag == DEV_DATA_STATE:
                pos += 8
        closing = _u64(buf, pos, "END_OF_STATE")
        if closing != END_OF_STATE:
            raise DecodeError(
                "vfio group not closed",
                offset=pos,
                expected=f"END_OF_STATE {END_OF_STATE:#x}",
                found=f"{closing:#x}",
            )
        pos += 8
        groups.append((opening, len(chunks) - opened))
    return VfioPayload(config, tuple(chunks), pos, tuple(groups), held, state)


@attrs.frozen
class Closing:
    """What must follow a VFIOPCIDevice state, which is how its layout is told."""

    name: str
    #: its bytes, for errors
    expected: str
    #: whether *buf* has it at an offset
    found_at: Callable[[Input, int], bool]


END_OF_GROUP: Final = Closing(
    "END_OF_STATE",
    f"END_OF_STATE {END_OF_STATE:#x}",
    lambda buf, at: at + 8 <= len(buf) and _BE64.unpack_from(buf, at)[0] == END_OF_STATE,
)


def qemu_config(
    buf: Input, pos: int, closing: Closing = END_OF_GROUP
) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """The VFIOPCIDevice state at *pos*, decoded, its end and its layout.

    QEMU saves 256 or 4096 config bytes by the device's config region size, which the
    bytes do not record (pci_vfio.qemu_express): the layout is the one whose end
    *closing* follows, tried first as a PCI Express capability suggests.  (PCI and the
    registry are imported here: parsing a stream without vfio sections needs neither.)"""
    from vmstate import pci_vfio, registry
    from vmstate.pci.decode import decode_config

    desc = registry.get(pci_vfio.QEMU_DESCRIPTION_NAME)
    if pos + 4 + 256 > len(buf):
        raise TruncatedError(
            "VFIOPCIDevice state cut short",
            offset=pos,
            expected="a version and 256 bytes of config",
            found=f"{len(buf) - pos} bytes",
        )
    config = bytes(buf[pos + 4 : pos + 4 + 256])
    guess = decode_config(config).express is not None
    ends = []
    failed: DecodeError | None = None
    for express in (guess, not guess):
        held = pci_vfio.qemu_held(config, express)
        try:
            state, end = desc.load_from(buf, pos, desc.version_id, held=held)
        except DecodeError as e:
            failed = failed or e
            continue
        if closing.found_at(buf, end):
            return state, end, held
        ends.append(end)
    if not ends and failed is not None:
        raise failed
    raise DecodeError(
        f"VFIOPCIDevice state not closed by {closing.name} with 256 or 4096 config bytes",
        offset=ends[0],
        expected=closing.expected,
        found=", ".join(f"{bytes(buf[e : e + 8]).hex()} at {e:#x}" for e in ends),
    )


def decode_data(
    buf: Input,
    chunks: tuple[tuple[int, int], ...],
    data_format: Description,
    idstr: str,
    default_offset: int,
) -> dict[str, Any] | None:
    """The device data in *chunks* joined and decoded with *data_format*; None when it
    is larger than MAX_DECODED_DATA.  A decoding error names the offset in *buf* of
    the byte it found (*default_offset* when the data ran out) and *idstr* in its path."""
    if sum(size for _, size in chunks) > MAX_DECODED_DATA:
        return None
    joined = b"".join(bytes(buf[at : at + size]) for at, size in chunks)
    try:
        return data_format.load(joined)
    except DecodeError as e:
        at = _offset_in(chunks, e.offset, default_offset)
        raise attrs.evolve(e, offset=at, path=(idstr, *e.path)) from None


def _offset_in(chunks: tuple[tuple[int, int], ...], offset: int, default: int) -> int:
    """Where byte *offset* of the joined device data lies in the input."""
    for at, size in chunks:
        if offset < size:
            return at + offset
        offset -= size
    return default


def _u64(buf: Input, pos: int, what: str) -> int:
    if pos + 8 > len(buf):
        raise TruncatedError(
            "input ends early",
            offset=pos,
            expected=f"8 bytes of {what}",
            found=f"{len(buf) - pos} bytes",
        )
    return int(_BE64.unpack_from(buf, pos)[0])
