"""libvirt save images made by libvirt itself: vmstate reads them as libvirt does, and its
restore verdict (``check --stream IMAGE --dst SET``) is what ``virsh restore`` then does.

A private libvirtd (tests/peers/libvirt.py) saves small TCG domains under QEMU 7.2 and
10.0, raw and in every compressed ``save_image_format`` libvirt 9.0 offers (gzip,
bzip2, xz, lzop), and restores each
with the emulator of the case: 7.2, 10.0 (Debian's, without the spice modules: no
qxl), or 7.2 with its qxl module taken away.  The destination's descriptions are that
emulator's ``-dump-vmstate``, the way a user on that host gets them.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from conftest import require_tool
from peers.apt import run
from peers.libvirt import Libvirt, Restore, domain_xml, emulator_script
from peers.qemu import MODULE_DIR, Qemu

from vmstate.cli import main
from vmstate.inputs import open_stream

pytestmark = pytest.mark.qemu

#: the save_image_format values libvirt 9.0 takes (zstd came later: see test_inputs.py)
COMPRESSED = ("gzip", "bzip2", "xz", "lzop")
QXL = "<video><model type='qxl'/></video>"


@attrs.frozen
class Image:
    """What to save: under which emulator, machine type, format and extra devices."""

    saved_by: str
    machine: str
    save_format: str = "raw"
    devices: str = ""


class Lab:
    """The daemon, the emulators, and images and dumps made on first use."""

    def __init__(self, root: Path, libvirt: Libvirt, emulators: dict[str, str]) -> None:
        self.root = root
        self.libvirt = libvirt
        self.emulators = emulators
        self.images: dict[Image, Path] = {}
        self.dumps: dict[tuple[str, str], Path] = {}

    def image(self, what: Image) -> Path:
        if what not in self.images:
            n = len(self.images)
            path = self.root / f"image{n}-{what.saved_by}-{what.save_format}.save"
            xml = domain_xml(f"vmstate-{n}", what.machine, self.emulators[what.saved_by],
                             what.devices)
            self.libvirt.save(xml, path, what.save_format)
            self.images[what] = path
        return self.images[what]

    def dump(self, emulator: str, machine: str) -> Path:
        """The emulator's ``-dump-vmstate`` of *machine*."""
        key = (emulator, machine)
        if key not in self.dumps:
            path = self.root / f"dump-{emulator}-{machine}.json"
            run([self.emulators[emulator], "-M", machine, "-nodefaults", "-accel", "tcg",
                 "-dump-vmstate", str(path)], timeout=120)
            self.dumps[key] = path
        return self.dumps[key]

    def restore(self, image: Path, emulator: str) -> Restore:
        return self.libvirt.restore(image, self.emulators[emulator])


def _without_qxl(root: Path, qemu: Qemu) -> list[str]:
    """QEMU 7.2 with its module folder less ``hw-display-qxl.so``: a host without the
    spice modules (later Debian packages split them off into qemu-system-modules-spice)."""
    modules = root / "modules-without-qxl"
    modules.mkdir()
    for module in Path(MODULE_DIR).glob("*.so"):
        if module.name != "hw-display-qxl.so":
            shutil.copy2(module, modules)
    bind = 'mount --bind "$0" ' + MODULE_DIR + ' && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", bind, str(modules),
            *qemu.prefix]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, qemu_7_2: Qemu, qemu_10_0: Qemu) -> Iterator[Lab]:
    for program in COMPRESSED:  # libvirt runs them to compress and decompress
        require_tool(program)
    root = tmp_path_factory.mktemp("libvirt")
    emulators = {
        "7.2": qemu_7_2.prefix[0],
        "10.0": str(emulator_script(root / "qemu-10.0", qemu_10_0.prefix)),
        "7.2-without-qxl": str(emulator_script(root / "qemu-7.2-without-qxl",
                                               _without_qxl(root, qemu_7_2))),
    }
    libvirt = Libvirt(root / "daemon", require_tool)
    try:
        libvirt.start()
        yield Lab(root, libvirt, emulators)
    finally:
        libvirt.stop()


@attrs.frozen
class Case:
    """One restore: the image, the destination's emulator, what libvirt and vmstate say."""

    id: str
    image: Image
    restore_with: str
    #: the machine type the destination is described with (-dump-vmstate -M)
    dst_machine: str
    restores: bool
    #: a piece of libvirt's message when it fails
    libvirt_says: str = ""
    #: the rule vmstate names when it says no
    rule: str = ""
    #: describe the source too (--src): it tells which sections are devices
    with_src: bool = False


I440FX_7_2 = Image("7.2", "pc-i440fx-7.2")
QXL_7_2 = Image("7.2", "pc-i440fx-7.2", devices=QXL)
CASES = [
    Case("7.2-raw-restored-by-7.2", I440FX_7_2, "7.2", "pc-i440fx-7.2", True),
    *(
        Case(f"7.2-{fmt}-restored-by-7.2", Image("7.2", "pc-i440fx-7.2", fmt), "7.2",
             "pc-i440fx-7.2", True)
        for fmt in COMPRESSED
    ),
    Case("7.2-q35-restored-by-7.2", Image("7.2", "pc-q35-7.2"), "7.2", "pc-q35-7.2", True),
    Case("7.2-qxl-restored-by-7.2", QXL_7_2, "7.2", "pc-i440fx-7.2", True, with_src=True),
    Case("7.2-qxl-restored-by-7.2-without-qxl", QXL_7_2, "7.2-without-qxl", "pc-i440fx-7.2",
         False, "does not support video model 'qxl'", "section-missing", with_src=True),
    pytest.param(
        Case("7.2-restored-by-10.0", I440FX_7_2, "10.0", "pc-i440fx-7.2", True),
        id="7.2-restored-by-10.0",
    ),
    pytest.param(
        Case("7.2-qxl-restored-by-10.0", QXL_7_2, "10.0", "pc-i440fx-7.2", False,
             "does not support video model 'qxl'", "section-missing", with_src=True),
        id="7.2-qxl-restored-by-10.0",
    ),
    pytest.param(
        # QEMU 10.0 dropped pc-i440fx-2.3 (its oldest is 2.4; 2.2 and older write no vmdesc)
        Case("7.2-pc-i440fx-2.3-restored-by-10.0", Image("7.2", "pc-i440fx-2.3"), "10.0",
             "pc-i440fx-10.0", False, "does not support machine type 'pc-i440fx-2.3'",
             "machine-type"),
        id="7.2-pc-i440fx-2.3-restored-by-10.0",
    ),
    pytest.param(
        Case("10.0-restored-by-10.0", Image("10.0", "pc-i440fx-10.0"), "10.0", "pc-i440fx-10.0",
             True),
        id="10.0-restored-by-10.0",
    ),
    pytest.param(
        Case("10.0-restored-by-7.2", Image("10.0", "pc-i440fx-10.0"), "7.2", "pc-i440fx-7.2",
             False, "does not support machine type 'pc-i440fx-10.0'", "machine-type"),
        id="10.0-restored-by-7.2",
    ),
    pytest.param(
        # backwards: 10.0 running the 7.2 machine type saves what 7.2 restores
        Case("10.0-pc-i440fx-7.2-restored-by-7.2", Image("10.0", "pc-i440fx-7.2"), "7.2",
             "pc-i440fx-7.2", True),
        id="10.0-pc-i440fx-7.2-restored-by-7.2",
    ),
]


def _case_id(case: Case) -> str:
    return case.id


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_restore_verdict_equals_virsh_restore(
    case: Case, lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    image = lab.image(case.image)
    restored = lab.restore(image, case.restore_with)
    assert restored.ok == case.restores, restored.message
    assert case.libvirt_says in restored.message
    argv = ["check", "--stream", str(image), "--dst", str(lab.dump(case.restore_with,
                                                                  case.dst_machine))]
    if case.with_src:
        argv += ["--src", str(lab.dump(case.image.saved_by, case.image.machine))]
    status = main(argv)
    out = capsys.readouterr().out
    assert status == (0 if restored.ok else 1), f"virsh restore: {restored.message}\n{out}"
    if case.rule:
        assert f"[{case.rule}]" in out, out
    else:
        assert "error:" not in out, out


def _libvirt_stream(image: Path, save_format: str) -> bytes:
    """The stream in *image*, unwrapped independently: the header's data_len (libvirt's
    layout), then the very program libvirt runs to restore (``PROGRAM -dc``)."""
    data = image.read_bytes()
    (data_len,) = struct.unpack_from("<I", data, 20)
    body = data[92 + data_len :]
    if save_format == "raw":
        return body
    return subprocess.run([save_format, "-dc"], input=body, capture_output=True,
                          check=True).stdout


def _image_id(image: Image) -> str:
    extra = "-qxl" if image.devices else ""
    return f"{image.saved_by}-{image.machine}-{image.save_format}{extra}"


#: every image the restore cases make
IMAGES = list(dict.fromkeys(
    case.image for case in (c.values[0] if hasattr(c, "values") else c for c in CASES)
))


@pytest.mark.parametrize(
    "what",
    [
        pytest.param(i, id=_image_id(i)) for i in IMAGES
    ],
)
def test_every_image_decodes_like_the_stream_inside_it(
    what: Image, lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = lab.image(what)
    inside = tmp_path / "stream.mig"
    inside.write_bytes(_libvirt_stream(image, what.save_format))
    with open_stream(image) as opened:
        assert opened.data[:] == inside.read_bytes()
        assert opened.save_image is not None
        assert opened.save_image.compression == what.save_format
    for args in (["--format", "qemu"], ["--verify-roundtrip"]):
        assert main(["analyze", str(image), *args]) == 0
        from_image = capsys.readouterr().out
        assert main(["analyze", str(inside), *args]) == 0
        assert from_image == capsys.readouterr().out
    # the documents differ only in the file their RAM bytes refer to; encode reads the
    # image's stream back out of it (decompressing it) and writes the stream inside
    assert main(["analyze", str(image), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert main(["analyze", str(inside), "--json"]) == 0
    assert {**doc, "source": None} == {**json.loads(capsys.readouterr().out), "source": None}
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    assert main(["encode", str(tmp_path / "doc.json"), "-o", str(tmp_path / "again.mig")]) == 0
    assert (tmp_path / "again.mig").read_bytes() == inside.read_bytes()


def test_analyze_shows_what_libvirt_says_of_the_image(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    image = lab.image(Image("7.2", "pc-q35-7.2", "xz"))
    xml = ET.fromstring(lab.libvirt.virsh("save-image-dumpxml", str(image)).stdout)
    name, machine = xml.findtext("name"), xml.find("os/type").get("machine")  # type: ignore[union-attr]
    emulator = xml.findtext("devices/emulator")
    assert main(["analyze", str(image)]) == 0
    first, second = capsys.readouterr().out.splitlines()[:2]
    assert first.startswith(
        f"libvirt save image v2, xz, domain {name} (running when saved), machine {machine}, "
        f"emulator {emulator}; the stream starts at offset "
    )
    assert second.startswith("QEMU migration stream v3, ") and f"machine {machine}" in second


def test_a_compressed_image_reads_from_a_pipe(lab: Lab) -> None:
    image = lab.image(Image("7.2", "pc-i440fx-7.2", "bzip2"))
    with image.open("rb") as source:
        piped = subprocess.run([sys.executable, "-m", "vmstate", "analyze", "-", "--json"],
                               stdin=source, capture_output=True, text=True, check=False)
    direct = subprocess.run([sys.executable, "-m", "vmstate", "analyze", str(image), "--json",
                             "--raw-bytes", "inline"], capture_output=True, text=True, check=False)
    assert piped.returncode == 0, piped.stderr
    piped_doc, direct_doc = json.loads(piped.stdout), json.loads(direct.stdout)
    assert piped_doc["source"]["file"] is None  # nothing to refer to: RAM is inline
    assert {**piped_doc, "source": None} == {**direct_doc, "source": None}


def test_show_names_the_image_then_decodes_its_stream(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    image = lab.image(I440FX_7_2)
    assert main(["show", str(image)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{image}: libvirt save image v2, raw, domain vmstate-")
    assert lines[1].startswith(f"{image}: QEMU-format stream, ")
    assert "\ntimer: timer v2, 24 bytes" in "\n".join(lines)
