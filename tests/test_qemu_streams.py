"""`vmstate analyze` on streams QEMU 7.2 wrote (tests/data/qemu, see its README):
the same JSON as QEMU's own analyzer, and byte-identical re-encoding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmstate import stream
from vmstate.cli import main
from vmstate.inputs import open_stream
from vmstate.vmdesc import description_from_vmdesc, vmdesc_entry

QEMU = Path(__file__).parent / "data" / "qemu"
ANALYZED = sorted(p.with_suffix("") for p in QEMU.glob("*.state.json"))
STREAMS = [p.with_suffix(".mig") for p in (QEMU / p.name for p in ANALYZED)]


def test_the_data_is_there() -> None:
    """At least three streams from different machines, some with programmed PCI config."""
    assert len(STREAMS) >= 3
    machines = set()
    for path in STREAMS:
        with open_stream(path) as opened:
            parsed = stream.parse(opened.data)
        machines.add(parsed.machine)
    assert {"pc-i440fx-7.2", "pc-q35-7.2"} <= machines


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_format_qemu_equals_qemus_analyzer(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(path), "--format", "qemu"]) == 0
    ours = json.loads(capsys.readouterr().out)
    theirs = json.loads(path.with_suffix(".state.json").read_text())
    assert ours == theirs


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_verify_roundtrip(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(path), "--verify-roundtrip"]) == 0
    out = capsys.readouterr().out
    with open_stream(path) as opened:
        buf = opened.data
        n = len(stream.parse(buf).device_sections())
    assert out.strip() == f"verified {n} device sections: {n} byte-identical, 0 differ"


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_dump_desc_equals_qemus(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(path), "--dump", "desc"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(
        path.with_suffix(".desc.json").read_text()
    )


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.stem)
def test_vmdesc_export_matches_what_qemu_wrote(path: Path) -> None:
    """Import each vmdesc entry, decode, export: the entry QEMU wrote comes back."""
    with open_stream(path) as opened:
        buf = opened.data
        parsed = stream.parse(buf)
    by_key = {(d["name"], d["instance_id"]): d for d in parsed.vmdesc["devices"]}
    for section in parsed.device_sections():
        entry = by_key[(section.idstr, section.instance_id)]
        if "vmsd_name" not in entry:
            continue  # old-style sections: one opaque buffer
        exported = vmdesc_entry(section.description, section.state, section.version_id)
        expected = {k: v for k, v in entry.items() if k not in ("name", "instance_id")}
        assert exported == expected, section.idstr


def test_reencoded_state_from_vmdesc_description_is_stable() -> None:
    path = STREAMS[0]
    with open_stream(path) as opened:
        buf = opened.data
        parsed = stream.parse(buf)
        for section in parsed.device_sections():
            again = description_from_vmdesc(vmdesc_entry(section.description, section.state))
            assert again.save(section.state) == bytes(buf[section.start : section.end])


def test_stream_without_vmdesc_needs_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    novmdesc = QEMU / "pc-2.0-e1000-watchdog-novmdesc.mig"
    assert main(["analyze", str(novmdesc)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vmstate: error: ")
    assert "no vmdesc and no descriptions were given" in err
    # the twin stream's vmdesc describes the same devices
    twin_desc = QEMU / "pc-2.0-e1000-watchdog.desc.json"
    assert (
        main(["analyze", str(novmdesc), "--descriptions", str(twin_desc), "--verify-roundtrip"])
        == 0
    )
    assert "0 differ" in capsys.readouterr().out


def test_summary_lists_sections(capsys: pytest.CaptureFixture[str]) -> None:
    path = QEMU / "q35-e1000e-virtio.mig"
    assert main(["analyze", str(path)]) == 0
    out = capsys.readouterr().out
    assert "machine pc-q35-7.2" in out
    assert "/e1000e" in out and "virtio-net" in out
