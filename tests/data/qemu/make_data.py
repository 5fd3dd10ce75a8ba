#!/usr/bin/env python3
"""Regenerate the real QEMU test data: QEMU 7.2 into this directory, QEMU 10.0 into
``../qemu-10.0``.

Why: the library must read what QEMU really writes, so the tests compare it
against streams and descriptions produced by QEMU itself and against what
QEMU's own analyzer (``scripts/analyze-migration.py`` of the same QEMU) makes
of them.

What it writes into each series' directory:

- ``<name>.mig``: a migration stream of a small TCG guest (``-m 64``) stopped
  after SeaBIOS has enumerated and programmed the PCI devices and given up
  booting ("No bootable device." on its debug port), saved with QMP ``stop``
  then ``migrate`` to ``exec:cat > <name>.mig`` (or ``file:`` for mapped-ram,
  stored as ``<name>.mig.xz``: the file is sparse and 73 MB long);
- streams a second QEMU wrote after loading one of the above with
  ``-incoming`` (``"reload"``): the same device state and RAM written again
  another way, the reference for the streams QEMU's analyzer cannot read;
- ``<name>.state.json`` / ``<name>.desc.json``: that QEMU's analyzer output for
  the stream with ``-d state`` / ``-d desc``, byte for byte as it prints them,
  for the streams it can read (the manifest records its error for the others);
- ``dump-<machine>.json``: ``-dump-vmstate`` of each machine in the series'
  ``dumps``, verbatim; one over 1 MiB is stored as ``.json.gz`` instead (gzip
  with mtime 0, so the same QEMU gives the same bytes);
- (7.2) ``static-checker/dump{1,2}.json``: copied from QEMU's
  ``tests/vmstate-static-checker-data``;
- ``MANIFEST.json``: QEMU version, command lines, sizes and sha256 of all of
  the above (``tests/test_qemu_data.py`` checks the files against it).

Run ``python3 tests/data/qemu/make_data.py [--series 7.2|10.0]`` from a
checkout with the test dependencies installed (``pip install -e '.[test]'``):
QEMU and its scripts come from ``tests/peers`` exactly as the tests get them
(7.2 is the system's ``qemu-system-x86``, 10.0 is fetched from
bookworm-backports into ``~/.cache/vmstate-qemu``).  Rerunning is safe: every
file is replaced atomically and files of streams or dumps no longer listed
here are removed.  Streams differ between runs (timers, guest timing), so a
rerun changes their sha256s; the dumps and copied files do not change.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/, for tests/peers

from peers.apt import PeerError  # noqa: E402
from peers.guests import PC_2_0_DEVICES, PC_STORAGE_USB, Q35_SMALL, Q35_STORAGE_USB  # noqa: E402
from peers.migration import Vm, loaded, split, target_uri  # noqa: E402
from peers.qemu import Qemu, backports_qemu, system_qemu  # noqa: E402

from vmstate._files import write_atomic  # noqa: E402
from vmstate.stream import find_vmdesc  # noqa: E402

# A series: its QEMU, where its data goes, and name -> stream.  A stream is a guest
# booted and saved ("options", optionally "capabilities" and "uri": "file"), or one
# loaded into a guest of "options" and saved again ("reload": the source stream).
SERIES: dict[str, dict[str, Any]] = {
    "7.2": {
        "directory": HERE,
        "streams": {
            "pc-minimal": {
                "options": [
                    "-M pc-i440fx-7.2",
                    "-netdev user,id=n0,restrict=on",
                    "-device rtl8139,netdev=n0,romfile=,addr=0x2",
                ]
            },
            "pc-e1000-usb-hda": {"options": ["-M pc-i440fx-7.2", *PC_STORAGE_USB[:13]]},
            "q35-e1000e-virtio": {
                "options": [
                    "-M pc-q35-7.2",
                    "-netdev user,id=n0,restrict=on",
                    "-netdev user,id=n1,restrict=on",
                    "-device e1000e,netdev=n0,romfile=,addr=0x2",
                    "-device virtio-net-pci,netdev=n1,romfile=,addr=0x3",
                    "-drive if=none,id=d0,file=null-co://,format=raw,read-only=on",
                    "-device virtio-blk-pci,drive=d0,addr=0x4",
                    "-device qemu-xhci,id=xhci,addr=0x5",
                    "-device usb-kbd,bus=xhci.0",
                ]
            },
            "q35-pcie-root-ports": {
                "options": [
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
                ]
            },
            # An old machine type: its compat properties turn off the configuration
            # section, section footers and the global-state section.  Machines up to
            # 2.2 also suppress the trailing vmdesc JSON, without which the analyzer
            # cannot read a stream; this one turns it back on.
            "pc-2.0-e1000-watchdog": {
                "options": ["-M pc-i440fx-2.0,suppress-vmdesc=off", *PC_2_0_DEVICES]
            },
            # The same guest as QEMU writes it by default: no vmdesc at all.
            "pc-2.0-e1000-watchdog-novmdesc": {"options": ["-M pc-i440fx-2.0", *PC_2_0_DEVICES]},
        },
        "dumps": ["pc-i440fx-7.2", "pc-q35-7.2", "pc-i440fx-2.0"],
        "static_checker": ["dump1.json", "dump2.json"],
    },
    "10.0": {
        "directory": HERE.parent / "qemu-10.0",
        "streams": {
            # today's machine types, storage and USB controllers of both chipsets
            "pc-10.0-storage-usb": {"options": ["-M pc-i440fx-10.0", *PC_STORAGE_USB]},
            "q35-10.0-storage-usb": {"options": ["-M pc-q35-10.0", *Q35_STORAGE_USB]},
            # machine types pinned to 7.2, as a host keeps them across an upgrade
            "pc-7.2-storage-usb": {"options": ["-M pc-i440fx-7.2", *PC_STORAGE_USB]},
            "q35-7.2-storage-usb": {"options": ["-M pc-q35-7.2", *Q35_STORAGE_USB]},
            # mapped-ram (QEMU 9.0+): RAM at fixed offsets of a file: URI's file
            "q35-10.0-mapped-ram": {
                "options": ["-M pc-q35-10.0", *Q35_SMALL],
                "capabilities": ["mapped-ram"],
                "uri": "file",
            },
            # ... loaded by QEMU and written again as an ordinary stream: the same RAM
            "q35-10.0-mapped-ram-reloaded": {
                "options": ["-M pc-q35-10.0", *Q35_SMALL],
                "reload": "q35-10.0-mapped-ram",
            },
            # no vmdesc: the machine says so
            "q35-10.0-novmdesc": {"options": ["-M pc-q35-10.0,suppress-vmdesc=on", *Q35_SMALL]},
            # ... loaded by QEMU and written again with one: the same device state
            "q35-10.0-novmdesc-reloaded": {
                "options": ["-M pc-q35-10.0", *Q35_SMALL],
                "reload": "q35-10.0-novmdesc",
            },
            # postcopy-ram on (never started: there is no destination): the stream
            # opens a return path and advises postcopy before the RAM
            "q35-10.0-postcopy-advised": {
                "options": ["-M pc-q35-10.0", *Q35_SMALL],
                "capabilities": ["postcopy-ram"],
            },
        },
        "dumps": ["pc-i440fx-10.0", "pc-q35-10.0", "pc-i440fx-7.2", "pc-q35-7.2"],
        "static_checker": [],
    },
}
GZIP_ABOVE = 1 << 20  # dumps larger than this are stored gzipped
EXCEPTION = re.compile(r"^[A-Za-z.]*(Error|Exception): ")


class GenerationError(Exception):
    """Generation cannot go on; the message says why."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def require(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise GenerationError(f"{name} is not installed (.ci/run installs what the tests need)")
    return path


def command_line(qemu: Qemu, vm: Vm) -> list[str]:
    """A guest's command line as recorded: the binary's name, then QEMU's options (an
    unpacked QEMU's namespace wrapper and -L folder left out)."""
    return ["qemu-system-x86_64", *vm.command[len(qemu.prefix) :]]


def analyze(qemu: Qemu, stream: Path, mode: str) -> tuple[bytes | None, str]:
    """QEMU's analyzer output for *stream* (``-d state`` or ``-d desc``), or its error."""
    result = subprocess.run(
        [sys.executable, str(qemu.analyzer), "-f", str(stream), "-d", mode],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        # the first exception of the traceback is the cause (10.0 wraps it in another)
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        cause = next((line for line in lines if EXCEPTION.match(line)), lines[-1])
        return None, cause[:200]
    return result.stdout, ""


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
    patterns = ("*.mig", "*.mig.xz", "*.state.json", "*.desc.json", "dump-*.json", "dump-*.json.gz")
    for pattern in patterns:
        for path in out.glob(pattern):
            if path.name not in keep:
                path.unlink()


class Generator:
    """Makes one series' files in memory first, so a failed run leaves them untouched."""

    def __init__(self, qemu: Qemu, series: dict[str, Any]) -> None:
        self.qemu = qemu
        self.series = series
        self.files: dict[str, bytes] = {}
        self.work = Path(tempfile.mkdtemp(prefix=f"vmstate-data-{qemu.series}-"))

    def add(self, name: str, data: bytes) -> dict[str, Any]:
        self.files[name] = data
        return file_entry(name, data)

    def stream(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        options = split(spec["options"])
        capabilities = spec.get("capabilities", [])
        uri = spec.get("uri", "exec")
        target = self.work / f"{name}.mig"
        entry: dict[str, Any] = {"options": spec["options"], "capabilities": capabilities}
        if "reload" in spec:
            source = self.work / f"{spec['reload']}.mig"
            load_caps = self.series["streams"][spec["reload"]].get("capabilities", [])
            load_uri = f"file:{source}" if "mapped-ram" in load_caps else f"exec:cat {source}"
            with loaded(self.qemu, options, self.work / name, load_uri, load_caps) as vm:
                vm.capabilities(load_caps, state=False)
                vm.save(target_uri(target, uri), capabilities)
                entry["reload"] = {"source": spec["reload"], "capabilities": load_caps}
                entry["command"] = command_line(self.qemu, vm)
        else:
            with Vm(self.qemu, options, self.work / name) as vm:
                vm.wait_for_post()
                postcopy = "postcopy-ram" in capabilities
                vm.save(target_uri(target, uri), capabilities, written=target if postcopy else None)
                entry["command"] = command_line(self.qemu, vm)
        entry["migrate_uri"] = target_uri(Path(target.name), uri)
        data = target.read_bytes()
        if uri == "file":
            entry |= self.add(f"{name}.mig.xz", lzma.compress(data, preset=9))
            entry |= {"mig_size": len(data), "mig_sha256": sha256(data)}
        else:
            entry |= self.add(f"{name}.mig", data)
        state, error = analyze(self.qemu, target, "state")
        entry["vmdesc"] = find_vmdesc(data) is not None
        if state is None:
            entry["analyzer_error"] = error
            return entry
        programmed = programmed_devices(json.loads(state))
        if not programmed:
            raise GenerationError(f"{name}: the firmware programmed no PCI device")
        entry["programmed_pci"] = programmed
        entry["state_json"] = self.add(f"{name}.state.json", state)
        desc, error = analyze(self.qemu, target, "desc")
        if desc is None:
            raise GenerationError(f"{name}: the analyzer read the state but not the desc: {error}")
        entry["desc_json"] = self.add(f"{name}.desc.json", desc)
        return entry

    def dump(self, machine: str) -> dict[str, Any]:
        target = self.work / f"dump-{machine}.json"
        self.qemu.dump_vmstate(machine, target)
        raw = target.read_bytes()
        json.loads(raw)  # must be complete JSON
        entry: dict[str, Any] = {
            "machine": machine,
            "command": [
                "qemu-system-x86_64",
                "-M",
                machine,
                "-nodefaults",
                "-accel",
                "tcg",
                "-dump-vmstate",
                target.name,
            ],
        }
        if len(raw) > GZIP_ABOVE:
            entry |= self.add(f"dump-{machine}.json.gz", gzip_stable(raw))
            entry |= {"json_size": len(raw), "json_sha256": sha256(raw)}
        else:
            entry |= self.add(f"dump-{machine}.json", raw)
        return entry

    def run(self) -> None:
        out = self.series["directory"]
        manifest: dict[str, Any] = {
            "generator": "tests/data/qemu/make_data.py",
            "qemu_version": self.qemu.version,
            "qemu_series": self.qemu.series,
            "streams": {},
            "dumps": {},
            "static_checker": {},
        }
        try:
            for name, spec in self.series["streams"].items():
                started = time.monotonic()
                manifest["streams"][name] = entry = self.stream(name, spec)
                size = entry.get("mig_size", entry["size"])
                print(f"{name}: {size} bytes, {time.monotonic() - started:.1f} s", file=sys.stderr)
            for machine in self.series["dumps"]:
                manifest["dumps"][machine] = self.dump(machine)
            checker = self.qemu.source / "tests" / "vmstate-static-checker-data"
            for filename in self.series["static_checker"]:
                manifest["static_checker"][filename] = {
                    **self.add(f"static-checker/{filename}", (checker / filename).read_bytes()),
                    "origin": f"QEMU {self.qemu.series}.0 tests/vmstate-static-checker-data/{filename}",
                    "license": "GPL-2.0-or-later",
                }
        except PeerError as e:
            raise GenerationError(str(e)) from e
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        if self.series["static_checker"]:
            (out / "static-checker").mkdir(exist_ok=True)
        for name, data in self.files.items():
            write_atomic(out / name, data)
        remove_stale(out, set(self.files))
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        write_atomic(out / "MANIFEST.json", text.encode())


def peer(series: str) -> Qemu:
    try:
        return system_qemu(require) if series == "7.2" else backports_qemu(require, series)
    except PeerError as e:
        raise GenerationError(f"QEMU {series}: {e}") from e


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--series", choices=sorted(SERIES), action="append", help="only this series (repeatable)"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        for series in args.series or sorted(SERIES):
            qemu = peer(series)
            print(f"QEMU {qemu.version}: {shlex.join(qemu.command())}", file=sys.stderr)
            Generator(qemu, SERIES[series]).run()
    except GenerationError as exc:
        print(f"make_data.py: {exc}", file=sys.stderr)
        return 1
    print(f"done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
