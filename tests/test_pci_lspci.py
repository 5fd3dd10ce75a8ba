"""Our config-space decoding agrees with pciutils' ``lspci``, config space by config space.

``lspci -F FILE -vvv`` decodes a dump in ``lspci -xxxx`` format without touching
hardware, so every config space the suite has, the captured ones in tests/data/pci and
this machine's live ``/sys/bus/pci/devices/*/config``, goes through both decoders.
They must agree on the capability lists (offsets and ids, standard and extended), MSI
(vectors = Multiple Message Capable, 64-bit, maskable), MSI-X (table size, table and
PBA BIR + offset), the PCIe port type and version, and the PM version.

Where a chain is malformed lspci and we part ways on purpose: lspci marks the entry
("<chain looped>", "<chain broken>", "<access denied>") and stops; we stop with a
problem (or, past a 64-byte header read, with the rest marked unreadable).  The only place lspci goes on where we stop is a pointer into the header or
below 0x100, which lspci follows; there its next entry must be at that pointer.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import attrs
import pytest
from conftest import DATA, require_tool

from vmstate.pci.capabilities import Express, Msi, MsiX, PowerManagement
from vmstate.pci.decode import decode_config
from vmstate.pci.model import ConfigSpace

CAPTURED = sorted((DATA / "pci").glob("*.bin"))
HOST = sorted(Path("/sys/bus/pci/devices").glob("*/config"))

#: lspci's text for standard capabilities (ls-caps.c), longest prefix first
LSPCI_CAPS: tuple[tuple[str, int], ...] = (
    ("Power Management version", 0x01),
    ("AGP version", 0x02),
    ("Vital Product Data", 0x03),
    ("Slot ID", 0x04),
    ("MSI-X:", 0x11),
    ("MSI:", 0x05),
    ("CompactPCI hot-swap", 0x06),
    ("PCI-X", 0x07),
    ("HyperTransport", 0x08),
    ("Vendor Specific Information", 0x09),
    ("Debug port", 0x0A),
    ("CompactPCI central resource control", 0x0B),
    ("Hot-plug capable", 0x0C),
    ("Subsystem", 0x0D),
    ("AGP3", 0x0E),
    ("Secure device", 0x0F),
    ("Express", 0x10),
    ("SATA HBA", 0x12),
    ("PCI Advanced Features", 0x13),
    ("Enhanced Allocation", 0x14),
    ("Null", 0x00),
)

#: lspci's text for extended capabilities (ls-ecaps.c); VC is printed alike for 0x02 and 0x09
LSPCI_EXT_CAPS: tuple[tuple[str, frozenset[int]], ...] = tuple(
    (text, frozenset(ids))
    for text, ids in (
        ("Null", {0x00}),
        ("Advanced Error Reporting", {0x01}),
        ("Virtual Channel", {0x02, 0x09}),
        ("Device Serial Number", {0x03}),
        ("Power Budgeting", {0x04}),
        ("Root Complex Link", {0x05}),
        ("Root Complex Internal Link", {0x06}),
        ("Root Complex Event Collector Endpoint Association", {0x07}),
        ("Multi-Function Virtual Channel", {0x08}),
        ("Root Complex Register Block", {0x0A}),
        ("Vendor Specific Information", {0x0B}),
        ("Access Control Services", {0x0D}),
        ("Alternative Routing-ID Interpretation", {0x0E}),
        ("Address Translation Service", {0x0F}),
        ("Single Root I/O Virtualization", {0x10}),
        ("Multi-Root I/O Virtualization", {0x11}),
        ("Multicast", {0x12}),
        ("Page Request Interface", {0x13}),
        ("Physical Resizable BAR", {0x15}),
        ("Dynamic Power Allocation", {0x16}),
        ("Transaction Processing Hints", {0x17}),
        ("Latency Tolerance Reporting", {0x18}),
        ("Secondary PCI Express", {0x19}),
        ("Protocol Multiplexing", {0x1A}),
        ("Process Address Space ID", {0x1B}),
        ("LN Requester", {0x1C}),
        ("Downstream Port Containment", {0x1D}),
        ("L1 PM Substates", {0x1E}),
        ("Precision Time Measurement", {0x1F}),
        ("PCI Express over M_PHY", {0x20}),
        ("FRS Queueing", {0x21}),
        ("Readiness Time Reporting", {0x22}),
        ("Designated Vendor-Specific", {0x23}),
        ("Virtual Resizable BAR", {0x24}),
        ("Data Link Feature", {0x25}),
        ("Physical Layer 16.0 GT/s", {0x26}),
        ("Lane Margining at the Receiver", {0x27}),
        ("Hierarchy ID", {0x28}),
        ("Native PCIe Enclosure Management", {0x29}),
        ("Data Object Exchange", {0x2E}),
    )
)

LSPCI_PORT_TYPES = {
    "Endpoint": 0x0,
    "Legacy Endpoint": 0x1,
    "Root Port": 0x4,
    "Upstream Port": 0x5,
    "Downstream Port": 0x6,
    "PCI-Express to PCI/PCI-X Bridge": 0x7,
    "PCI/PCI-X to PCI-Express Bridge": 0x8,
    "Root Complex Integrated Endpoint": 0x9,
    "Root Complex Event Collector": 0xA,
}

CAP_LINE = re.compile(r"^\tCapabilities: \[([0-9a-f]+)( v\d+)?\] (.*)$")
MSI = re.compile(r"MSI: Enable([+-]) Count=(\d+)/(\d+) Maskable([+-]) 64bit([+-])")
MSIX = re.compile(r"MSI-X: Enable([+-]) Count=(\d+) Masked([+-])")
TABLE = re.compile(r"^\t\t(Vector table|PBA): BAR=(\d+) offset=([0-9a-f]{8})$")
EXPRESS = re.compile(r"Express \(v(\d+)\) (.*?)(?: \(Slot[+-]\))?, MSI [0-9a-f]{2}$")
PM = re.compile(r"Power Management version (\d+)")
MARKERS = ("<chain looped>", "<chain broken>", "<access denied>")


@attrs.frozen
class LspciCap:
    """One capability line of ``lspci -vvv`` with the indented lines under it."""

    offset: int
    ids: frozenset[int]
    text: str
    details: tuple[str, ...]


def dump_text(data: bytes) -> str:
    """*data* in the ``lspci -xxxx`` format that ``lspci -F`` reads back."""
    lines = ["00:01.0 Device under test"]
    lines += [
        f"{o:02x}: " + " ".join(f"{b:02x}" for b in data[o : o + 16])
        for o in range(0, len(data), 16)
    ]
    return "\n".join(lines) + "\n"


def lspci(data: bytes, tmp_path: Path) -> str:
    """``lspci -nn -vvv`` of *data*, read back from a dump file."""
    tool = require_tool("lspci")
    dump = tmp_path / "config.dump"
    dump.write_text(dump_text(data))
    result = subprocess.run(
        [tool, "-F", str(dump), "-nn", "-vvv"], capture_output=True, text=True, check=True
    )
    return result.stdout


def lspci_caps(text: str) -> tuple[list[LspciCap], list[LspciCap]]:
    """Standard and extended capabilities lspci listed, in order, markers left out."""
    entries: list[tuple[bool, int, str, list[str]]] = []
    details: list[str] | None = None
    for line in text.splitlines():
        match = CAP_LINE.match(line)
        if match is not None:
            details = None if match[3] in MARKERS else []
            if details is not None:
                entries.append((bool(match[2]), int(match[1], 16), match[3], details))
        elif details is not None and line.startswith("\t\t"):
            details.append(line)
        else:
            details = None
    std = [LspciCap(o, frozenset({std_id(t)}), t, tuple(d)) for e, o, t, d in entries if not e]
    ext = [LspciCap(o, ext_ids(t), t, tuple(d)) for e, o, t, d in entries if e]
    return std, ext


def std_id(text: str) -> int:
    if m := re.match(r"(?:Capability ID 0x|#)([0-9a-f]+)", text):
        return int(m[1], 16)
    for prefix, cap_id in LSPCI_CAPS:
        if text.startswith(prefix):
            return cap_id
    raise AssertionError(f"lspci capability text not mapped to an id: {text!r}")


def ext_ids(text: str) -> frozenset[int]:
    if m := re.match(r"Extended Capability ID (0x[0-9a-f]+)", text):
        return frozenset({int(m[1], 16)})
    for prefix, ids in sorted(LSPCI_EXT_CAPS, key=lambda p: -len(p[0])):
        if text.startswith(prefix):
            return ids
    raise AssertionError(f"lspci extended capability text not mapped to an id: {text!r}")


def rejected_pointers(data: bytes, space: ConfigSpace) -> tuple[int | None, int | None]:
    """Pointers we refused to follow but lspci follows: into the header, or below 0x100."""
    std = ext = None
    for p in space.problems:
        if p.code == "cap-pointer" and data[p.offset] & ~3 < 0x40:
            std = data[p.offset] & ~3
        if p.code == "ext-pointer":
            ext = (int.from_bytes(data[p.offset : p.offset + 4], "little") >> 20) & ~3
    return std, ext


def compare_chain(
    kind: str, ours: list[tuple[int, int]], theirs: list[LspciCap], rejected: int | None
) -> list[str]:
    out = []
    for i, (offset, cap_id) in enumerate(ours):
        if i >= len(theirs):
            out.append(f"{kind} [{offset:x}] id {cap_id:#x}: lspci has no entry")
        elif theirs[i].offset != offset or cap_id not in theirs[i].ids:
            out.append(
                f"{kind} {i}: ours [{offset:x}] id {cap_id:#x}, lspci [{theirs[i].offset:x}] {theirs[i].text!r}"
            )
    extra = theirs[len(ours) :]
    if extra and extra[0].offset != rejected:
        out.append(
            f"lspci lists more {kind}s: " + ", ".join(f"[{c.offset:x}] {c.text}" for c in extra)
        )
    return out


def compare_body(cap_offset: int, body: object, theirs: LspciCap) -> list[str]:
    """MSI, MSI-X, PCIe and PM fields against lspci's text for the same capability."""
    where = f"[{cap_offset:x}]"
    if isinstance(body, Msi):
        m = MSI.search(theirs.text)
        if m is None:
            return [f"{where} lspci MSI text not understood: {theirs.text!r}"]
        lspci_msi = (m[1] == "+", int(m[2]), int(m[3]), m[4] == "+", m[5] == "+")
        ours = (
            body.enabled,
            body.vectors_enabled,
            body.vectors,
            body.per_vector_masking,
            body.is_64bit,
        )
        return (
            []
            if ours == lspci_msi
            else [
                f"{where} MSI (enable, enabled, capable, maskable, 64-bit): ours {ours}, lspci {lspci_msi}"
            ]
        )
    if isinstance(body, MsiX):
        m = MSIX.search(theirs.text)
        tables = {
            t[1]: (int(t[2]), int(t[3], 16)) for line in theirs.details if (t := TABLE.match(line))
        }
        if m is None or set(tables) != {"Vector table", "PBA"}:
            return [f"{where} lspci MSI-X text not understood: {theirs.text!r} {theirs.details!r}"]
        lspci_msix = (m[1] == "+", int(m[2]), m[3] == "+", tables["Vector table"], tables["PBA"])
        ours_x = (
            body.enabled,
            body.table_size,
            body.function_mask,
            (body.table_bir, body.table_offset),
            (body.pba_bir, body.pba_offset),
        )
        return [] if ours_x == lspci_msix else [f"{where} MSI-X: ours {ours_x}, lspci {lspci_msix}"]
    if isinstance(body, Express):
        m = EXPRESS.search(theirs.text)
        if m is None or m[2] not in LSPCI_PORT_TYPES:
            return [f"{where} lspci Express text not understood: {theirs.text!r}"]
        lspci_exp = (int(m[1]), LSPCI_PORT_TYPES[m[2]])
        ours_e = (body.version, body.port_type)
        return (
            []
            if ours_e == lspci_exp
            else [f"{where} Express (version, type): ours {ours_e}, lspci {lspci_exp}"]
        )
    if isinstance(body, PowerManagement):
        m = PM.search(theirs.text)
        if m is None or int(m[1]) != body.version:
            return [f"{where} PM version: ours {body.version}, lspci {theirs.text!r}"]
    return []


def disagreements(data: bytes, space: ConfigSpace, text: str) -> list[str]:
    """Everything our decode of *data* and lspci's *text* disagree on."""
    first = text.splitlines()[0] if text else ""
    ident = f"[{space.header.vendor_id:04x}:{space.header.device_id:04x}]"
    if ident not in first:
        return [f"lspci did not read the dump as device {ident}: {first!r}"]
    std, ext = lspci_caps(text)
    rejected_std, rejected_ext = rejected_pointers(data, space)
    out = compare_chain(
        "capability", [(c.offset, c.id) for c in space.capabilities], std, rejected_std
    )
    out += compare_chain(
        "extended capability",
        [(c.offset, c.id) for c in space.extended_capabilities],
        ext,
        rejected_ext,
    )
    for cap, theirs in zip(space.capabilities, std, strict=False):
        if cap.offset == theirs.offset:
            out += compare_body(cap.offset, cap.body, theirs)
    return out


@pytest.mark.parametrize("path", CAPTURED, ids=lambda p: p.stem)
def test_captured_config_agrees_with_lspci(path: Path, tmp_path: Path) -> None:
    data = path.read_bytes()
    assert disagreements(data, decode_config(data), lspci(data, tmp_path)) == []


@pytest.mark.parametrize("path", HOST or [None], ids=lambda p: p.parent.name if p else "none")
def test_host_config_agrees_with_lspci(path: Path | None, tmp_path: Path) -> None:
    if path is None:
        pytest.skip("this machine has no PCI devices under /sys/bus/pci/devices")
    data = path.read_bytes()  # all of it as root, the 64-byte header otherwise
    assert disagreements(data, decode_config(data), lspci(data, tmp_path)) == []


def test_the_captures_cover_what_the_agreement_is_about() -> None:
    """Agreement on empty lists would prove little: the data must exercise every check."""
    spaces = [decode_config(p.read_bytes()) for p in CAPTURED]
    assert any(s.header.header_type == 1 for s in spaces)
    assert any(s.msix is not None for s in spaces)
    assert any(s.msi is not None and s.msi.is_64bit and s.msi.per_vector_masking for s in spaces)
    assert any(
        s.msi is not None and not s.msi.is_64bit and s.msi.per_vector_masking for s in spaces
    )
    assert any(s.msi is not None and s.msi.vectors > 1 for s in spaces)
    ext_ids_seen = {c.id for s in spaces for c in s.extended_capabilities}
    assert {0x01, 0x03, 0x0D, 0x0E, 0x10} <= ext_ids_seen  # AER, DSN, ACS, ARI, SR-IOV
    assert len({s.express.port_type for s in spaces if s.express is not None}) >= 5


def test_a_wrong_decode_is_caught(tmp_path: Path) -> None:
    """The comparison is not vacuous: another device's decode disagrees with lspci."""
    data = (DATA / "pci" / "qemu-q35-e1000e-pcie.bin").read_bytes()
    wrong = decode_config((DATA / "pci" / "qemu-q35-e1000e-rciep.bin").read_bytes())
    moved = attrs.evolve(
        wrong,
        capabilities=tuple(attrs.evolve(c, offset=c.offset + 4) for c in wrong.capabilities),
    )
    text = lspci(data, tmp_path)
    assert any("Express (version, type)" in d for d in disagreements(data, wrong, text))
    assert len(disagreements(data, moved, text)) >= len(moved.capabilities)
