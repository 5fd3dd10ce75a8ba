#!/usr/bin/env python3
"""Regenerate the real QEMU 7.2 test data in this directory.

Why: the library must read what QEMU really writes, so the tests compare it
against streams and descriptions produced by QEMU itself and against what
QEMU's own analyzer (``scripts/analyze-migration.py``) makes of them.

What it writes into ``--out`` (default: this script's directory):

- ``<name>.mig``: a migration stream of a small TCG guest (``-m 64``) stopped
  after SeaBIOS has enumerated and programmed the PCI devices and given up
  booting ("No bootable device." on its debug port), saved with QMP ``stop``
  then ``migrate`` to ``exec:cat > <name>.mig``;
- ``<name>.state.json`` / ``<name>.desc.json``: QEMU's analyzer output for the
  stream with ``-d state`` / ``-d desc``, byte for byte as it prints them;
- ``dump-<machine>.json``: ``-dump-vmstate`` of each machine in ``DUMPS``,
  verbatim; one over 1 MiB is stored as ``.json.gz`` instead (gzip with
  mtime 0, so the same QEMU gives the same bytes);
- ``static-checker/dump{1,2}.json``: copied from QEMU's
  ``tests/vmstate-static-checker-data``;
- ``MANIFEST.json``: QEMU version, command lines, sizes and sha256 of all of
  the above (``tests/test_qemu_data.py`` checks the files against it).

Run ``python3 tests/data/qemu/make_data.py [--out DIR] [--qemu-src DIR]``.
It needs qemu-system-x86_64 7.2 (Debian bookworm: ``apt-get install
qemu-system-x86``) and QEMU 7.2's sources for the analyzer (see
``--qemu-src``).  Rerunning is safe: every file is replaced atomically and
files of streams or dumps no longer listed here are removed.  Streams differ
between runs (timers, guest timing), so a rerun changes their sha256s; the
dumps and copied files do not change.

Plain standard-library Python on purpose, so it runs without the package
being installed; it therefore carries its own small atomic-write helper.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_QEMU_SRC = Path("/root/src/qemu-7.2.0")
QEMU_SERIES = "7.2"
GET_SOURCES = (
    "get QEMU 7.2's sources with `apt-get source qemu=1:7.2+dfsg-7+deb12u18` (needs a "
    "deb-src line for Debian bookworm; tests/data/qemu/README.md shows one) and pass "
    "the unpacked directory as --qemu-src"
)

# Options every stream shares.  Paths are relative: QEMU runs in a private
# temporary directory, so the recorded command lines contain no temp paths.
COMMON = ["-accel", "tcg", "-m", "64", "-nographic", "-nodefaults", "-no-user-config"]
# SeaBIOS logs to port 0x402; "No bootable device." marks the end of POST, so
# PCI is programmed and the guest idles.  isa-debugcon has no migration state.
SEABIOS_LOG = "seabios.log"
DEBUGCON = [
    "-chardev",
    f"file,id=seabios,path={SEABIOS_LOG}",
    "-device",
    "isa-debugcon,iobase=0x402,chardev=seabios",
]
QMP_SOCKET = "qmp.sock"
QMP = ["-qmp", f"unix:{QMP_SOCKET},server=on,wait=off"]
POST_DONE = b"No bootable device."

PC_2_0_DEVICES = [
    "-netdev user,id=n0,restrict=on",
    "-device e1000,netdev=n0,romfile=,addr=0x2",
    "-netdev user,id=n1,restrict=on",
    "-device virtio-net-pci,netdev=n1,romfile=,addr=0x3",
    "-device i6300esb,addr=0x4",
]

# name -> machine-specific options, one "-option value" per string.  NIC
# option ROMs are off (romfile=) so iPXE neither grows the stream nor makes
# the NIC state depend on DHCP timing.
STREAMS: dict[str, list[str]] = {
    "pc-minimal": [
        "-M pc-i440fx-7.2",
        "-netdev user,id=n0,restrict=on",
        "-device rtl8139,netdev=n0,romfile=,addr=0x2",
    ],
    "pc-e1000-usb-hda": [
        "-M pc-i440fx-7.2",
        "-device VGA,vgamem_mb=1,addr=0x2",
        "-netdev user,id=n0,restrict=on",
        "-device e1000,netdev=n0,romfile=,addr=0x3",
        "-device piix3-usb-uhci,id=uhci,addr=0x4",
        "-device usb-tablet,bus=uhci.0",
        "-device usb-ehci,id=ehci,addr=0x5",
        "-device usb-kbd,bus=ehci.0",
        "-audiodev none,id=snd0",
        "-device intel-hda,id=hda,addr=0x6",
        "-device hda-duplex,bus=hda.0,audiodev=snd0",
        "-drive if=none,id=cd0,media=cdrom",
        "-device ide-cd,drive=cd0,bus=ide.1,unit=0",
        "-device floppy,unit=0",
    ],
    "q35-e1000e-virtio": [
        "-M pc-q35-7.2",
        "-netdev user,id=n0,restrict=on",
        "-netdev user,id=n1,restrict=on",
        "-device e1000e,netdev=n0,romfile=,addr=0x2",
        "-device virtio-net-pci,netdev=n1,romfile=,addr=0x3",
        "-drive if=none,id=d0,file=null-co://,format=raw,read-only=on",
        "-device virtio-blk-pci,drive=d0,addr=0x4",
        "-device qemu-xhci,id=xhci,addr=0x5",
        "-device usb-kbd,bus=xhci.0",
    ],
    "q35-pcie-root-ports": [
        "-M pc-q35-7.2",
        "-device pcie-root-port,id=rp1,chassis=1,slot=1,bus=pcie.0,addr=0x2",
        "-device virtio-rng-pci,bus=rp1",
        "-device pcie-root-port,id=rp2,chassis=2,slot=2,bus=pcie.0,addr=0x3",
        "-audiodev none,id=snd0",
        "-device ich9-intel-hda,id=hda,bus=rp2",
        "-device hda-duplex,bus=hda.0,audiodev=snd0",
        "-device pcie-root-port,id=rp3,chassis=3,slot=3,bus=pcie.0,addr=0x4",
        "-device ahci,id=sata,bus=rp3",
        "-device pcie-root-port,id=rp4,chassis=4,slot=4,bus=pcie.0,addr=0x5",
        "-device pcie-pci-bridge,id=br1,bus=rp4",
        "-netdev user,id=n0,restrict=on",
        "-device rtl8139,netdev=n0,romfile=,bus=br1,addr=0x1",
    ],
    # An old machine type: its compat properties turn off the configuration
    # section, section footers and the global-state section.  Machines up to
    # 2.2 also suppress the trailing vmdesc JSON, without which the analyzer
    # cannot read a stream; this one turns it back on.
    "pc-2.0-e1000-watchdog": ["-M pc-i440fx-2.0,suppress-vmdesc=off", *PC_2_0_DEVICES],
    # The same guest as QEMU writes it by default: no vmdesc at all.
    "pc-2.0-e1000-watchdog-novmdesc": ["-M pc-i440fx-2.0", *PC_2_0_DEVICES],
}
# Streams without vmdesc: QEMU's analyzer cannot read them, so they have no
# .state.json/.desc.json; their twin above is the reference for their layout.
NO_VMDESC = {"pc-2.0-e1000-watchdog-novmdesc"}

DUMPS = ["pc-i440fx-7.2", "pc-q35-7.2", "pc-i440fx-2.0"]
GZIP_ABOVE = 1 << 20  # dumps larger than this are stored gzipped
STATIC_CHECKER_FILES = ["dump1.json", "dump2.json"]

POST_TIMEOUT = 120.0  # seconds for SeaBIOS to finish under TCG
MIGRATE_TIMEOUT = 120.0


class GenerationError(Exception):
    """Generation cannot go on; the message says why."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside *path* then rename, so a failed run leaves old data intact."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Qmp:
    """Minimal line-oriented QMP client: commands in order, events skipped."""

    def __init__(self, path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if proc.poll() is not None:
                    raise GenerationError(f"QEMU exited with status {proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise GenerationError(f"QMP socket {path} never appeared") from None
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")
        self._read()  # greeting
        self.command("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise GenerationError("QEMU closed the QMP connection")
        return json.loads(line)

    def command(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        message: dict[str, Any] = {"execute": name}
        if arguments is not None:
            message["arguments"] = arguments
        self.file.write(json.dumps(message).encode() + b"\n")
        self.file.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                continue
            if "error" in reply:
                raise GenerationError(f"QMP {name}: {reply['error']}")
            return reply["return"]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def qemu_version(qemu: str) -> str:
    line = subprocess.run(
        [qemu, "--version"], check=True, capture_output=True, text=True
    ).stdout.splitlines()[0]
    if f"version {QEMU_SERIES}." not in line:
        raise GenerationError(f"{qemu} is not QEMU {QEMU_SERIES}: {line!r}")
    return line


def wait_for_post(log: Path, proc: subprocess.Popen[bytes], name: str) -> None:
    """Block until SeaBIOS reports the end of POST on its debug port."""
    deadline = time.monotonic() + POST_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise GenerationError(f"{name}: QEMU exited early with status {proc.returncode}")
        if log.exists() and POST_DONE in log.read_bytes():
            return
        time.sleep(0.1)
    raise GenerationError(f"{name}: SeaBIOS did not finish within {POST_TIMEOUT:.0f} s")


def make_stream(qemu: str, name: str, options: list[str], work: Path) -> tuple[bytes, list[str]]:
    """Boot the guest to the end of POST and return its migration stream."""
    argv = [word for option in options for word in option.split(" ", 1)]
    command = [qemu, *COMMON, *argv, *DEBUGCON, *QMP]
    stream = work / f"{name}.mig"
    qemu_log = work / "qemu.log"
    with qemu_log.open("wb") as log:
        proc = subprocess.Popen(
            command, cwd=work, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        qmp = Qmp(work / QMP_SOCKET, proc, timeout=30.0)
        wait_for_post(work / SEABIOS_LOG, proc, name)
        qmp.command("stop")
        qmp.command("migrate", {"uri": f"exec:cat > {stream.name}"})
        deadline = time.monotonic() + MIGRATE_TIMEOUT
        while (status := qmp.command("query-migrate").get("status")) != "completed":
            if status in ("failed", "cancelled") or time.monotonic() > deadline:
                raise GenerationError(f"{name}: migration ended as {status!r}")
            time.sleep(0.05)
        qmp.command("quit")
        qmp.close()
        proc.wait(timeout=30)
    except BaseException as exc:
        proc.kill()
        proc.wait()
        output = qemu_log.read_text(errors="replace").strip()
        if isinstance(exc, GenerationError) and output:
            raise GenerationError(f"{exc}\nQEMU said:\n{output}") from exc
        raise
    return stream.read_bytes(), [Path(qemu).name, *command[1:]]


def analyze(analyzer: Path, stream: Path, mode: str) -> bytes:
    """QEMU's analyzer output for *stream* (``-d state`` or ``-d desc``)."""
    result = subprocess.run(
        [sys.executable, str(analyzer), "-f", str(stream), "-d", mode], capture_output=True
    )
    if result.returncode != 0:
        raise GenerationError(
            f"analyze-migration.py -d {mode} failed on {stream.name}:\n"
            + result.stderr.decode(errors="replace")
        )
    return result.stdout


def pci_configs(node: Any) -> list[bytes]:
    """Every PCI config space in an analyzer state tree (a PCIDevice's "config[k]")."""
    if isinstance(node, list):
        return [config for value in node for config in pci_configs(value)]
    if not isinstance(node, dict):
        return []
    found = []
    for key, value in node.items():
        if key.startswith("config") and isinstance(value, str) and "version_id" in node:
            found.append(bytes.fromhex(value))
        else:
            found.extend(pci_configs(value))
    return found


def is_programmed(config: bytes) -> bool:
    """COMMAND enables I/O or memory decoding and some BAR holds an address."""
    command = int.from_bytes(config[4:6], "little")
    bar_count = {0: 6, 1: 2}.get(config[0x0E] & 0x7F, 0)  # by header type
    bars = [int.from_bytes(config[0x10 + 4 * i : 0x14 + 4 * i], "little") for i in range(bar_count)]
    return bool(command & 0x3) and any(bar & ~0xF for bar in bars)


def programmed_devices(state: dict[str, Any]) -> list[str]:
    """Sections (``"<idstr> (<section id>)"``) holding a PCI config the firmware programmed."""
    return [
        key
        for key, section in state.items()
        if any(is_programmed(config) for config in pci_configs(section))
    ]


def dump_vmstate(qemu: str, machine: str, work: Path) -> tuple[bytes, list[str]]:
    target = work / f"dump-{machine}.json"
    command = [qemu, "-M", machine, "-nodefaults", "-accel", "tcg", "-dump-vmstate", target.name]
    subprocess.run(command, cwd=work, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    json.loads(target.read_bytes())  # must be complete JSON
    return target.read_bytes(), [Path(qemu).name, *command[1:]]


def gzip_stable(data: bytes) -> bytes:
    """gzip with no name and mtime 0: same input, same bytes."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return out.getvalue()


def file_entry(name: str, data: bytes) -> dict[str, Any]:
    return {"file": name, "size": len(data), "sha256": sha256(data)}


def remove_stale(out: Path, keep: set[str]) -> None:
    """Drop generated files of streams or dumps that are no longer produced."""
    for pattern in ("*.mig", "*.state.json", "*.desc.json", "dump-*.json", "dump-*.json.gz"):
        for path in out.glob(pattern):
            if path.name not in keep:
                path.unlink()


def generate(out: Path, qemu: str, qemu_src: Path) -> None:
    """Make every file in memory first, so a failed run leaves *out* untouched."""
    analyzer = qemu_src / "scripts" / "analyze-migration.py"
    checker_data = qemu_src / "tests" / "vmstate-static-checker-data"
    if not analyzer.is_file() or not checker_data.is_dir():
        raise GenerationError(f"{qemu_src} does not hold QEMU's sources; {GET_SOURCES}")
    manifest: dict[str, Any] = {
        "generator": "tests/data/qemu/make_data.py",
        "qemu_version": qemu_version(qemu),
        "streams": {},
        "dumps": {},
        "static_checker": {},
    }
    files: dict[str, bytes] = {}  # path relative to out -> content

    def add(name: str, data: bytes) -> dict[str, Any]:
        files[name] = data
        return file_entry(name, data)

    for name, options in STREAMS.items():
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"vmstate-{name}-") as tmp:
            work = Path(tmp)
            data, command = make_stream(qemu, name, options, work)
            entry = {
                **add(f"{name}.mig", data),
                "command": command,
                "migrate_uri": f"exec:cat > {name}.mig",
                "vmdesc": name not in NO_VMDESC,
            }
            if name in NO_VMDESC:
                if not data.endswith(b"\0"):  # the EOF marker is last: no vmdesc follows
                    raise GenerationError(f"{name}: expected a stream without vmdesc")
            else:
                state = analyze(analyzer, work / f"{name}.mig", "state")
                programmed = programmed_devices(json.loads(state))
                if not programmed:
                    raise GenerationError(f"{name}: the firmware programmed no PCI device")
                entry["programmed_pci"] = programmed
                entry["state_json"] = add(f"{name}.state.json", state)
                entry["desc_json"] = add(
                    f"{name}.desc.json", analyze(analyzer, work / f"{name}.mig", "desc")
                )
        manifest["streams"][name] = entry
        print(f"{name}: {len(data)} bytes, {time.monotonic() - started:.1f} s", file=sys.stderr)

    for machine in DUMPS:
        with tempfile.TemporaryDirectory(prefix="vmstate-dump-") as tmp:
            raw, command = dump_vmstate(qemu, machine, Path(tmp))
        entry = {"machine": machine, "command": command}
        if len(raw) > GZIP_ABOVE:
            entry |= add(f"dump-{machine}.json.gz", gzip_stable(raw))
            entry |= {"json_size": len(raw), "json_sha256": sha256(raw)}
        else:
            entry |= add(f"dump-{machine}.json", raw)
        manifest["dumps"][machine] = entry

    for filename in STATIC_CHECKER_FILES:
        manifest["static_checker"][filename] = {
            **add(f"static-checker/{filename}", (checker_data / filename).read_bytes()),
            "origin": f"QEMU 7.2.0 tests/vmstate-static-checker-data/{filename}",
            "license": "GPL-2.0-or-later",
        }

    (out / "static-checker").mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        write_atomic(out / name, data)
    remove_stale(out, set(files))
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    write_atomic(out / "MANIFEST.json", text.encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=HERE, help="output directory (default: %(default)s)"
    )
    parser.add_argument(
        "--qemu-src",
        type=Path,
        default=DEFAULT_QEMU_SRC,
        help="QEMU 7.2 source tree holding scripts/analyze-migration.py (default: %(default)s)",
    )
    parser.add_argument(
        "--qemu",
        default="qemu-system-x86_64",
        help="QEMU 7.2 system emulator (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if shutil.which(args.qemu) is None:
        parser.error(f"{args.qemu} not found; on Debian: apt-get install qemu-system-x86")
    started = time.monotonic()
    try:
        generate(args.out.resolve(), args.qemu, args.qemu_src)
    except GenerationError as exc:
        print(f"make_data.py: {exc}", file=sys.stderr)
        return 1
    print(f"done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
