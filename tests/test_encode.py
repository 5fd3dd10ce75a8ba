"""``vmstate analyze --format json`` and ``vmstate encode``: a QEMU stream through its
document and back is the same bytes (every real stream of tests/data/qemu*, RAM by
reference and inline, with and without vmdesc); an edit comes out as exactly that edit;
and QEMU 7.2 loads an edited stream with ``-incoming`` and shows the edited registers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from peers.migration import loaded
from peers.qemu import Qemu
from test_qemu_streams import QEMU, QEMU10, STREAMS, ids, mapped_ram  # noqa: F401 (a fixture)
from test_qemu_streams import _postcopy_stream as postcopy_stream

from vmstate import stream
from vmstate.cli import main
from vmstate.inputs import open_stream

POSTCOPY = QEMU10 / "q35-10.0-postcopy-advised.mig"
EVERY_STREAM = [*STREAMS, POSTCOPY]
MINIMAL = QEMU / "pc-minimal.mig"


def analyzed(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["analyze", *args, "--json"]) == 0, capsys.readouterr().err
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def encoded(
    doc: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, bytes, str]:
    """encode's status, the stream written (b"" when none) and its stderr."""
    source = tmp_path / "doc.json"
    source.write_text(json.dumps(doc))
    out = tmp_path / "out.mig"
    out.unlink(missing_ok=True)
    status = main(["encode", str(source), "-o", str(out), *args])
    return status, out.read_bytes() if out.exists() else b"", capsys.readouterr().err


@pytest.mark.parametrize("raw", ["reference", "inline"])
@pytest.mark.parametrize("path", EVERY_STREAM, ids=ids)
def test_every_qemu_stream_comes_back_byte_for_byte(
    path: Path, raw: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = analyzed(capsys, str(path), "--raw-bytes", raw)
    kept = [i["bytes"] for i in doc["items"] if "bytes" in i]
    assert kept and all(isinstance(b, dict if raw == "reference" else str) for b in kept)
    status, again, err = encoded(doc, tmp_path, capsys)
    assert status == 0, err
    assert again == path.read_bytes()


def test_the_mapped_ram_snapshot_comes_back(
    mapped_ram: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """73 MB of file with RAM at fixed offsets: one reference, read back in pieces."""
    status, again, err = encoded(analyzed(capsys, str(mapped_ram)), tmp_path, capsys)
    assert status == 0, err
    assert again == mapped_ram.read_bytes()


@pytest.mark.parametrize(
    "descriptions",
    [QEMU10 / "dump-pc-q35-10.0.json", QEMU10 / "q35-10.0-novmdesc-reloaded.mig"],
    ids=["the source's dump", "a vmdesc of the same machine"],
)
def test_a_stream_without_vmdesc_carries_its_layouts(
    descriptions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    novmdesc = QEMU10 / "q35-10.0-novmdesc.mig"
    doc = analyzed(capsys, str(novmdesc), "--descriptions", str(descriptions))
    sections = [i for i in doc["items"] if i["type"] == "section"]
    assert not any(i["type"] == "vmdesc" for i in doc["items"])
    assert all("layout" in s for s in sections if "state" in s)
    assert sum("layout" in s for s in sections) >= 30
    status, again, err = encoded(doc, tmp_path, capsys)
    assert status == 0, err
    assert again == novmdesc.read_bytes()


def test_a_package_is_measured_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Postcopy's PACKAGED command: its length is computed from the items it holds."""
    path = tmp_path / "postcopy.mig"
    path.write_bytes(postcopy_stream())
    toml = tmp_path / "dev.toml"
    toml.write_text(
        '[description]\nname = "dev"\nversion_id = 1\nfields = [ { name = "v", type = "uint16" } ]\n'
    )
    doc = analyzed(capsys, str(path), "--descriptions", str(toml))
    packaged = next(i for i in doc["items"] if i.get("name") == "PACKAGED")
    assert packaged["items"] == 3 and "data" not in packaged  # LISTEN, the device, RUN
    status, again, err = encoded(doc, tmp_path, capsys)
    assert (status, again) == (0, path.read_bytes()), err
    at = doc["items"].index(packaged)
    del doc["items"][at + 2]  # the device section leaves the package
    packaged["items"] = 2
    status, again, err = encoded(doc, tmp_path, capsys)
    assert status == 0, err
    found = stream.parse(again, stream.resolver_from({}))
    assert found.command_names()[2:] == ("PACKAGED", "POSTCOPY_LISTEN", "POSTCOPY_RUN")
    (command,) = (c for c in found.commands if c.name == "PACKAGED")
    assert int.from_bytes(command.data, "big") == 10  # two bare commands of 5 bytes


def _rtl8139(doc: dict[str, Any]) -> dict[str, Any]:
    section: dict[str, Any] = next(
        i for i in doc["items"] if i.get("idstr") == "0000:00:02.0/rtl8139"
    )
    return section


#: the edit QEMU is shown below: rtl8139's interrupt line (config 0x3c) and its memory
#: BAR (config 0x14), as SeaBIOS left them and as edited
IRQ_BEFORE, IRQ_AFTER = 10, 11
BAR1_BEFORE, BAR1_AFTER = 0xFEBFF000, 0xFEBE0000


def edit_config(doc: dict[str, Any]) -> None:
    pdev = _rtl8139(doc)["state"]["parent_obj"]
    config = bytearray.fromhex(pdev["config[0]"])
    assert config[0x3C] == IRQ_BEFORE
    assert int.from_bytes(config[0x14:0x18], "little") == BAR1_BEFORE
    config[0x3C] = IRQ_AFTER
    config[0x14:0x18] = BAR1_AFTER.to_bytes(4, "little")
    pdev["config[0]"] = config.hex()


def test_an_edit_is_that_edit_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = analyzed(capsys, str(MINIMAL))
    edit_config(doc)
    status, edited, err = encoded(doc, tmp_path, capsys)
    assert status == 0, err
    (tmp_path / "edited.mig").write_bytes(edited)
    original = MINIMAL.read_bytes()
    differing = [i for i, (a, b) in enumerate(zip(original, edited, strict=True)) if a != b]
    with open_stream(MINIMAL) as opened:
        section = next(s for s in stream.parse(opened.data).sections if "rtl8139" in s.idstr)
        span = section.description.trace(opened.data, section.start, section.version_id)
    config_at = dict(span.walk())[("parent_obj", "config[0]")].start
    assert differing == [config_at + 0x15, config_at + 0x16, config_at + 0x3C]
    assert main(["diff", str(MINIMAL), str(tmp_path / "edited.mig")]) == 1
    assert capsys.readouterr().out.splitlines()[2:] == [
        f"0000:00:02.0/rtl8139: parent_obj.config[0][0x15:0x17]: f0 bf -> 00 be  "
        f"[at A {config_at + 0x15:#x}, B {config_at + 0x15:#x}]",
        f"0000:00:02.0/rtl8139: parent_obj.config[0][0x3c]: 0a -> 0b  "
        f"[at A {config_at + 0x3C:#x}, B {config_at + 0x3C:#x}]",
        "2 differences",
    ]


def test_encode_refuses_what_would_not_be_the_stream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = analyzed(capsys, str(MINIMAL))
    pdev = _rtl8139(doc)["state"]["parent_obj"]
    good = pdev["config[0]"]
    pdev["config[0]"] = good + "00"
    status, written, err = encoded(doc, tmp_path, capsys)
    assert (status, written) == (1, b"")
    assert err.startswith("vmstate: error: items[") and "parent_obj.config[0]" in err
    assert err.count("\n") == 1
    pdev["config[0]"] = good
    # the source file changed since it was analyzed: its bytes are not the ones referred to
    copy = tmp_path / "copy.mig"
    data = bytearray(MINIMAL.read_bytes())
    doc["source"]["file"] = str(copy)
    data[100] ^= 0xFF  # inside the RAM
    copy.write_bytes(data)
    status, written, err = encoded(doc, tmp_path, capsys)
    assert (status, written) == (1, b"")
    assert "(SHA-256 differs): the file changed" in err
    status, written, err = encoded(doc, tmp_path, capsys, "--source", str(MINIMAL))
    assert (status, written) == (0, MINIMAL.read_bytes()), err
    status, _, err = encoded({"items": []}, tmp_path, capsys)
    assert status == 1 and "not a stream document" in err


@pytest.mark.qemu
def test_qemu_loads_an_edited_stream_and_shows_the_edit(
    qemu_7_2: Qemu, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pc-minimal was written by QEMU 7.2 (tests/data/qemu/MANIFEST.json has its command
    line); loaded with -incoming, QMP query-pci shows rtl8139's interrupt line and memory
    BAR as the stream says: the originals, then the edited ones."""
    manifest = json.loads((QEMU / "MANIFEST.json").read_text())
    command = manifest["streams"]["pc-minimal"]["command"]
    args = command[command.index("-M") : command.index("-chardev")]
    doc = analyzed(capsys, str(MINIMAL))
    edit_config(doc)
    status, edited, err = encoded(doc, tmp_path, capsys)
    assert status == 0, err
    shutil.copy(MINIMAL, tmp_path / "original.mig")
    (tmp_path / "edited.mig").write_bytes(edited)
    seen = {}
    for name in ("original", "edited"):
        uri = f"exec:cat {tmp_path / f'{name}.mig'}"
        with loaded(qemu_7_2, args, tmp_path / name, uri) as vm:
            (bus,) = vm.qmp.command("query-pci")
            (nic,) = (d for d in bus["devices"] if d["slot"] == 2)
            memory = next(r for r in nic["regions"] if r["bar"] == 1)
            seen[name] = (nic["irq"], memory["address"])
    assert seen == {"original": (IRQ_BEFORE, BAR1_BEFORE), "edited": (IRQ_AFTER, BAR1_AFTER)}
