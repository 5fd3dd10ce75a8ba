"""``vmstate decode-config`` reads a config space from wherever it is, and says the same
as ``lspci -vvv`` about it.

Each input form is read from this machine's real devices and compared, line by line,
with what lspci prints for the same function: the device's address (BDF), its sysfs
folder and ``config`` file, ``/proc/bus/pci``, stdin ("-" and ``/dev/stdin``), a
process substitution, a regular file, ``lspci -x``/``-xxx``/``-xxxx`` text, and the
64-byte header an unprivileged reader gets.  What a form cannot carry is left out of
lspci's text first, and said so where it is done: the kernel's lines (driver, modules,
NUMA node, IOMMU group: not config space), the address where the bytes come without
one, BAR sizes where no sysfs ``resource`` goes with them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, IN_CI, require_tool
from test_pci_lspci_text import comparable, dump_text, lspci_lines

from vmstate.cli import main
from vmstate.pci import inputs
from vmstate.pci.decode import decode_config
from vmstate.pci.inputs import MAX_TEXT, parse_lspci_dump

SYSFS = Path("/sys/bus/pci/devices")
HOST = sorted(p.name for p in SYSFS.iterdir()) if SYSFS.is_dir() else []
NOBODY = 65534
#: what lspci adds from the kernel, not from config space
KERNEL_LINES = re.compile(
    r"\t(Kernel driver in use|Kernel modules|NUMA node|IOMMU group|Physical Slot|DeviceName"
    r"|Device tree node): "
)
SIZE = re.compile(r" \[size=[0-9]+[KMGT]?\]$")


def host_device() -> str:
    """This machine's first PCI function that has capabilities (so there is more than a header)."""
    for bdf in HOST:
        if (SYSFS / bdf / "config").read_bytes()[0x06] & 0x10:
            return bdf
    message = "this machine has no PCI device with capabilities under /sys/bus/pci/devices"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def lspci_live(bdf: str, *, user: int | None = None) -> list[str]:
    """``lspci -vvv -s BDF`` of the live device, without the kernel's lines."""
    tool = require_tool("lspci")
    out = subprocess.run(
        [tool, "-vvv", "-s", bdf], capture_output=True, text=True, check=True, user=user
    ).stdout
    return [line for line in out.rstrip("\n").split("\n") if not KERNEL_LINES.match(line)]


def without_address(lines: list[str]) -> list[str]:
    """lspci's text as for bytes that came without the function's address."""
    return [re.sub(r"^[0-9a-f:.]+ ", "", lines[0]), *lines[1:]]


def without_sysfs(lines: list[str]) -> list[str]:
    """Text as for bytes that came without sysfs beside them: no BAR sizes, and no
    Interrupt line, whose IRQ lspci takes from the kernel (sysfs ``irq``) where bytes alone
    carry firmware's Interrupt Line, often another number.  For both texts compared."""
    return [SIZE.sub("", line) for line in lines if not line.startswith("\tInterrupt: ")]


def decode(args: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["decode-config", *args]) == 0
    return capsys.readouterr().out.rstrip("\n").split("\n")


def decode_in_subprocess(
    args: list[str], stdin: bytes | None = None, *, shell: bool = False
) -> tuple[int, list[str], str]:
    """The command as a user runs it, stdin from a pipe or through bash: exit status,
    stdout lines, stderr."""
    command = [sys.executable, "-m", "vmstate", "decode-config", *args]
    if shell:
        command = [require_tool("bash"), "-c", " ".join(command)]
    result = subprocess.run(command, input=stdin, capture_output=True, check=False)
    out = result.stdout.decode("utf-8").rstrip("\n").split("\n")
    return result.returncode, out, result.stderr.decode("utf-8")


def require_root() -> None:
    if os.geteuid() != 0:
        message = "reading whole config spaces needs root"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


# --- where a config space is ---------------------------------------------------------------


def test_bdf(capsys: pytest.CaptureFixture[str]) -> None:
    bdf = host_device()
    assert decode([bdf], capsys) == lspci_live(bdf)


@pytest.mark.parametrize("bdf", HOST or ["none"])
def test_sysfs_device_folder(bdf: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every device of this machine: address from the folder, sizes from its resource file."""
    if bdf == "none":
        host_device()
    assert decode([str(SYSFS / bdf)], capsys) == lspci_live(bdf)


def test_sysfs_gives_the_json_its_address_irq_and_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    bdf = host_device()
    assert main(["decode-config", "--json", str(SYSFS / bdf)]) == 0
    decoded = json.loads(capsys.readouterr().out)
    assert decoded["address"] == bdf.removeprefix("0000:")
    assert decoded["irq"] == int((SYSFS / bdf / "irq").read_text())
    resources = (SYSFS / bdf / "resource").read_text().splitlines()
    for bar in decoded["bars"]:
        start, end, _ = (int(x, 16) for x in resources[bar["index"]].split())
        assert bar["size"] == (end - start + 1 if end else None)


def test_sysfs_config_file(capsys: pytest.CaptureFixture[str]) -> None:
    """sysfs config files cannot be memory-mapped ("No such device"): read, not mapped."""
    bdf = host_device()
    assert decode([str(SYSFS / bdf / "config")], capsys) == lspci_live(bdf)


def test_proc_bus_pci(capsys: pytest.CaptureFixture[str]) -> None:
    bdf = host_device()
    domain, bus, slot = bdf.split(":")
    proc = Path("/proc/bus/pci") / (bus if domain == "0000" else f"{domain}:{bus}") / slot
    if not proc.exists():
        pytest.skip(f"{proc}: this kernel has no /proc/bus/pci")
    assert without_sysfs(decode([str(proc)], capsys)) == without_sysfs(lspci_live(bdf))


@pytest.mark.parametrize("name", ["-", "/dev/stdin"])
def test_stdin(name: str) -> None:
    require_root()
    bdf = host_device()
    config = (SYSFS / bdf / "config").read_bytes()
    status, out, err = decode_in_subprocess([name], config)
    assert status == 0, err
    assert without_sysfs(out) == without_sysfs(without_address(lspci_live(bdf)))


def test_process_substitution() -> None:
    """``<(cat FILE)`` is a pipe behind /dev/fd/N: nothing to map, nothing to seek."""
    require_root()
    bdf = host_device()
    status, out, err = decode_in_subprocess([f"<(cat {SYSFS / bdf / 'config'})"], shell=True)
    assert status == 0, err
    assert without_sysfs(out) == without_sysfs(without_address(lspci_live(bdf)))


def test_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = (DATA / "pci" / "qemu-q35-pcie-root-port.bin").read_bytes()
    dump = tmp_path / "config.dump"
    dump.write_text(dump_text(data, "00:00.0"))
    theirs = lspci_lines(dump)
    assert theirs is not None
    assert decode([str(DATA / "pci" / "qemu-q35-pcie-root-port.bin")], capsys) == without_address(
        theirs
    )


@pytest.mark.parametrize("option", ["-x", "-xxx", "-xxxx"])
def test_lspci_dump_text_of_every_function(
    option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """All of this machine's functions in one dump: each decoded, in order, one empty line
    between them; lspci -F on the same text is the reference."""
    require_root()
    host_device()
    tool = require_tool("lspci")
    dump = tmp_path / "lspci.txt"
    dump.write_text(
        subprocess.run([tool, option], capture_output=True, text=True, check=True).stdout
    )
    theirs = (
        subprocess.run([tool, "-F", str(dump), "-vvv"], capture_output=True, text=True, check=True)
        .stdout.rstrip("\n")
        .split("\n")
    )
    spaces = [decode_config(f.data) for f in parse_lspci_dump(dump.read_text(), "dump")]
    assert len(spaces) == len(HOST)
    expected, got = comparable(theirs, decode([str(dump)], capsys), spaces)
    assert got == expected


def test_lspci_dump_text_through_a_pipe_and_one_slot(tmp_path: Path) -> None:
    require_root()
    bdf = host_device()
    tool = require_tool("lspci")
    text = subprocess.run([tool, "-xxx"], capture_output=True, check=True).stdout
    slot = bdf.removeprefix("0000:")
    status, out, err = decode_in_subprocess(["-", "--slot", slot], text)
    assert status == 0, err
    dump = tmp_path / "lspci.txt"
    dump.write_bytes(text)
    theirs = (
        subprocess.run(
            [tool, "-F", str(dump), "-s", slot, "-vvv"], capture_output=True, text=True, check=True
        )
        .stdout.rstrip("\n")
        .split("\n")
    )
    (function,) = (f for f in parse_lspci_dump(text.decode(), "dump") if str(f.address) == slot)
    expected, got = comparable(theirs, out, [decode_config(function.data)])
    assert got == expected


def test_unprivileged_reader_gets_the_header(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without root the kernel gives 64 bytes of config: decoded as lspci does for the same
    user (header, BARs, then "<access denied>"), with a note on stderr.  The bytes are
    what ``cat`` reads as user nobody; decode-config runs here, as root, with them."""
    require_root()
    bdf = host_device()
    config = SYSFS / bdf / "config"
    header = subprocess.run(
        [require_tool("cat"), str(config)], capture_output=True, check=True, user=NOBODY
    ).stdout
    assert len(header) == 64  # the kernel's rule, not ours
    real = inputs.read_bounded
    monkeypatch.setattr(
        inputs, "read_bounded", lambda s, limit: header if s == str(config) else real(s, limit)
    )
    assert main(["decode-config", str(SYSFS / bdf)]) == 0
    out, err = capsys.readouterr()
    assert out.rstrip("\n").split("\n") == lspci_live(bdf, user=NOBODY)
    assert "\tCapabilities: <access denied>" in out
    assert err == (
        f"vmstate: note: {SYSFS / bdf}: only the first 64 of {config.stat().st_size} bytes were "
        "readable: the kernel shows the rest of config space to root only\n"
    )
    assert main(["decode-config", "--json", str(SYSFS / bdf)]) == 0
    decoded = json.loads(capsys.readouterr().out)
    assert decoded["size"] == 64 and "root only" in decoded["note"]


def test_a_saved_state_file_through_a_pipe(tmp_path: Path) -> None:
    require_root()
    bdf = host_device()
    saved = tmp_path / "dev.vms"
    assert main(["save", bdf, "-o", str(saved)]) == 0
    status, out, err = decode_in_subprocess(["-"], saved.read_bytes())
    assert status == 0, err
    assert without_sysfs(out) == without_sysfs(without_address(lspci_live(bdf)))


# --- data and errors ---------------------------------------------------------------------------


def test_json_is_an_object_per_function_a_list_for_several(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (DATA / "pci" / "qemu-q35-e1000e-pcie.bin").read_bytes()
    one = tmp_path / "one.txt"
    one.write_text(dump_text(data, "00:03.0"))
    assert main(["decode-config", "--json", str(one)]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["address"] == "00:03.0" and single["header"]["vendor_id"] == 0x8086
    two = tmp_path / "two.txt"
    two.write_text(dump_text(data, "00:03.0") + "\n" + dump_text(data, "01:00.1"))
    assert main(["decode-config", "--json", str(two)]) == 0
    assert [f["address"] for f in json.loads(capsys.readouterr().out)] == ["00:03.0", "01:00.1"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"00: 86 80 0e 10\n", "no function in the lspci dump"),
        (b"just some text\n", "neither config space bytes nor lspci -x text"),
        (b"00:01.0 Host bridge\n00: 86 80 zz\n", "malformed lspci dump line"),
        (bytes(5000), "not a config space: too long"),
        (bytes(100), "not a config space size"),
    ],
)
def test_unreadable_input_is_one_line_and_exit_1(
    content: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "input"
    source.write_bytes(content)
    assert main(["decode-config", str(source)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vmstate: error: ") and message in err and err.count("\n") == 1


def test_input_past_the_bound_is_refused_without_reading_it_all() -> None:
    status, _, err = decode_in_subprocess(["-"], b"a" * (MAX_TEXT + 1))
    assert status == 1
    assert "input too large" in err and f"at most {MAX_TEXT} bytes" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["no/such/file"], 1, "no/such/file: no such file, and no PCI address"),
        (["--slot", "07:00.0", "LSPCI"], 1, "lspci.txt: no function 07:00.0 in it"),
        (["--slot", "nonsense", "LSPCI"], 2, "usage error: --slot 'nonsense': not a PCI address"),
    ],
)
def test_what_cannot_be_read_exits_1_and_a_malformed_argument_2(
    args: list[str], status: int, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = tmp_path / "lspci.txt"
    dump.write_text(dump_text((DATA / "pci" / "qemu-pc-e1000.bin").read_bytes(), "00:03.0"))
    assert main(["decode-config", *[str(dump) if a == "LSPCI" else a for a in args]]) == status
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
