"""``vmstate describe``: a description as a tree, by file or by registered name."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DATA
from syrupy.assertion import SnapshotAssertion

from vmstate import fields as F
from vmstate import registry
from vmstate.cli import main
from vmstate.describe import describe
from vmstate.description import Description, Subsection

EVERY_KIND = DATA / "descriptions" / "every-kind.toml"


def run(capsys: pytest.CaptureFixture[str], target: str) -> tuple[int, str, str]:
    status = main(["describe", target])
    out, err = capsys.readouterr()
    return status, out, err


def test_every_kind_tree(capsys: pytest.CaptureFixture[str], snapshot: SnapshotAssertion) -> None:
    status, out, err = run(capsys, str(EVERY_KIND))
    assert (status, err) == (0, "")
    assert out == snapshot


def _row(out: str, name: str, start: int = 0) -> list[str]:
    """The columns of the first line at or after line *start* whose first column is *name*."""
    for line in out.splitlines()[start:]:
        columns = [c for c in line.strip().split("  ") if c]
        if columns[0] == name:
            return [c.strip() for c in columns]
    raise AssertionError(f"no row {name!r} in:\n{out}")


def test_sizes_say_how_the_bytes_are_counted(capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, str(EVERY_KIND))[1]
    assert _row(out, "u16") == ["u16", "uint16", "2 bytes"]
    assert _row(out, "config_x") == ["config_x", "buffer (pci config)", "16 bytes", "exists: flag"]
    assert _row(out, "regs") == ["regs", "array of uint32", "4 x uint32 = 16 bytes"]
    assert _row(out, "slots") == [
        "slots",
        "array of entry",
        "2 x entry",
        "nullable (NULL is 1 byte)",
    ]
    assert _row(out, "vectors") == [
        "vectors",
        "varray of entry",
        "u16 x entry <= 8",
        "since v2, count_type uint16",
    ]
    assert _row(out, "words")[2] == "u8 x 2 x buffer[2] <= 64"
    assert _row(out, "blob") == ["blob", "vbuffer", "u8 x 2 <= 64 bytes"]
    assert _row(out, "pending") == ["pending", "bitmap of 70 bits", "16 bytes"]
    assert _row(out, "u8_small") == ["u8_small", "validate", "0 bytes", "must hold: u8 < 32"]
    assert _row(out, "mixed")[2] == "uint8 + buffer[3] + entry + nullptr = 17 bytes"
    # loaded at v1, the entry has no "data" (since v2): 8 bytes, not 12
    assert _row(out, "old_entry")[1:3] == ["vstruct entry v2, loaded at v1", "8 bytes"]
    assert _row(out, "late")[3] == "since v3, exists: version_id >= 3 and test_always()"


def test_nesting_is_indentation(capsys: pytest.CaptureFixture[str]) -> None:
    lines = run(capsys, str(EVERY_KIND))[1].splitlines()
    assert lines[0] == "every-kind v3 (loads v1..v3)"
    assert (
        lines[1]
        == "  hooks: pre_save=test_every_kind_pre_save, post_load=test_every_kind_post_load"
    )
    at = next(i for i, line in enumerate(lines) if line.startswith("  entry "))
    assert lines[at + 1].startswith("    addr ")
    assert lines[at + 2].startswith("    data ")
    assert lines[at + 2].endswith("since v2")
    at = lines.index("  subsection every-kind/extra v1 (loads v0..v1), needed: u32 != 0")
    assert lines[at + 1].startswith("    count ")
    deeper = "    subsection every-kind/extra/deeper v1 (loads v0..v1), always sent"
    assert lines[lines.index(deeper) + 1].startswith("      id ")


def test_a_name_finds_a_registered_description(capsys: pytest.CaptureFixture[str]) -> None:
    desc = Description(
        "test-describe-registered",
        1,
        1,
        [F.uint8("n"), F.varray("items", "uint16", "n", 4, count_type="uint8")],
        [Subsection(Description("test-describe-registered/x", 1, 1, [F.bool_("on")]), "n > 1")],
    )
    registry.register(desc)
    status, out, err = run(capsys, "test-describe-registered")
    assert (status, err) == (0, "")
    assert out == describe(desc)
    assert out.splitlines() == [
        "test-describe-registered v1",
        "  n      uint8             1 byte",
        "  items  varray of uint16  n x uint16 <= 4  count_type uint8",
        "  subsection test-describe-registered/x v1, needed: n > 1",
        "    on   bool              1 byte",
    ]


def test_an_unknown_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", "test-describe-no-such-device"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "vmstate: usage error: no description named 'test-describe-no-such-device'"
    )


def test_a_broken_file_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, str(DATA / "lint" / "unknown-type.toml"))
    assert (status, out) == (1, "")
    assert err == (
        f"vmstate: error: {DATA / 'lint' / 'unknown-type.toml'}:7:20: unknown type 'uint24': "
        "not a scalar type or a kind [unknown-type]\n"
    )
    missing = tmp_path / "missing.toml"
    status, out, err = run(capsys, str(missing))
    assert (status, out) == (1, "")
    assert err == f"vmstate: error: {missing}: cannot read: No such file or directory\n"


# -- from what QEMU wrote: a -dump-vmstate, a vmdesc, a stream ------------------------------

QEMU_DATA = DATA / "qemu"
DUMP = QEMU_DATA / "dump-pc-i440fx-7.2.json"
STREAM = QEMU_DATA / "pc-minimal.mig"
VMDESC = QEMU_DATA / "pc-minimal.desc.json"  # analyze --dump desc of STREAM, QEMU's bytes


def _described(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert main(["describe", *args]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out.splitlines()


def test_a_device_of_a_dump_is_described_as_qemu_dumped_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """rtl8139 of QEMU 7.2's -dump-vmstate: its versions, its fields in QEMU's order with
    their since-versions, its subsection."""
    import json

    dumped = json.loads(DUMP.read_text())["rtl8139"]["Description"]
    lines = _described(capsys, str(DUMP), "rtl8139")
    assert lines[0] == (
        f"rtl8139 v{dumped['version_id']} (loads v{dumped['minimum_version_id']}.."
        f"v{dumped['version_id']})"
    )
    top = [line for line in lines[1:] if line.startswith("  ") and not line.startswith("   ")]
    assert [line.split()[0] for line in top[:-1]] == [f["field"] for f in dumped["Fields"]]
    for line, field in zip(top, dumped["Fields"], strict=False):
        if field["version_id"]:
            assert line.endswith(f"since v{field['version_id']}"), line
    (sub,) = dumped["Subsections"]
    assert top[-1] == f"  subsection {sub['name']} v{sub['version_id']}, needed: ?{sub['name']}"


@pytest.mark.parametrize("source", [STREAM, VMDESC], ids=["a stream", "its vmdesc"])
def test_a_section_of_a_vmdesc_is_described_as_it_was_written(
    source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stream's timer section, from the stream and from its vmdesc alone: its version,
    each field's name, QEMU's type name and size as the vmdesc records them."""
    import json

    (entry,) = (d for d in json.loads(VMDESC.read_text())["devices"] if d["name"] == "timer")
    lines = _described(capsys, str(source), "timer")
    assert lines[0].startswith(f"timer v{entry['version']} ")
    fields = [line.split() for line in lines[1:]]
    assert [(f[0], f[-2]) for f in fields] == [(e["name"], str(e["size"])) for e in entry["fields"]]
    assert [f[1] for f in fields] == ["int64", "buffer", "int64"]
    assert "(unused_buffer)" in lines[2]


def test_every_section_of_a_stream_is_described(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    devices = json.loads(VMDESC.read_text())["devices"]
    blocks = "\n".join(_described(capsys, str(STREAM))).split("\n\n")
    assert len(blocks) == len(devices)
    for block, device in zip(blocks, devices, strict=True):
        name = device["name"]
        keyed = name if device["instance_id"] == 0 else f"{name} ({device['instance_id']})"
        head = block.removeprefix(f"== {keyed}\n")
        if "vmsd_name" in device:
            assert head.startswith(f"{device['vmsd_name']} v{device['version']}"), block[:80]
        else:  # an old-style section (slirp)
            assert head.startswith(f"{name} any version (old-style"), block[:80]
