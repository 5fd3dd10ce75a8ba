"""`vmstate analyze` on streams QEMU 7.2 and QEMU 10.0 wrote (tests/data/qemu and
tests/data/qemu-10.0, see their READMEs): the same JSON as that QEMU's own analyzer,
byte-identical re-encoding, and the streams QEMU 10.0's analyzer cannot read."""

from __future__ import annotations

import json
import lzma
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from peers.migration import loaded
from peers.qemu import Qemu

from vmstate import stream
from vmstate.cli import main
from vmstate.inputs import open_stream
from vmstate.ram_extract import ram_file_name
from vmstate.vmdesc import NullPointer, PiecedSeq, description_from_vmdesc, vmdesc_entry

DATA = Path(__file__).parent / "data"
QEMU = DATA / "qemu"
QEMU10 = DATA / "qemu-10.0"
ANALYZED = sorted(p.with_suffix("") for d in (QEMU, QEMU10) for p in d.glob("*.state.json"))
STREAMS = [p.with_suffix(".mig") for p in ANALYZED]
#: streams with a vmdesc that QEMU's analyzer cannot read, and its words
UNREADABLE = {
    name: entry["analyzer_error"]
    for name, entry in json.loads((QEMU10 / "MANIFEST.json").read_text())["streams"].items()
    if "analyzer_error" in entry and entry["vmdesc"]
}
MAPPED = QEMU10 / "q35-10.0-mapped-ram.mig.xz"


def ids(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


@pytest.fixture(scope="session")
def mapped_ram(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mapped-ram snapshot, unpacked sparse (73 MB long, under 1 MB of data)."""
    target = tmp_path_factory.mktemp("mapped-ram") / "q35-10.0-mapped-ram.mig"
    page = 1 << 12
    with lzma.open(MAPPED) as src, target.open("wb") as out:
        while chunk := src.read(page):
            if chunk.count(0) == len(chunk):
                out.seek(len(chunk), 1)
            else:
                out.write(chunk)
        out.truncate()
    return target


def parsed(path: Path) -> stream.Stream:
    with open_stream(path) as opened:
        return stream.parse(opened.data)


def test_the_data_is_there() -> None:
    """Streams of both QEMUs, today's machine types and ones pinned to 7.2."""
    assert len(STREAMS) >= 8
    machines = {(p.parent.name, parsed(p).machine) for p in STREAMS}
    assert {("qemu", "pc-i440fx-7.2"), ("qemu", "pc-q35-7.2")} <= machines
    assert {
        ("qemu-10.0", m) for m in ("pc-i440fx-10.0", "pc-q35-10.0", "pc-i440fx-7.2")
    } <= machines


@pytest.mark.parametrize("path", STREAMS, ids=ids)
def test_format_qemu_equals_qemus_analyzer(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Against the analyzer of the QEMU that wrote the stream (its output is saved beside it)."""
    assert main(["analyze", str(path), "--format", "qemu"]) == 0
    ours = json.loads(capsys.readouterr().out)
    theirs = json.loads(path.with_suffix(".state.json").read_text())
    assert ours == theirs


@pytest.mark.parametrize(
    "path",
    [*STREAMS, *(QEMU10 / f"{name}.mig" for name in UNREADABLE if name != MAPPED.stem[:-4])],
    ids=ids,
)
def test_verify_roundtrip(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(path), "--verify-roundtrip"]) == 0
    out = capsys.readouterr().out
    n = len(parsed(path).device_sections())
    assert out.strip() == f"verified {n} device sections: {n} byte-identical, 0 differ"


@pytest.mark.parametrize("path", STREAMS, ids=ids)
def test_extract_ram_writes_the_blocks_qemus_analyzer_extracts(
    path: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``--extract-ram`` against ``analyze-migration.py -x`` of the QEMU that wrote the
    stream: the same blocks, each file byte for byte the same (QEMU's names a file by
    the block's name, ``/`` making folders; ours by ``ram_file_name``)."""
    qemu: Qemu = request.getfixturevalue("qemu_10_0" if path.parent == QEMU10 else "qemu_7_2")
    theirs = tmp_path / "qemu"
    theirs.mkdir()
    subprocess.run([sys.executable, str(qemu.analyzer), "-x", "-f", str(path)], cwd=theirs,
                   check=True, capture_output=True)  # fmt: skip
    assert main(["analyze", str(path), "--extract-ram", str(tmp_path / "ours")]) == 0
    blocks = parsed(path).ram_blocks
    assert blocks and sorted(p.name for p in (tmp_path / "ours").iterdir()) == sorted(
        ram_file_name(b) for b in blocks
    )
    for block in blocks:
        ours = (tmp_path / "ours" / ram_file_name(block)).read_bytes()
        assert ours == (theirs / block.name.lstrip("/")).read_bytes(), block.name


@pytest.mark.qemu
def test_extracted_ram_is_what_qemu_loads_from_pages_sent_again(
    qemu_7_2: Qemu, tmp_path: Path
) -> None:
    """A later pass, spliced into pc-minimal before its ram END section, sends a page as
    data and then as zero, a page as data, and a zero page where the first pass left
    data.  QEMU 7.2 loads the stream (-incoming); what ``pmemsave`` reads of those pages
    is what ``--extract-ram`` writes (the two zero pages clear what was there)."""
    minimal = QEMU / "pc-minimal.mig"
    data = minimal.read_bytes()
    first = tmp_path / "first"
    assert main(["analyze", str(minimal), "--extract-ram", str(first)]) == 0
    before = (first / "pc.ram").read_bytes()
    cleared = next(a for a in range(1 << 20, len(before), 4096) if any(before[a : a + 4096]))
    again, kept = 32 << 20, (32 << 20) + 4096
    kept_bytes = bytes(range(256)) * 16
    ram = [s for s in parsed(minimal).sections if s.idstr == "ram"]
    end = next(s for s in ram if s.type == 0x03)
    records = struct.pack(">Q", again | 0x08) + bytes([6]) + b"pc.ram" + b"\x5a" * 4096
    records += struct.pack(">Q", kept | 0x28) + kept_bytes
    records += struct.pack(">Q", again | 0x22) + b"\0" + struct.pack(">Q", cleared | 0x22) + b"\0"
    part = b"\x02" + struct.pack(">I", end.section_id) + records + struct.pack(">Q", 0x10)
    part += b"\x7e" + struct.pack(">I", end.section_id)
    spliced = tmp_path / "spliced.mig"
    spliced.write_bytes(data[: end.header_offset] + part + data[end.header_offset :])
    assert main(["analyze", str(spliced), "--extract-ram", str(tmp_path / "ours")]) == 0
    ours = (tmp_path / "ours" / "pc.ram").read_bytes()
    manifest = json.loads((QEMU / "MANIFEST.json").read_text())
    command = manifest["streams"]["pc-minimal"]["command"]
    args = command[command.index("-M") : command.index("-chardev")]
    theirs = {}
    with loaded(qemu_7_2, args, tmp_path / "qemu", f"exec:cat {spliced}") as vm:
        for address in (again, kept, cleared):
            out = tmp_path / f"{address:x}.bin"
            vm.qmp.command("pmemsave", {"val": address, "size": 4096, "filename": str(out)})
            theirs[address] = out.read_bytes()
    assert theirs == {a: ours[a : a + 4096] for a in theirs}
    assert theirs == {again: bytes(4096), kept: kept_bytes, cleared: bytes(4096)}


@pytest.mark.parametrize("path", STREAMS, ids=ids)
def test_dump_desc_equals_qemus(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(path), "--dump", "desc"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(
        path.with_suffix(".desc.json").read_text()
    )


@pytest.mark.parametrize("path", STREAMS, ids=ids)
def test_vmdesc_export_matches_what_qemu_wrote(path: Path) -> None:
    """Import each vmdesc entry, decode, export: the entry QEMU wrote comes back, QEMU
    10.0's arrays in pieces included."""
    found = parsed(path)
    assert found.vmdesc is not None
    by_key = {(d["name"], d["instance_id"]): d for d in found.vmdesc["devices"]}
    for section in found.device_sections():
        entry = by_key[(section.idstr, section.instance_id)]
        if "vmsd_name" not in entry:
            continue  # old-style sections: one opaque buffer
        exported = vmdesc_entry(section.description, section.state, section.version_id)
        expected = {k: v for k, v in entry.items() if k not in ("name", "instance_id")}
        assert exported == expected, section.idstr


def test_qemu_10_splits_arrays_into_pieces() -> None:
    """What broke QEMU 10.0 streams: an array of structs with subsections is written one
    entry per element, the last one without "index" (PIIX IDE's bmdma, ICH9 AHCI's ports)."""
    desc = parsed(QEMU10 / "pc-10.0-storage-usb.mig").vmdesc
    assert desc is not None
    ide = next(d for d in desc["devices"] if d["name"].endswith("/ide"))
    bmdma = [f for f in ide["fields"] if f["name"] == "bmdma"]
    assert [f.get("index") for f in bmdma] == [0, None]
    section = next(
        s for s in parsed(QEMU10 / "pc-10.0-storage-usb.mig").sections if s.idstr.endswith("/ide")
    )
    assert section.description is not None
    kind = next(f.kind for f in section.description.fields if f.name == "bmdma")
    assert isinstance(kind, PiecedSeq) and len(kind.elements) == 2
    assert section.state is not None and len(section.state["bmdma"]) == 2


def test_alike_elements_of_an_array_in_pieces_share_one_kind() -> None:
    """QEMU 7.2's piix4_pm writes acpi_pcihp_pci_status as 256 entries, one per element:
    their struct is built once (decoding as QEMU's analyzer does is checked above); an
    element that differs, even after an empty piece, gets a kind of its own."""
    section = next(
        s for s in parsed(QEMU / "pc-minimal.mig").sections if s.idstr.endswith("piix4_pm")
    )
    assert section.description is not None
    kind = next(f.kind for f in section.description.fields if f.name.endswith("pci_status"))
    assert isinstance(kind, PiecedSeq) and len(kind.elements) == 256
    assert len({id(k) for k in kind.elements}) == 1
    def entry(size: int, **extra: int) -> dict[str, object]:
        return {"name": "a", "type": "uint32", "size": size, **extra}

    desc = description_from_vmdesc({"vmsd_name": "d", "version": 1, "fields": [
        entry(4, index=0), entry(4, index=1, array_len=0), entry(4, index=1), entry(2, index=2),
        entry(2),
    ]})  # fmt: skip
    (seq,) = (f.kind for f in desc.fields)
    assert [k.size for k in seq.elements] == [4, 4, 2, 2]
    assert seq.elements[2] is seq.elements[3] and seq.elements[0] is seq.elements[1]


def test_reencoded_state_from_vmdesc_description_is_stable() -> None:
    path = STREAMS[0]
    with open_stream(path) as opened:
        buf = opened.data
        found = stream.parse(buf)
        for section in found.device_sections():
            again = description_from_vmdesc(vmdesc_entry(section.description, section.state))
            assert again.save(section.state) == bytes(buf[section.start : section.end])


@pytest.mark.parametrize(
    ("novmdesc", "twin"),
    [
        (QEMU / "pc-2.0-e1000-watchdog-novmdesc.mig", QEMU / "pc-2.0-e1000-watchdog.desc.json"),
        (QEMU10 / "q35-10.0-novmdesc.mig", QEMU10 / "q35-10.0-novmdesc-reloaded.desc.json"),
    ],
    ids=["7.2", "10.0"],
)
def test_stream_without_vmdesc_needs_descriptions(
    novmdesc: Path, twin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["analyze", str(novmdesc)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vmstate: error: ")
    assert "no vmdesc to decode section 'timer' with" in err
    # the twin stream's vmdesc describes the same devices
    assert main(["analyze", str(novmdesc), "--descriptions", str(twin), "--verify-roundtrip"]) == 0
    assert "0 differ" in capsys.readouterr().out


def test_summary_lists_sections(capsys: pytest.CaptureFixture[str]) -> None:
    path = QEMU / "q35-e1000e-virtio.mig"
    assert main(["analyze", str(path)]) == 0
    out = capsys.readouterr().out
    assert "machine pc-q35-7.2" in out
    assert "/e1000e" in out and "virtio-net" in out


# -- what QEMU 10.0 writes that 7.2 did not ------------------------------------------


def test_switchover_start_comes_with_10_0_machine_types() -> None:
    """hw_compat_9_2 turns SWITCHOVER_START off for older machine types."""
    assert parsed(QEMU10 / "pc-10.0-storage-usb.mig").command_names() == ("SWITCHOVER_START",)
    assert parsed(QEMU10 / "q35-10.0-storage-usb.mig").command_names() == ("SWITCHOVER_START",)
    assert parsed(QEMU10 / "pc-7.2-storage-usb.mig").command_names() == ()
    assert parsed(QEMU10 / "q35-7.2-storage-usb.mig").command_names() == ()


def test_postcopy_advised_stream(capsys: pytest.CaptureFixture[str]) -> None:
    """postcopy-ram opens a return path and advises postcopy before the RAM; QEMU 10.0's
    analyzer stops at the first of those commands, we read on."""
    path = QEMU10 / "q35-10.0-postcopy-advised.mig"
    found = parsed(path)
    assert found.command_names() == (
        "OPEN_RETURN_PATH",
        "PING",
        "POSTCOPY_ADVISE",
        "SWITCHOVER_START",
    )
    advise = found.commands[2]
    assert advise.data == (4096).to_bytes(8, "big") * 2  # page size summary, target page size
    assert "Unknown QEMU_VM_COMMAND: 1" in UNREADABLE["q35-10.0-postcopy-advised"]
    assert main(["analyze", str(path)]) == 0
    assert (
        "commands: OPEN_RETURN_PATH, PING, POSTCOPY_ADVISE, SWITCHOVER_START"
        in capsys.readouterr().out
    )


def test_mapped_ram_snapshot_decodes(mapped_ram: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """RAM at fixed file offsets with a bitmap per block; QEMU 10.0's analyzer crashes on it.
    Its device sections are QEMU's own when it loads the file and writes it out again."""
    assert "AttributeError" in UNREADABLE["q35-10.0-mapped-ram"]
    found = parsed(mapped_ram)
    assert found.capabilities == ("mapped-ram",)
    assert all(block.mapped is not None for block in found.ram_blocks)
    assert {b.name: b.length for b in found.ram_blocks} == {
        b.name: b.length for b in parsed(QEMU10 / "q35-10.0-mapped-ram-reloaded.mig").ram_blocks
    }
    assert main(["analyze", str(mapped_ram), "--verify-roundtrip"]) == 0
    n = len(found.device_sections())
    assert (
        capsys.readouterr().out.strip()
        == f"verified {n} device sections: {n} byte-identical, 0 differ"
    )
    assert main(["analyze", str(mapped_ram)]) == 0
    assert "capabilities: mapped-ram" in capsys.readouterr().out


def test_mapped_ram_extracts_the_ram_qemu_loads(mapped_ram: Path, tmp_path: Path) -> None:
    """Every RAM block extracted from the mapped-ram file equals the one extracted from
    the stream QEMU wrote after loading that file."""
    assert main(["analyze", str(mapped_ram), "--extract-ram", str(tmp_path / "mapped")]) == 0
    reloaded = QEMU10 / "q35-10.0-mapped-ram-reloaded.mig"
    assert main(["analyze", str(reloaded), "--extract-ram", str(tmp_path / "reloaded")]) == 0
    blocks = sorted(p.name for p in (tmp_path / "mapped").iterdir())
    assert "pc.ram" in blocks and blocks == sorted(
        p.name for p in (tmp_path / "reloaded").iterdir()
    )
    for name in blocks:
        assert (tmp_path / "mapped" / name).read_bytes() == (
            tmp_path / "reloaded" / name
        ).read_bytes(), name
    assert any((tmp_path / "mapped" / "pc.ram").read_bytes())


# -- NULL pointers in arrays (QEMU 10.0 vmdesc "nullptr"), against QEMU 10.0's analyzer --


_ELEMENT = {
    "vmsd_name": "elem",
    "version": 1,
    "fields": [{"name": "v", "type": "uint16", "size": 2}],
}
#: the vmdesc fields of an array of 4 pointers to structs, the middle two NULL, as QEMU
#: 10.0's vmstate.c writes them: pieces of alike elements, NULLs typed "nullptr"
NULLPTR_FIELDS = [
    {"name": "n", "type": "uint8", "size": 1},
    {"name": "ptrs", "index": 0, "type": "struct", "struct": _ELEMENT, "size": 2},
    {"name": "ptrs", "array_len": 2, "type": "nullptr", "size": 1},
    {"name": "ptrs", "type": "struct", "struct": _ELEMENT, "size": 2},
]


def _nullptr_stream() -> bytes:
    """One section with that array; a NULL is the byte '0' on the wire."""
    vmdesc = {
        "page_size": 4096,
        "devices": [
            {
                "name": "demo",
                "instance_id": 0,
                "vmsd_name": "demo",
                "version": 1,
                "fields": NULLPTR_FIELDS,
            }
        ],
    }
    payload = bytes([4]) + b"\x12\x34" + b"00" + b"\xab\xcd"
    body = json.dumps(vmdesc, separators=(",", ":")).encode()
    header = b"\x04" + (0).to_bytes(4, "big") + bytes([4]) + b"demo" + (0).to_bytes(4, "big")
    return (
        b"QEVM\0\0\0\x03"
        + header
        + (1).to_bytes(4, "big")
        + payload
        + b"\x7e"
        + (0).to_bytes(4, "big")
        + b"\x00\x06"
        + len(body).to_bytes(4, "big")
        + body
    )


def test_nullptr_pieces_decode_as_qemus_analyzer_reads_them(
    qemu_10_0: Qemu, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nullptr.mig"
    path.write_bytes(_nullptr_stream())
    theirs = subprocess.run(
        [sys.executable, str(qemu_10_0.analyzer), "-f", str(path), "-d", "state"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert main(["analyze", str(path), "--format", "qemu"]) == 0
    ours = capsys.readouterr().out
    assert json.loads(ours) == json.loads(theirs)
    assert json.loads(ours)["demo (0)"]["ptrs"] == [
        {"v": "0x1234"},
        "nullptr",
        "nullptr",
        {"v": "0xabcd"},
    ]
    section = parsed(path).sections[0]
    assert section.state is not None and section.state["ptrs"][1:3] == [None, None]
    kind = section.description.fields[1].kind if section.description else None
    assert isinstance(kind, PiecedSeq) and isinstance(kind.elements[1], NullPointer)
    assert main(["analyze", str(path), "--verify-roundtrip"]) == 0
    assert vmdesc_entry(section.description, section.state)["fields"] == NULLPTR_FIELDS


# -- a postcopy stream: the device sections inside a PACKAGED command ----------------


def _command(number: int, data: bytes = b"") -> bytes:
    return b"\x08" + number.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data


def _postcopy_stream(package_size_delta: int = 0) -> bytes:
    """The layout savevm.c's postcopy_start gives a stream: the RAM set up, then one
    PACKAGED command holding POSTCOPY_LISTEN, the device sections and POSTCOPY_RUN, then
    the RAM's last part and EOF, with no vmdesc (savevm.c writes none in postcopy)."""
    ram = (
        b"\x01"
        + (1).to_bytes(4, "big")
        + b"\x03ram"
        + (0).to_bytes(4, "big")
        + (4).to_bytes(4, "big")
    )
    ram += ((1 << 12) | 0x04).to_bytes(8, "big") + b"\x03mem" + (1 << 12).to_bytes(8, "big")
    ram += (0x10).to_bytes(8, "big") + b"\x7e" + (1).to_bytes(4, "big")
    name = b"0000:00:02.0/dev"
    device = (
        b"\x04"
        + (2).to_bytes(4, "big")
        + bytes([len(name)])
        + name
        + (0).to_bytes(4, "big")
        + (1).to_bytes(4, "big")
        + b"\x12\x34"
        + b"\x7e"
        + (2).to_bytes(4, "big")
    )
    package = _command(4) + device + _command(5)
    size = (len(package) + package_size_delta).to_bytes(4, "big")
    tail = (
        b"\x03"
        + (1).to_bytes(4, "big")
        + (0x10).to_bytes(8, "big")
        + b"\x7e"
        + (1).to_bytes(4, "big")
    )
    return (
        b"QEVM\0\0\0\x03"
        + _command(1)
        + _command(3, (4096).to_bytes(8, "big") * 2)
        + ram
        + _command(7, size)
        + package
        + tail
        + b"\x00"
    )


def test_postcopy_packages_are_read_in_place() -> None:
    from vmstate.description import Description
    from vmstate.errors import DecodeError
    from vmstate.fields import uint16

    dev = stream.resolver_from({"dev": Description("dev", 1, 1, [uint16("v")])})
    found = stream.parse(_postcopy_stream(), dev)
    assert found.command_names() == (
        "OPEN_RETURN_PATH",
        "POSTCOPY_ADVISE",
        "PACKAGED",
        "POSTCOPY_LISTEN",
        "POSTCOPY_RUN",
    )
    (section,) = found.device_sections()
    assert section.state == {"v": 0x1234} and found.vmdesc is None
    with pytest.raises(DecodeError, match="runs past the end of its package"):
        stream.parse(_postcopy_stream(package_size_delta=-3), dev)
