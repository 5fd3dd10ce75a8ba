"""QEMU migration stream framing (migration/savevm.c): header, configuration,
START/PART/END/FULL sections with footers, commands, EOF and the vmdesc JSON.

Device sections carry no length, so a section's end is found by decoding it
with its description; the ``ram`` section is walked record by record
(:mod:`vmstate.stream_ram`) and its pages are never held in memory.  Commands
are kept in order: QEMU 10.0 machine types send SWITCHOVER_START before the
device sections, postcopy streams announce themselves (POSTCOPY_ADVISE) and
carry their device sections inside a PACKAGED command, which is read in place.
The input is any buffer (``bytes`` or an ``mmap`` of the file).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from vmstate.description import Description
from vmstate.errors import (
    DecodeError,
    DescriptionError,
    IncompatibleError,
    LimitError,
    TruncatedError,
)
from vmstate.interpreter.context import DEFAULT_LIMITS, Limits, need
from vmstate.stream_config import (
    COMMANDS,
    CONFIGURATION_DESCRIPTION,
    PACKAGED,
    POSTCOPY_ADVISE,
    Command,
    capabilities_of,
)
from vmstate.stream_ram import (
    PAGE_SIZES,
    PageSink,
    Passed,
    RamBlock,
    RamSettings,
    RamWalker,
    printable,
)
from vmstate.vmdesc import (
    find_vmdesc,
    parse_vmdesc,
    resolver_from_vmdesc,
    truncated_vmdesc,
)

MAGIC = 0x5145564D  # "QEVM"
VERSION = 3

EOF = 0x00
SECTION_START = 0x01
SECTION_PART = 0x02
SECTION_END = 0x03
SECTION_FULL = 0x04
VMDESCRIPTION = 0x06
CONFIGURATION = 0x07
COMMAND = 0x08
FOOTER = 0x7E

MAX_SECTIONS = 1 << 16
MAX_COMMANDS = 1 << 16

_U8 = struct.Struct(">B")
_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")


@attrs.frozen
class Section:
    """One section as framed in the stream.

    ``start``..``end`` are the payload bytes (what the description encodes);
    ``state`` is the decoded payload for device sections, None for ``ram``.
    """

    type: int
    section_id: int
    idstr: str
    instance_id: int
    version_id: int
    header_offset: int
    start: int
    end: int
    state: dict[str, Any] | None = attrs.field(default=None, eq=False, repr=False)
    description: Description | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class Stream:
    """A parsed migration stream."""

    version: int
    configuration: dict[str, Any] | None
    sections: tuple[Section, ...]
    ram_blocks: tuple[RamBlock, ...]
    vmdesc: dict[str, Any] | None
    vmdesc_offset: int | None
    size: int
    commands: tuple[Command, ...] = ()
    #: where the configuration section starts (its type byte), when there is one
    configuration_offset: int | None = None

    @property
    def machine(self) -> str | None:
        if self.configuration is None:
            return None
        return self.configuration["name"].decode("utf-8", "replace")

    @property
    def capabilities(self) -> tuple[str, ...]:
        """The migration capabilities the configuration section names (QEMU sends
        only those the destination must share: x-ignore-shared, mapped-ram)."""
        return capabilities_of(self.configuration)

    def command_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.commands)

    def device_sections(self) -> tuple[Section, ...]:
        return tuple(s for s in self.sections if s.state is not None)


#: a whole stream in memory or mapped from its file
Input = bytes | mmap.mmap
#: finds the description of a section: (idstr, instance_id, version_id) -> Description
Resolver = Callable[[str, int, int], Description | None]
#: fits a description to a section's bytes when no resolver knows it (a stream without
#: vmdesc, read with a -dump-vmstate): (buffer, payload start, section id, idstr,
#: instance_id, version_id) -> Description
Fitter = Callable[[Input, int, int, str, int, int], Description | None]
#: walks a section that is no VMState (QEMU's "old style"): (buffer, start) -> end
RawParser = Callable[[Input, int], int]
#: told how far parsing has gone: (offset, stream size), after each section and command
Progress = Callable[[int, int], None]
#: finds the walker of such a section by id string, or None
RawResolver = Callable[[str], RawParser | None]


def stream_machine(buf: Input) -> str | None:
    """The machine type a stream's configuration section names (None without one: machine
    types up to 2.3 send none), read from the header alone."""
    if len(buf) < 13 or _BE32.unpack_from(buf, 0)[0] != MAGIC or buf[8] != CONFIGURATION:
        return None
    length = min(_BE32.unpack_from(buf, 9)[0], 255)
    return bytes(buf[13 : 13 + length]).decode("utf-8", "replace")


def parse(
    buf: Input,
    resolver: Resolver | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    page_sink: PageSink | None = None,
    raw: RawResolver | None = None,
    fitter: Fitter | None = None,
    progress: Progress | None = None,
) -> Stream:
    """Parse a whole stream.  Device sections are decoded with *resolver*, or
    with the stream's own vmdesc when no resolver is given, or with what *fitter*
    makes of their bytes; sections *raw* knows are walked by their own parser
    (their state stays None).  *progress* hears of each section and command read."""
    try:
        return _Parser(buf, resolver, limits, page_sink, raw, fitter, progress).run()
    except DecodeError as e:
        if isinstance(e, TruncatedError) and e.message == "input ends early":
            e = attrs.evolve(e, message=f"truncated at offset {len(buf):#x}")
        located = e if e.path else e.within("stream")
        raise located.with_excerpt(buf) from None


def refuse_truncated(buf: Input) -> None:
    """Raise when *buf*, which has no vmdesc, is no stream or ends early, so that its
    error says so rather than that it lacks a vmdesc: its framing and RAM are read up to
    its first device section."""
    if bytes(buf[:4]) != MAGIC.to_bytes(4, "big"):
        parse(buf)  # refuses it: no stream, or its header cut short
    try:
        parse(buf)
    except TruncatedError:
        raise
    except DecodeError:
        return


def _check_magic(buf: Input) -> None:
    """Refuse what is no migration stream before looking for its vmdesc."""
    head = bytes(buf[:4])
    magic = MAGIC.to_bytes(4, "big")
    if head == magic:
        return
    if head and magic.startswith(head):
        raise TruncatedError(
            f"truncated at offset {len(buf):#x}", offset=0, expected="the 8-byte header",
            found=f"{len(buf)} bytes",
        )
    raise DecodeError(
        "not a QEMU migration stream",
        offset=0,
        expected=f"magic {MAGIC:#x} (QEVM)",
        found=f"{int.from_bytes(head, 'big'):#x}" if len(head) == 4 else f"{len(head)} bytes",
    )


class _Parser:
    def __init__(
        self,
        buf: Input,
        resolver: Resolver | None,
        limits: Limits,
        sink: PageSink | None,
        raw: RawResolver | None,
        fitter: Fitter | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.buf = buf
        self.limits = limits
        self.sink = sink
        self.raw = raw
        self.fitter = fitter
        self.progress = progress
        self.page_size = 4096
        _check_magic(buf)
        self.vmdesc_at = find_vmdesc(buf)
        self.vmdesc = parse_vmdesc(buf, self.vmdesc_at) if self.vmdesc_at is not None else None
        #: no descriptions at all: RAM is walked, the first device section is refused
        self.undescribed = resolver is None and fitter is None and self.vmdesc is None
        if self.vmdesc is None and fitter is None:
            truncated_vmdesc(buf)
        if resolver is None and self.vmdesc is None:
            resolver = _unknown
        elif resolver is None:
            assert self.vmdesc is not None
            resolver = resolver_from_vmdesc(self.vmdesc)
            self.page_size = self.vmdesc_page_size(self.vmdesc)
        self.resolver = resolver
        self.sections: list[Section] = []
        self.open: dict[int, tuple[str, int, int]] = {}
        self.commands: list[Command] = []
        self.capabilities: tuple[str, ...] = ()
        self.ram: RamWalker | None = None
        self.passed = Passed(buf)
        #: where the package being read ends (postcopy), or None
        self.package_end: int | None = None

    def vmdesc_page_size(self, vmdesc: dict[str, Any]) -> int:
        size = vmdesc.get("page_size", 4096)
        if isinstance(size, bool) or not isinstance(size, int) or size not in PAGE_SIZES:
            raise DecodeError(
                "vmdesc page_size is not a power of two in 512..16M",
                offset=self.vmdesc_at or 0,
                expected="512..16777216",
                found=repr(size)[:20],
                path=("vmdesc",),
            )
        return size

    def u8(self, pos: int, what: str) -> int:
        need(self.buf, pos, 1, what)
        return self.buf[pos]

    def be32(self, pos: int, what: str) -> int:
        need(self.buf, pos, 4, what)
        return _BE32.unpack_from(self.buf, pos)[0]

    def be64(self, pos: int, what: str) -> int:
        need(self.buf, pos, 8, what)
        return _BE64.unpack_from(self.buf, pos)[0]

    def text(self, pos: int, length: int, what: str) -> str:
        need(self.buf, pos, length, what)
        return printable(bytes(self.buf[pos : pos + length]))

    def run(self) -> Stream:
        buf = self.buf
        magic = self.be32(0, "file magic")
        if magic != MAGIC:
            raise DecodeError(
                "not a QEMU migration stream",
                offset=0,
                expected=f"magic {MAGIC:#x}",
                found=f"{magic:#x}",
            )
        version = self.be32(4, "file version")
        if version != VERSION:
            raise IncompatibleError(
                "unsupported stream version", offset=4, expected=str(VERSION), found=str(version)
            )
        pos = 8
        configuration = None
        configuration_at = None
        while True:
            if self.progress is not None:
                self.progress(pos, len(buf))
            if len(self.sections) > MAX_SECTIONS or len(self.commands) > MAX_COMMANDS:
                raise LimitError(
                    "too many sections or commands",
                    offset=pos,
                    expected=f"<= {MAX_SECTIONS} sections, <= {MAX_COMMANDS} commands",
                )
            self.leave_package(pos)
            kind = self.u8(pos, "section type")
            if kind == EOF:
                pos += 1
                break
            if kind == CONFIGURATION:
                configuration_at = pos
                configuration, pos = self.configuration(pos + 1)
            elif kind in (SECTION_START, SECTION_FULL):
                pos = self.section_start(kind, pos)
            elif kind in (SECTION_PART, SECTION_END):
                pos = self.section_part(kind, pos)
            elif kind == COMMAND:
                pos = self.command(pos)
            else:
                raise DecodeError(
                    "unknown section type", offset=pos, expected="0x00-0x08", found=f"{kind:#x}"
                )
            self.passed.release(pos)
        if self.package_end is not None:
            raise DecodeError(
                "EOF inside a PACKAGED command",
                offset=pos - 1,
                expected=f"the package to end at {self.package_end:#x}",
                found="EOF",
            )
        if pos != len(buf) and self.vmdesc_at != pos:
            raise DecodeError(
                "unexpected bytes after EOF",
                offset=pos,
                expected="end of stream or VMDESCRIPTION",
                found=f"{buf[pos]:#x}",
            )
        return Stream(
            version,
            configuration,
            tuple(self.sections),
            tuple(self.ram.blocks) if self.ram is not None else (),
            self.vmdesc,
            self.vmdesc_at,
            len(buf),
            tuple(self.commands),
            configuration_at,
        )

    def configuration(self, pos: int) -> tuple[dict[str, Any], int]:
        state, end = CONFIGURATION_DESCRIPTION.load_from(self.buf, pos, 0, limits=self.limits)
        if "configuration/target-page-bits" in state:
            bits = state["configuration/target-page-bits"]["target_page_bits"]
            if not 9 <= bits <= 24:
                raise DecodeError(
                    "bad target page bits", offset=pos, expected="9..24", found=str(bits)
                )
            self.page_size = 1 << bits
        self.capabilities = capabilities_of(state)
        return state, end

    def command(self, pos: int) -> int:
        """A COMMAND record, refused as QEMU 10.0 refuses it; a PACKAGED command's
        package (a postcopy stream's device sections) is read on in place."""
        need(self.buf, pos + 1, 4, "command header")
        number, length = (
            _BE16.unpack_from(self.buf, pos + 1)[0],
            _BE16.unpack_from(self.buf, pos + 3)[0],
        )
        known = COMMANDS.get(number)
        if known is None or known[1] not in (None, length):
            raise DecodeError(
                "unknown command" if known is None else f"{known[0]} command of a bad length",
                offset=pos + 1,
                expected="a command 1..11" if known is None else f"{known[1]} bytes of data",
                found=f"{number:#x}" if known is None else str(length),
            )
        need(self.buf, pos + 5, length, f"{known[0]} command data")
        data = bytes(self.buf[pos + 5 : pos + 5 + length])
        self.commands.append(Command(number, pos, data))
        pos += 5 + length
        if number == PACKAGED:
            if self.package_end is not None:
                raise DecodeError(
                    "a package inside a package",
                    offset=pos - 9,
                    expected="sections and commands",
                    found="PACKAGED",
                )
            size = _BE32.unpack(data)[0]
            need(self.buf, pos, size, "package")
            self.package_end = pos + size
        return pos

    def leave_package(self, pos: int) -> None:
        """Close the package at its end; an item that ran over it is malformed."""
        if self.package_end is None or pos < self.package_end:
            return
        if pos > self.package_end:
            raise DecodeError(
                "a section runs past the end of its package",
                offset=self.package_end,
                expected=f"an item boundary at {self.package_end:#x}",
                found=f"the item ends at {pos:#x}",
            )
        self.package_end = None

    def ram_walker(self) -> RamWalker:
        """The walker of the ram section, set up from what the stream said before it."""
        if self.ram is None:
            settings = RamSettings(
                page_size=self.page_size,
                postcopy=any(c.number == POSTCOPY_ADVISE for c in self.commands),
                ignore_shared="x-ignore-shared" in self.capabilities,
                mapped_ram="mapped-ram" in self.capabilities,
            )
            self.ram = RamWalker(self.buf, settings, self.sink, self.passed)
        return self.ram

    def section_start(self, kind: int, pos: int) -> int:
        header = pos
        section_id = self.be32(pos + 1, "section id")
        length = self.u8(pos + 5, "section name length")
        idstr = self.text(pos + 6, length, "section name")
        pos += 6 + length
        instance_id = self.be32(pos, "instance id")
        version_id = self.be32(pos + 4, "version id")
        pos += 8
        if kind == SECTION_START:
            self.open[section_id] = (idstr, instance_id, version_id)
        return self.payload(kind, header, pos, section_id, idstr, instance_id, version_id)

    def section_part(self, kind: int, pos: int) -> int:
        header = pos
        section_id = self.be32(pos + 1, "section id")
        if section_id not in self.open:
            raise DecodeError(
                "PART/END for a section that was never started",
                offset=pos + 1,
                expected="a started section id",
                found=str(section_id),
            )
        idstr, instance_id, version_id = self.open[section_id]
        if kind == SECTION_END:
            del self.open[section_id]
        return self.payload(kind, header, pos + 5, section_id, idstr, instance_id, version_id)

    def payload(
        self,
        kind: int,
        header: int,
        pos: int,
        section_id: int,
        idstr: str,
        instance_id: int,
        version_id: int,
    ) -> int:
        start = pos
        state = None
        desc = None
        if idstr == "ram" and instance_id == 0:
            if version_id != 4:
                raise IncompatibleError(
                    "unsupported RAM section version",
                    offset=header,
                    expected="4",
                    found=str(version_id),
                    path=(idstr,),
                )
            pos = self.ram_walker().walk(pos)
        elif self.raw is not None and (walk := self.raw(idstr)) is not None:
            try:
                pos = walk(self.buf, pos)
            except DecodeError as e:
                raise e.within(idstr) from None
        else:
            try:
                desc = self.resolver(idstr, instance_id, version_id)
                if desc is None and self.fitter is not None:
                    desc = self.fitter(self.buf, pos, section_id, idstr, instance_id, version_id)
            except DescriptionError as e:
                raise DecodeError(
                    f"the description of {idstr} is malformed: {e}",
                    offset=header,
                    expected="a well-formed description",
                    found=e.location or "?",
                    path=(idstr,),
                ) from None
            if desc is None and self.undescribed:
                raise DecodeError(
                    f"no vmdesc to decode section {idstr!r} with: the stream was written "
                    "without one (suppress-vmdesc, postcopy), or is truncated; decode it "
                    "with the source QEMU's -dump-vmstate (--descriptions)",
                    offset=header,
                    expected="a VMDESCRIPTION at the end of the stream",
                    found=f"none in {len(self.buf)} bytes",
                )
            if desc is None:
                raise DecodeError(
                    f"no description for section {idstr!r} instance {instance_id}",
                    offset=header,
                    expected="a description (vmdesc entry or --descriptions)",
                    found=idstr[:80],
                )
            try:
                state, pos = desc.load_from(self.buf, pos, version_id, limits=self.limits)
            except DecodeError as e:
                raise e.within(idstr) from None
        end = pos
        pos = self.footer(pos, section_id, idstr)
        self.sections.append(
            Section(
                kind, section_id, idstr, instance_id, version_id, header, start, end, state, desc
            )
        )
        return pos

    def footer(self, pos: int, section_id: int, idstr: str) -> int:
        if pos < len(self.buf) and self.buf[pos] == FOOTER:
            found = self.be32(pos + 1, "section footer")
            if found != section_id:
                raise DecodeError(
                    f"Mismatched section id in footer for {idstr}",
                    offset=pos + 1,
                    expected=f"{section_id:#x}",
                    found=f"{found:#x}",
                    path=(idstr,),
                )
            return pos + 5
        return pos


def _unknown(idstr: str, instance_id: int, version_id: int) -> Description | None:
    return None


def resolver_from(descriptions: Mapping[str, Description]) -> Resolver:
    """Find a section's description by its vmsd name (the idstr after the last '/')."""

    def resolve(idstr: str, instance_id: int, version_id: int) -> Description | None:
        return descriptions.get(idstr) or descriptions.get(idstr.rsplit("/", 1)[-1])

    return resolve


__all__ = [
    "CONFIGURATION_DESCRIPTION",
    "Command",
    "Fitter",
    "PageSink",
    "RamBlock",
    "RawParser",
    "RawResolver",
    "Resolver",
    "Section",
    "Stream",
    "TruncatedError",
    "find_vmdesc",
    "parse",
    "refuse_truncated",
    "resolver_from",
]
