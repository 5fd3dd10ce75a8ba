"""`vmstate check`: description sets and saved streams against a destination."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import IN_CI

from vmstate import fields as F
from vmstate.cli import main
from vmstate.compat import DUMP, DescriptionSet, compare
from vmstate.description import Description, Subsection
from vmstate.findings import ERROR, WARNING, Finding
from vmstate.sources import load_description_set
from vmstate.waivers import NO_WAIVERS, Waivers, load_waivers

QEMU = Path(__file__).parent / "data" / "qemu"
CHECKER = QEMU / "static-checker"
QEMU_WAIVERS = Path(__file__).parent.parent / "descriptions" / "waivers" / "qemu.toml"


def rules(problems: list[Finding]) -> set[tuple[str, str]]:
    return {(p.section, p.rule) for p in problems}


def one(src: Description, dst: Description, waivers: Waivers = NO_WAIVERS) -> list[Finding]:
    return compare(DescriptionSet({"dev": src}), DescriptionSet({"dev": dst}), waivers)


# -- QEMU's own checker test data: everything it finds, we find -------------------

#: what QEMU 7.2's scripts/vmstate-static-checker.py prints for dump1 -> dump2
#: (`-s dump1.json -d dump2.json`, 13 lines), as the (section, rule) we report for each;
#: but for its false alarm "Section "fw_cfg" does not exist in dest": dump2 calls the
#: device type fw_cfg2, its description is still fw_cfg, and QEMU finds sections by that
CHECKER_FINDS = {
    ("configuration", "machine-type"),  # dump1 is pc-i440fx-2.1, dump2 pc-i440fx-2.2
    ("fusbh200-ehci-usb", "version-too-new"),  # version error: 2 > 1
    ("fusbh200-ehci-usb", "field-order"),  # expected field "usbsts", got "usbsts_pending"
    ("pci-serial-4x", "section-unmigratable"),  # Entry "Fields" missing
    ("intel-hda-generic", "struct-removed"),  # Field "pci": missing description
    ("cfi.pflash01", "section-unmigratable"),  # Entry "Description" missing
    ("megasas", "field-missing"),  # expected field "irq_state", while dest has no further fields
    ("PIIX3-xen", "version-too-old"),  # minimum version error: 1 < 2
    ("PIIX3-xen", "subsection-missing"),  # Entry "Subsections" missing
    ("tpci200", "description-renamed"),  # Description "tpci200" missing, got "tpci2002"
    ("sun-fdtwo", "version-too-new"),  # Description "fdc": version error: 2 > 1
    ("sun-fdtwo", "subsection-missing"),  # Subsection "fdrive/media_rate" not found
    ("usb-kbd", "size-changed"),  # Field "kbd.keycodes" size mismatch: 4 , 2
}
#: and with --reverse (6 lines)
CHECKER_FINDS_REVERSE = {
    ("configuration", "machine-type"),
    ("fusbh200-ehci-usb", "field-order"),
    ("PIIX3-xen", "version-too-new"),
    ("tpci200", "description-renamed"),
    ("sun-fdtwo", "version-too-old"),
    ("usb-kbd", "size-changed"),
}


def test_finds_everything_qemus_checker_finds(capsys: pytest.CaptureFixture[str]) -> None:
    src = load_description_set(CHECKER / "dump1.json")
    dst = load_description_set(CHECKER / "dump2.json")
    waivers = load_waivers(QEMU_WAIVERS)
    assert rules(compare(src, dst, waivers)) >= CHECKER_FINDS
    assert ("fw_cfg", "section-missing") not in rules(compare(src, dst, waivers))
    # beyond the checker: megasas's irq_state is expected by dump1 but never sent by dump2
    assert rules(compare(dst, src, waivers)) >= CHECKER_FINDS_REVERSE | {
        ("megasas", "field-not-sent")
    }
    args = ["check", "--src", str(CHECKER / "dump1.json"), "--dst", str(CHECKER / "dump2.json")]
    assert main([*args, "--waivers", str(QEMU_WAIVERS)]) == 1
    out = capsys.readouterr().out
    assert "error: usb-kbd: kbd.keycodes: size mismatch: 4 -> 2 [size-changed]" in out
    assert (
        out.rstrip().splitlines()[-1] == "NOT compatible: 13 errors, 0 warnings"
    )  # as QEMU: exit 13


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("dump-pc-i440fx-2.0.json", "dump-pc-i440fx-7.2.json"),
        ("dump-pc-q35-7.2.json", "dump-pc-i440fx-7.2.json"),
    ],
)
def test_dumps_of_one_qemu_differ_only_in_the_machine_type(
    src: str, dst: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One QEMU's device classes are the same whatever the machine, but QEMU refuses a
    stream of another machine type: that is the only problem, both ways."""
    args = [
        "check",
        "--src",
        str(QEMU / src),
        "--dst",
        str(QEMU / dst),
        "--bidirectional",
        "--json",
    ]
    assert main(args) == 1
    report = json.loads(capsys.readouterr().out)
    assert [(p["section"], p["rule"]) for p in report["problems"]] == [
        ("configuration", "machine-type")
    ] * 2
    assert "QEMU loads a stream only into its own machine type" in report["problems"][0]["reason"]


# -- each rule, on hand-made pairs -----------------------------------------------------


def desc(
    *fields: F.Field, version: int = 1, minimum: int = 1, subsections: tuple[Subsection, ...] = ()
) -> Description:
    return Description("dev", version, minimum, fields, subsections)


def test_identical_descriptions_are_compatible() -> None:
    d = desc(F.uint32("a"), F.buffer("b", 4))
    assert one(d, d) == []


@pytest.mark.parametrize(
    ("src", "dst", "rule"),
    [
        (desc(F.uint8("a"), version=3), desc(F.uint8("a"), version=2), "version-too-new"),
        (
            desc(F.uint8("a"), version=1),
            desc(F.uint8("a"), version=4, minimum=2),
            "version-too-old",
        ),
        (desc(F.uint8("a"), F.uint8("b")), desc(F.uint8("a"), F.uint8("c")), "field-order"),
        (desc(F.uint8("a"), F.uint8("b")), desc(F.uint8("a")), "field-missing"),
        (desc(F.uint16("a")), desc(F.uint32("a")), "size-changed"),
        (desc(F.unused(4)), desc(F.uint16("x"), F.uint8("y")), "unused-size"),
        (desc(F.uint32("a", since=2), version=2), desc(F.uint32("a", since=1), version=2), None),
        (desc(F.uint32("a", since=2), version=2), desc(F.uint32("a", since=3), version=3), None),
        (
            desc(subsections=(Subsection(Description("dev/x", 1, 1, [F.uint8("x")])),)),
            desc(),
            "subsection-missing",
        ),
        # what QEMU's checker misses:
        (desc(F.uint8("a", exists="version_id > 1")), desc(F.uint8("a")), "exists-changed"),
        (
            desc(F.uint8("a", exists="flags & 1")),
            desc(F.uint8("a", exists="flags & 2")),
            "exists-changed",
        ),
        (
            desc(subsections=(Subsection(Description("dev/x", 1, 1, []), needed="a > 1"),)),
            desc(subsections=(Subsection(Description("dev/x", 1, 1, []), needed="a > 2"),)),
            "needed-changed",
        ),
        (desc(F.uint32("a")), desc(F.int32("a")), "kind-changed"),
        (desc(F.uint32("a")), desc(F.uint32_equal("a")), "kind-changed"),
        (desc(F.array("a", "uint8", 4)), desc(F.array("a", "uint8", 5)), "array-count"),
        (
            desc(F.uint8("n"), F.varray("a", "uint8", "n", 64, count_type="uint8")),
            desc(F.uint8("n"), F.varray("a", "uint8", "n", 32, count_type="uint8")),
            "bound-shrunk",
        ),
        (
            desc(F.uint8("n"), F.vbuffer("a", "n", 255)),
            desc(F.uint8("n"), F.vbuffer("a", "n", 128)),
            "bound-shrunk",
        ),
        (
            desc(F.uint8("n"), F.vbuffer("a", "n", 64)),
            desc(F.uint8("m"), F.vbuffer("a", "m", 64)),
            "field-order",
        ),
        (desc(F.uint8("a")), desc(F.uint8("a"), F.uint8("b")), "field-not-sent"),
        (desc(F.buffer("a", 4)), desc(F.array("a", "uint8", 4)), "array-kind"),
    ],
)
def test_rules(src: Description, dst: Description, rule: str | None) -> None:
    problems = one(src, dst)
    if rule is None:
        assert [p for p in problems if p.severity == ERROR and p.rule != "field-version"] == []
    else:
        assert rule in {p.rule for p in problems}, problems


def test_field_version_error_mirrors_qemu() -> None:
    problems = one(desc(F.uint32("a", since=3), version=3), desc(F.uint32("a", since=2), version=3))
    assert [p.rule for p in problems] == ["field-version"]


def test_unused_padding_absorbs_fields_of_the_same_size() -> None:
    assert (
        one(desc(F.unused(6), F.uint8("z")), desc(F.uint32("a"), F.uint16("b"), F.uint8("z"))) == []
    )
    assert (
        one(desc(F.uint32("a"), F.uint16("b"), F.uint8("z")), desc(F.unused(6), F.uint8("z"))) == []
    )


def test_substruct_added_or_removed_keeps_the_wire() -> None:
    inner = Description("inner", 1, 1, [F.uint8("b"), F.uint8("c")])
    flat = desc(F.uint8("a"), F.uint8("b"), F.uint8("c"), F.uint8("d"))
    nested = desc(F.uint8("a"), F.struct("s", inner), F.uint8("d"))
    assert one(flat, nested) == []
    assert one(nested, flat) == []


def test_nested_description_errors_name_the_path() -> None:
    old = Description("inner", 1, 1, [F.uint16("x")])
    new = Description("inner", 1, 1, [F.uint32("x")])
    problems = one(desc(F.struct("s", old)), desc(F.struct("s", new)))
    assert [(p.path, p.rule) for p in problems] == [("dev.s.x", "size-changed")]


def test_waivers_rename_and_accept(tmp_path: Path) -> None:
    src, dst = desc(F.uint8("dev")), desc(F.uint8("parent_obj"))
    assert rules(one(src, dst)) == {("dev", "field-order")}
    waiver = tmp_path / "w.toml"
    waiver.write_text('[[rename]]\nscope = "dev"\nnames = ["dev", "parent_obj"]\n')
    assert one(src, dst, load_waivers(waiver)) == []
    waiver.write_text('[[accept]]\nsection = "dev"\nrule = "field-order"\nreason = "reviewed"\n')
    assert one(src, dst, load_waivers(waiver)) == []
    waiver.write_text('[[accept]]\nsection = "dev"\n')
    with pytest.raises(Exception, match="reason"):
        load_waivers(waiver)


# -- a real stream against a changed dump ----------------------------------------------


def changed_dump(tmp_path: Path, change: str) -> Path:
    dump = json.loads((QEMU / "dump-pc-i440fx-7.2.json").read_text())
    e1000 = copy.deepcopy(dump["e1000"])
    fields = e1000["Description"]["Fields"]
    if change == "widen":
        field = next(f for f in fields if f["field"] == "rxbuf_size")
        field["size"] = 8
    else:
        sub = next(
            s for s in e1000["Description"]["Subsections"] if s["name"] == "e1000/full_mac_state"
        )
        sub["name"] = "e1000/mac_state_v2"
    dump["e1000"] = e1000
    out = tmp_path / f"dump-{change}.json"
    out.write_text(json.dumps(dump))
    return out


@pytest.mark.parametrize(
    ("change", "rule", "path"),
    [
        ("widen", "size-changed", "e1000.rxbuf_size"),
        ("rename", "subsection-missing", "e1000/e1000/full_mac_state"),
    ],
)
def test_stream_against_changed_dump_names_the_section(
    tmp_path: Path, change: str, rule: str, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = QEMU / "pc-e1000-usb-hda.mig"
    assert (
        main(["check", "--stream", str(stream), "--dst", str(QEMU / "dump-pc-i440fx-7.2.json")])
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "check",
                "--stream",
                str(stream),
                "--dst",
                str(changed_dump(tmp_path, change)),
                "--json",
            ]
        )
        == 1
    )
    report = json.loads(capsys.readouterr().out)
    errors = [p for p in report["problems"] if p["severity"] == ERROR]
    assert errors == [
        {
            "severity": ERROR,
            "section": "0000:00:03.0/e1000",
            "path": path,
            "rule": rule,
            "reason": errors[0]["reason"],
        }
    ]


def test_stream_against_its_own_vmdesc_and_a_wrong_one(capsys: pytest.CaptureFixture[str]) -> None:
    stream = QEMU / "q35-e1000e-virtio.mig"
    assert (
        main(["check", "--stream", str(stream), "--dst", str(QEMU / "q35-e1000e-virtio.desc.json")])
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "check",
                "--stream",
                str(stream),
                "--dst",
                str(QEMU / "pc-e1000-usb-hda.desc.json"),
                "--json",
            ]
        )
        == 1
    )
    report = json.loads(capsys.readouterr().out)
    failing = {p["section"] for p in report["problems"] if p["severity"] == ERROR}
    assert "0000:00:02.0/e1000e" in failing  # no e1000e on the pc machine
    assert "0000:00:1f.0/ICH9LPC" in failing


def test_dump_sets_cannot_decode() -> None:
    found = load_description_set(QEMU / "dump-pc-q35-7.2.json")
    assert found.kind == DUMP and not found.decodes
    assert "e1000e" in found.sections


def test_usage_errors_exit_2() -> None:
    cmd = [sys.executable, "-m", "vmstate", "check", "--src", str(QEMU / "dump-pc-q35-7.2.json")]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "vmstate: usage error: give --src and --dst, --stream and --dst, or --state and --device"
    )


def test_warnings_alone_are_compatible() -> None:
    problems = one(desc(F.uint32("a")), desc(F.int32("a")))
    assert [p.severity for p in problems] == [WARNING]


# -- a saved device state against a device (this host's, read-only) -------------------


def _host_pair() -> tuple[str, str]:
    """Two of this host's PCI functions with different identities."""
    root = Path("/sys/bus/pci/devices")
    seen: dict[tuple[str, str], str] = {}
    for dev in sorted(root.iterdir()):
        key = ((dev / "vendor").read_text(), (dev / "device").read_text())
        seen.setdefault(key, dev.name)
    names = list(seen.values())
    assert len(names) >= 2, "this host needs two different PCI devices"
    return names[0], names[1]


def test_state_against_a_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:
        message = "whole config spaces from sysfs need root"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    first, second = _host_pair()
    saved = tmp_path / "dev.vms"
    assert main(["save", first, "-o", str(saved)]) == 0
    capsys.readouterr()
    assert main(["check", "--state", str(saved), "--device", first]) == 0
    assert capsys.readouterr().out.strip() == "compatible: 0 errors, 0 warnings"
    assert main(["check", "--state", str(saved), "--device", second, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["compatible"]
    reasons = [p["reason"] for p in report["problems"]]
    # the identity that differs, named once: not again as its field, not again as its bytes
    assert any(r.startswith(("vendor id: source", "device id: source")) for r in reasons)
    assert not any("does not equal the value held" in r for r in reasons)
    assert not any(
        r.startswith(("byte 0x000", "byte 0x001", "byte 0x002", "byte 0x003")) for r in reasons
    )
    assert all(p["section"] == f"{first}/vfio-pci-config" for p in report["problems"])


# -- exists-tests: an error that says when it breaks, unless a waiver accepts it -------

#: QEMU gitlab #932: between 6.2 and 7.0 piix4_pm's acpi_index changed its exists-test
#: (the 6.2 test was false on piix4, 7.0's true), which no static check saw; a 6.2 stream
#: then failed to load in 7.0 with "Missing section footer for 0000:00:01.3/piix4_pm"
PIIX4_PM = """
[description]
name = "piix4_pm"
version_id = 3
minimum_version_id = 3
fields = [
  {{ name = "hotplug_bridge", type = "bool" }},
  {{ name = "pci0_status", type = "uint32" }},
  {{ name = "acpi_index", type = "uint32", exists = "{test}" }},
  {{ name = "smb_stat", type = "uint8" }},
]
"""


def _piix4(tmp_path: Path, name: str, test: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PIIX4_PM.format(test=test))
    return path


def test_a_changed_exists_test_fails_unless_waived(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _piix4(tmp_path / "6.2", "piix4_pm", "hotplug_bridge and pci0_status == 0xffffffff")
    dst = _piix4(tmp_path / "7.0", "piix4_pm", "hotplug_bridge")
    args = ["check", "--src", str(src), "--dst", str(dst), "--json"]
    assert main(args) == 1
    (problem,) = json.loads(capsys.readouterr().out)["problems"]
    assert (problem["severity"], problem["path"], problem["rule"]) == (
        "error",
        "piix4_pm.acpi_index",
        "exists-changed",
    )
    assert "migration breaks whenever the two disagree" in problem["reason"]
    waiver = tmp_path / "waive.toml"
    waiver.write_text(
        '[[accept]]\nsection = "piix4_pm"\npath = "piix4_pm.acpi_index"\n'
        'rule = "exists-changed"\nreason = "both tests are false on every machine we run"\n'
    )
    assert main([*args, "--waivers", str(waiver)]) == 0
    assert json.loads(capsys.readouterr().out) == {"compatible": True, "problems": []}


@pytest.mark.parametrize(
    ("src", "dst", "says"),
    [
        (F.uint8("a", exists="flags & 1"), F.uint8("a"), "the source sends 'a' only when"),
        (F.uint8("a"), F.uint8("a", exists="flags & 1"), "the source always sends 'a'"),
    ],
)
def test_an_exists_test_on_one_side_says_when_it_breaks(
    src: F.Field, dst: F.Field, says: str
) -> None:
    (problem,) = one(desc(F.uint8("flags"), src), desc(F.uint8("flags"), dst))
    assert (problem.severity, problem.rule) == (ERROR, "exists-changed")
    assert (
        says in problem.reason and "migration breaks whenever that test is false" in problem.reason
    )


def test_a_dump_shows_only_whether_a_test_exists() -> None:
    """Two dumps' tests are QEMU code neither exports: present on both sides compares equal
    (QEMU gitlab #932 is invisible to any dump); present on one side only is an error."""
    a = parse_qemu_dump_set({"field": "x", "version_id": 0, "field_exists": True, "size": 4})
    b = parse_qemu_dump_set({"field": "x", "version_id": 0, "field_exists": True, "size": 4})
    c = parse_qemu_dump_set({"field": "x", "version_id": 0, "field_exists": False, "size": 4})
    assert compare(a, b) == []
    assert [p.rule for p in compare(a, c)] == ["exists-changed"]


def parse_qemu_dump_set(field: dict[str, object]) -> DescriptionSet:
    from vmstate.qemu_dump import parse_qemu_dump

    desc = {"name": "dev", "version_id": 1, "minimum_version_id": 1, "Fields": [field]}
    dump = parse_qemu_dump(
        {
            "vmschkmachine": {"Name": "m"},
            "dev": {"Name": "dev", "version_id": 1, "minimum_version_id": 1, "Description": desc},
        }
    )
    return DescriptionSet({"dev": dump.devices[0].description}, kind=DUMP, machine="m")


# -- what the report says, and how often ------------------------------------------------


def test_sections_a_dump_cannot_list_share_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """QEMU 7.2's stream of a pc machine has sections (timer, cpu, apic...) that its own
    -dump-vmstate never lists: one warning line names them all, the JSON keeps each."""
    args = [
        "check",
        "--stream",
        str(QEMU / "pc-minimal.mig"),
        "--dst",
        str(QEMU / "dump-pc-i440fx-7.2.json"),
    ]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        len(lines) == 2
        and lines[0].startswith("warning: timer, ")
        and "[section-undescribed]" in lines[0]
    )
    assert "cpu, apic" in lines[0] and lines[1] == "compatible: 0 errors, 9 warnings"
    assert main([*args, "--json"]) == 0
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert len(problems) == 9 and {p["rule"] for p in problems} == {"section-undescribed"}


def test_strict_fails_on_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "check",
        "--stream",
        str(QEMU / "pc-minimal.mig"),
        "--dst",
        str(QEMU / "dump-pc-i440fx-7.2.json"),
    ]
    assert main([*args, "--strict"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        "compatible with warnings, refused by --strict: 0 errors, 9 warnings"
    )
    own = [
        "check",
        "--stream",
        str(QEMU / "pc-minimal.mig"),
        "--dst",
        str(QEMU / "pc-minimal.desc.json"),
    ]
    assert main([*own, "--strict"]) == 0


def test_shipped_waivers_by_name_from_anywhere(tmp_path: Path) -> None:
    """``--waivers qemu`` names the shipped file wherever vmstate is installed (run from
    an empty directory, where no file of that name is); an unknown name is a usage error."""
    ten = Path(__file__).parent / "data" / "qemu-10.0"
    src, dst = QEMU / "dump-pc-i440fx-7.2.json", ten / "dump-pc-i440fx-7.2.json"
    command = [sys.executable, "-m", "vmstate", "check", "--src", str(src), "--dst", str(dst)]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *extra], cwd=tmp_path, capture_output=True, text=True, check=False
        )

    named, default = run("--no-shipped-waivers", "--waivers", "qemu"), run()
    bare = run("--no-shipped-waivers")
    assert named.returncode == default.returncode == bare.returncode == 1
    assert named.stdout == default.stdout != bare.stdout  # 3 errors, not QEMU's renames
    unknown = run("--waivers", "qemmu")
    assert unknown.returncode == 2
    assert (
        unknown.stderr.strip()
        == "vmstate: usage error: no shipped waiver file 'qemmu' (shipped: qemu)"
    )


def test_swapped_fields_are_named_a_swap_in_every_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stream's vmdesc lists only what was sent, so a field the destination has first
    might be a list sent empty; it is not when the source sends it later: a swap."""
    from vmstate.description_file import load_description_file
    from vmstate.stream_writer import DeviceSection, write

    text = '[description]\nname = "dev"\nversion_id = 1\nfields = [\n{}\n]\n'
    a = '  { name = "a", type = "uint8" },'
    b = '  { name = "b", type = "uint16" },'
    c = '  { name = "c", type = "uint32" },'
    (tmp_path / "src.toml").write_text(text.format("\n".join((a, b, c))))
    (tmp_path / "dst.toml").write_text(text.format("\n".join((b, a, c))))
    src = load_description_file(tmp_path / "src.toml")
    stream = tmp_path / "s.mig"
    stream.write_bytes(write([DeviceSection("dev", src, {"a": 1, "b": 2, "c": 3})]))
    expected = "error: dev: a: expected field 'a', got 'b'; skipping the rest [field-order]"
    for mode in (
        ["--src", str(tmp_path / "src.toml")],
        ["--src", str(stream)],
        ["--stream", str(stream)],
    ):
        assert main(["check", *mode, "--dst", str(tmp_path / "dst.toml")]) == 1
        assert capsys.readouterr().out.splitlines()[0] == expected, mode


def test_a_finding_names_its_description_once() -> None:
    assert str(Finding(ERROR, "0000:00:03.0/e1000", "e1000.mac_reg", "size-changed", "r")) == (
        "error: 0000:00:03.0/e1000: mac_reg: r [size-changed]"
    )
    assert Finding(ERROR, "demo-uart", "demo-uart", "load-fails", "r").where() == "demo-uart"
    assert Finding(ERROR, "dev", "dev2.x", "r", "r").where() == "dev: dev2.x"


def test_one_difference_is_reported_once(tmp_path: Path) -> None:
    """A device id that differs is one identity difference: not again as the equal-check
    of the saved device_id field, not again as QEMU's read-only bytes 2 and 3."""
    from vmstate.device_load import plan_load
    from vmstate.device_save import save
    from vmstate.saved_file import read_file, snapshot
    from vmstate.testing.pci import e1000e_like

    saved = tmp_path / "src.vms"
    save(e1000e_like("src"), saved)
    other = e1000e_like("dst", device_id=0x10D4)
    with snapshot(saved) as buf:
        plan = plan_load(other, read_file(buf))
    assert [(r.rule, r.error.message) for r in plan.refusals] == [
        ("config", "device id: source 0x10d3, destination 0x10d4")
    ]
