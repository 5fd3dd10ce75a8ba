"""Streams without a vmdesc, decoded with the source QEMU's -dump-vmstate
(vmstate.dump_layout): every section framed by its footer, the dump fitted to its
bytes, checked against what QEMU's own vmdesc says of the same bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vmstate import stream
from vmstate.cli import main
from vmstate.compat import DUMP, DescriptionSet
from vmstate.dump_layout import DumpLayouts
from vmstate.qemu_dump import parse_qemu_dump
from vmstate.sources import load_description_set
from vmstate.vmdesc import vmdesc_entry

QEMU10 = Path(__file__).parent / "data" / "qemu-10.0"
QEMU = Path(__file__).parent / "data" / "qemu"


def leaves(entry: dict[str, Any]) -> list[Any]:
    """A vmdesc entry as the sizes of its leaf fields in wire order, arrays unfolded."""
    out: list[Any] = []
    for field in entry.get("fields", []):
        for _ in range(field.get("array_len", 1)):
            out += leaves(field["struct"]) if "struct" in field else [field["size"]]
    for sub in entry.get("subsections", []):
        out += [f"sub:{sub['vmsd_name']}", *leaves(sub)]
    return out


def fit_against_vmdesc(
    fitted: bytes, reference: bytes, dump: Path
) -> tuple[int, list[str], list[str]]:
    """Decode *fitted* (no vmdesc) with *dump*; compare each section read field by field
    with the same section of *reference* decoded with its vmdesc.  Returns (sections
    read and equal, sections read differently, sections left opaque)."""
    layouts = DumpLayouts(load_description_set(dump))
    ours = stream.parse(fitted, fitter=layouts)
    theirs = stream.parse(reference)
    assert [s.idstr for s in ours.device_sections()] == [s.idstr for s in theirs.device_sections()]
    equal, wrong, opaque = 0, [], []
    for mine, qemu in zip(ours.device_sections(), theirs.device_sections(), strict=True):
        assert mine.end - mine.start == qemu.end - qemu.start, mine.idstr  # the footer frames it
        if not layouts.fitted[(mine.idstr, mine.instance_id)].described:
            opaque.append(mine.idstr)
        elif leaves(vmdesc_entry(mine.description, mine.state)) == leaves(
            vmdesc_entry(qemu.description, qemu.state)
        ):
            equal += 1
        else:
            wrong.append(mine.idstr)
    return equal, wrong, opaque


def test_stream_without_vmdesc_decodes_with_the_dump(capsys: pytest.CaptureFixture[str]) -> None:
    """suppress-vmdesc=on: QEMU's analyzer cannot read it; with the dump every section is
    framed and re-encodes, and what is read field by field is what QEMU's vmdesc says of
    the same device state (the stream QEMU wrote after loading this one)."""
    novmdesc = QEMU10 / "q35-10.0-novmdesc.mig"
    dump = QEMU10 / "dump-pc-q35-10.0.json"
    assert main(["analyze", str(novmdesc), "--descriptions", str(dump), "--verify-roundtrip"]) == 0
    assert capsys.readouterr().out.strip() == (
        "verified 32 device sections: 32 byte-identical, 0 differ"
    )
    equal, wrong, opaque = fit_against_vmdesc(
        novmdesc.read_bytes(), (QEMU10 / "q35-10.0-novmdesc-reloaded.mig").read_bytes(), dump
    )
    assert wrong == []
    assert equal >= 20
    # not device classes, so not in a dump; and two the dump admits several readings of
    assert set(opaque) <= {
        "timer",
        "slirp",
        "cpu_common",
        "cpu",
        "apic",
        "PCIBUS",
        "i2c_bus",
        "acpi_build",
        "globalstate",
        "0000:00:1f.2/ich9_ahci",
        "0000:00:02.0/e1000e",
    }
    assert main(["analyze", str(novmdesc), "--descriptions", str(dump)]) == 0
    assert "from the dump: 21 sections read field by field, 11 as opaque bytes" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("name", "dump"),
    [
        ("pc-10.0-storage-usb", "dump-pc-i440fx-10.0.json"),
        ("q35-7.2-storage-usb", "dump-pc-q35-7.2.json"),
    ],
)
def test_fitted_layouts_are_what_the_vmdesc_says(name: str, dump: str) -> None:
    """The same stream with its vmdesc cut off: nothing is read differently from it."""
    whole = (QEMU10 / f"{name}.mig").read_bytes()
    at = stream.find_vmdesc(whole)
    assert at is not None
    equal, wrong, opaque = fit_against_vmdesc(whole[:at], whole, QEMU10 / dump)
    assert wrong == []
    assert equal >= 25 and equal > 2 * len([o for o in opaque if "/" in o])


def _dump(
    fields: list[dict[str, Any]], subsections: list[dict[str, Any]] | None = None
) -> DescriptionSet:
    desc: dict[str, Any] = {
        "name": "dev",
        "version_id": 1,
        "minimum_version_id": 1,
        "Fields": fields,
    }
    if subsections:
        desc["Subsections"] = subsections
    dump = parse_qemu_dump(
        {
            "vmschkmachine": {"Name": "m"},
            "dev": {"Name": "dev", "version_id": 1, "minimum_version_id": 1, "Description": desc},
            "num": {
                "Name": "num",
                "version_id": 1,
                "minimum_version_id": 1,
                "Description": {
                    "name": "num",
                    "version_id": 1,
                    "minimum_version_id": 1,
                    "Fields": [
                        {"field": "x", "version_id": 0, "field_exists": False, "num": 1, "size": 1}
                    ],
                },
            },
        }
    )
    return DescriptionSet(
        {d.type_name: d.description for d in dump.devices},
        kind=DUMP,
        counts_known=dump.counts_known,
    )


def _field(name: str, size: int, exists: bool = False, **more: Any) -> dict[str, Any]:
    return {"field": name, "version_id": 0, "field_exists": exists, "size": size, **more}


def _stream(payload: bytes) -> bytes:
    """One FULL section "0000:00:02.0/dev" holding *payload*, with its footer, then EOF."""
    name = b"0000:00:02.0/dev"
    return (
        b"QEVM\0\0\0\x03\x04"
        + (7).to_bytes(4, "big")
        + bytes([len(name)])
        + name
        + (0).to_bytes(4, "big")
        + (1).to_bytes(4, "big")
        + payload
        + b"\x7e"
        + (7).to_bytes(4, "big")
        + b"\x00"
    )


def _fit(dump: DescriptionSet, payload: bytes) -> tuple[stream.Section, bool]:
    layouts = DumpLayouts(dump)
    (section,) = stream.parse(_stream(payload), fitter=layouts).device_sections()
    return section, layouts.fitted[("0000:00:02.0/dev", 0)].described


_ELEM = {"name": "elem", "version_id": 1, "minimum_version_id": 1, "Fields": [_field("v", 2)]}


def test_the_length_decides_tests_and_struct_arrays() -> None:
    dump = _dump(
        [
            _field("a", 4),
            _field("opt", 8, exists=True),
            _field("elems", 16, Description=_ELEM),
            _field("z", 1),
        ]
    )
    section, described = _fit(dump, bytes(4) + b"\x00\x01\x00\x02\x00\x03" + b"\x09")
    assert described and section.state is not None
    assert section.state["elems"] == [{"v": b"\x00\x01"}, {"v": b"\x00\x02"}, {"v": b"\x00\x03"}]
    assert "opt" not in section.state and section.state["z"] == b"\x09"


def test_the_likeliest_reading_wins_and_a_tie_leaves_the_section_opaque() -> None:
    """A struct field is most often one struct: 6 bytes then are one element and 4 bytes
    of the custom field (not 3 elements and none).  Two tested fields of one size, one
    of them sent, are as likely either way: the section stays bytes, whole."""
    dump = _dump([_field("elems", 16, Description=_ELEM), _field("blob", 0), _field("z", 1)])
    section, described = _fit(dump, bytes(6) + b"\x09")
    assert described and section.state is not None
    assert (section.state["elems"], section.state["blob"]) == ({"v": bytes(2)}, bytes(4))
    dump = _dump([_field("a", 4, exists=True), _field("b", 4, exists=True)])
    section, described = _fit(dump, bytes(4))
    assert not described and section.state == {"data": bytes(4)}


def test_a_subsection_on_the_wire_ends_the_fields() -> None:
    """QEMU reads fields, then subsections: where a known subsection's header is, an
    exists-tested field is absent and a variable array is empty."""
    sub = {
        "name": "dev/extra",
        "version_id": 1,
        "minimum_version_id": 1,
        "Fields": [_field("e", 1)],
    }
    dump = _dump([_field("a", 1), _field("opt", 1, exists=True)], [sub])
    header = b"\x05" + bytes([len(b"dev/extra")]) + b"dev/extra" + (1).to_bytes(4, "big")
    section, described = _fit(dump, b"\x01" + header + b"\x02")
    assert described and section.state == {"a": b"\x01", "dev/extra": {"e": b"\x02"}}


def test_a_stream_without_footers_needs_a_description_that_decodes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Machine types up to 2.3 send no section footers: nothing frames a section."""
    novmdesc = QEMU / "pc-2.0-e1000-watchdog-novmdesc.mig"
    assert (
        main(["analyze", str(novmdesc), "--descriptions", str(QEMU / "dump-pc-i440fx-2.0.json")])
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("vmstate: error: ") and "no description for section" in err


def test_check_reads_a_stream_without_vmdesc_with_the_source_dump(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check --stream on a vmdesc-less stream: --src (the source QEMU's dump) reads it,
    and the sections it reads are compared with the destination's."""
    novmdesc = str(QEMU10 / "q35-10.0-novmdesc.mig")
    dump = QEMU10 / "dump-pc-q35-10.0.json"
    assert main(["check", "--stream", novmdesc, "--dst", str(dump)]) == 2
    assert "give the source QEMU's -dump-vmstate with --src" in capsys.readouterr().err
    args = ["check", "--stream", novmdesc, "--src", str(dump), "--json"]
    assert main([*args, "--dst", str(dump)]) == 0
    report = json.loads(capsys.readouterr().out)
    unread = {p["section"] for p in report["problems"] if p["rule"] == "section-unread"}
    assert unread == {
        "timer",
        "slirp",
        "cpu_common",
        "cpu",
        "apic",
        "PCIBUS",
        "i2c_bus",
        "acpi_build",
        "globalstate",
        "0000:00:1f.2/ich9_ahci",
        "0000:00:02.0/e1000e",
    }
    changed = json.loads(dump.read_text())
    counter = next(
        f for f in changed["hpet"]["Description"]["Fields"] if f["field"] == "hpet_counter"
    )
    counter["size"] = 4
    (tmp_path / "dst.json").write_text(json.dumps(changed))
    assert main([*args, "--dst", str(tmp_path / "dst.json")]) == 1
    errors = [
        p for p in json.loads(capsys.readouterr().out)["problems"] if p["severity"] == "error"
    ]
    assert [(p["section"], p["path"], p["rule"]) for p in errors] == [
        ("hpet", "hpet.hpet_counter", "size-changed")
    ]
