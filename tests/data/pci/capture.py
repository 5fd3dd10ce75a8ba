#!/usr/bin/env python3
"""Capture the PCI config spaces that tests/test_pci_*.py decode.

Kept beside the data so every ``.bin`` here can be made again:

* ``host-*.bin``: this machine's own devices, ``/sys/bus/pci/devices/*/config``
  (run as root, or the kernel hides everything past byte 64).
* ``qemu-*.bin``: QEMU's emulated devices.  QEMU (``qemu-system-x86_64``, TCG) boots
  the q35 and pc machines with many devices, SeaBIOS programs BARs and bridges, then
  QMP ``stop`` + ``migrate exec:cat > FILE`` writes a migration stream and
  QEMU's ``scripts/analyze-migration.py`` turns it into JSON.  Each device section's
  ``PCIDevice`` ``config`` buffer is the 256 or 4096 bytes QEMU migrates; virtio
  devices keep it inside their opaque ``virtio`` field (``pci_device_save``:
  be32 version_id, config, 4 x be32 irq_state).  Devices that block migration
  (nvme, here with SR-IOV) are read through q35's ECAM window with HMP ``xp``.

``bad-*.bin`` and ``odd-*.bin`` are not captured but derived, one small edit each,
from the captures (``--malformed``, see ``make_malformed``): broken capability chains
for the bounded-walk tests.

Usage: python3 tests/data/pci/capture.py [--host] [--qemu] [--malformed] [--qemu-src DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from vmstate._files import write_atomic

HERE = Path(__file__).resolve().parent
ECAM_BASE = 0xB000_0000  # SeaBIOS programs q35's PCIEXBAR here (MCH_HOST_BRIDGE_PCIEXBAR_DEFAULT)
BOOT_TIMEOUT = 120.0  # seconds for SeaBIOS under TCG to give up booting


@attrs.frozen
class Dev:
    """One device to capture: output name, where QEMU files its section, how to create it."""

    name: str
    #: qdev path of the device's migration section ("0000:00:04.0:00.0"), or qdev id for ECAM
    path: str
    #: -device argument ("" for devices the machine creates itself)
    args: str = ""
    #: the section keeps config inside the opaque "virtio" field; True when it is 4096 bytes
    virtio_express: bool | None = None


def _port(slot: int, chassis: int, kind: str = "pcie-root-port", pid: str = "") -> Dev:
    return Dev("", "", f"{kind},id={pid},addr={slot:02x}.0,chassis={chassis},slot={chassis}")


Q35: tuple[Dev, ...] = (
    Dev("qemu-q35-mch", "0000:00:00.0"),
    Dev("qemu-q35-ich9-lpc", "0000:00:1f.0"),
    Dev("qemu-q35-ich9-ahci", "0000:00:1f.2"),
    Dev("qemu-q35-ich9-smbus", "0000:00:1f.3"),
    Dev("qemu-q35-e1000e-rciep", "0000:00:02.0", "e1000e,addr=02.0,netdev=n0"),
    Dev("qemu-q35-virtio-net", "0000:00:03.0", "virtio-net-pci,addr=03.0,netdev=n1", False),
    Dev("qemu-q35-pcie-root-port", "0000:00:04.0", _port(4, 1, pid="rp1").args),
    Dev("qemu-q35-virtio-blk-pcie", "0000:00:04.0:00.0", "virtio-blk-pci,bus=rp1,drive=d0", True),
    Dev("qemu-q35-ioh3420", "0000:00:05.0", _port(5, 2, "ioh3420", "rp2").args),
    Dev("qemu-q35-e1000e-pcie", "0000:00:05.0:00.0", "e1000e,bus=rp2,netdev=n2"),
    Dev("", "", _port(6, 3, pid="rp3").args),
    Dev("qemu-q35-x3130-upstream", "0000:00:06.0:00.0", "x3130-upstream,id=up1,bus=rp3"),
    Dev(
        "qemu-q35-xio3130-downstream",
        "0000:00:06.0:00.0:00.0",
        "xio3130-downstream,id=dn1,bus=up1,chassis=4,slot=4",
    ),
    Dev("qemu-q35-qemu-xhci-pcie", "0000:00:06.0:00.0:00.0:00.0", "qemu-xhci,bus=dn1"),
    Dev("", "", _port(7, 5, pid="rp4").args),
    Dev("qemu-q35-pcie-pci-bridge", "0000:00:07.0:00.0", "pcie-pci-bridge,id=ppb,bus=rp4"),
    Dev("qemu-q35-lsi53c895a", "0000:00:07.0:00.0:01.0", "lsi53c895a,bus=ppb,addr=01.0"),
    Dev("qemu-q35-ich9-intel-hda", "0000:00:08.0", "ich9-intel-hda,addr=08.0"),
    Dev("qemu-q35-megasas-gen2-rciep", "0000:00:09.0", "megasas-gen2,addr=09.0"),
    Dev("qemu-q35-vmxnet3-rciep", "0000:00:0a.0", "vmxnet3,addr=0a.0,netdev=n3"),
    Dev("qemu-q35-pvscsi-rciep", "0000:00:0b.0", "pvscsi,addr=0b.0"),
    Dev("", "", _port(0xC, 6, pid="rp5").args),
    Dev("qemu-q35-virtio-net-pcie", "0000:00:0c.0:00.0", "virtio-net-pci,bus=rp5,netdev=n4", True),
    Dev("qemu-q35-ich9-usb-ehci1", "0000:00:0d.0", "ich9-usb-ehci1,addr=0d.0"),
    Dev("qemu-q35-mptsas1068", "0000:00:0e.0", "mptsas1068,addr=0e.0"),
    Dev("qemu-q35-pci-bridge", "0000:00:0f.0", "pci-bridge,id=pb1,addr=0f.0,chassis_nr=7"),
    Dev("qemu-q35-virtio-rng", "0000:00:0f.0:01.0", "virtio-rng-pci,bus=pb1,addr=01.0", False),
    Dev("", "", _port(0x10, 8, pid="rp6").args),
    Dev("qemu-q35-vmxnet3-pcie", "0000:00:10.0:00.0", "vmxnet3,bus=rp6,netdev=n5"),
    Dev("", "", _port(0x11, 9, pid="rp7").args),
    Dev("qemu-q35-megasas-gen2-pcie", "0000:00:11.0:00.0", "megasas-gen2,bus=rp7"),
    Dev("qemu-q35-i82801b11-bridge", "0000:00:12.0", "i82801b11-bridge,addr=12.0"),
)
Q35_EXTRA = (
    "-netdev user,id=n0 -netdev user,id=n1 -netdev user,id=n2 -netdev user,id=n3 "
    "-netdev user,id=n4 -netdev user,id=n5 -drive if=none,id=d0,format=raw,file=null-co://"
)

#: nvme blocks migration: read through ECAM; ``path`` is the qdev id
Q35_NVME: tuple[Dev, ...] = (
    Dev("", "", _port(4, 1, pid="rp1").args),
    Dev("", "", "nvme-subsys,id=s0"),
    Dev(
        "qemu-q35-nvme-sriov",
        "nvme0",
        "nvme,id=nvme0,bus=rp1,subsys=s0,serial=cafe0001,sriov_max_vfs=4,"
        "sriov_vq_flexible=8,sriov_vi_flexible=4,max_ioqpairs=10,msix_qsize=5",
    ),
    Dev("qemu-q35-nvme-rciep", "nvme1", "nvme,id=nvme1,addr=05.0,serial=cafe0002"),
)

PC: tuple[Dev, ...] = (
    Dev("qemu-pc-i440fx", "0000:00:00.0"),
    Dev("qemu-pc-piix3", "0000:00:01.0"),
    Dev("qemu-pc-piix3-ide", "0000:00:01.1"),
    Dev("qemu-pc-piix4-pm", "0000:00:01.3"),
    Dev("qemu-pc-vga", "0000:00:02.0", "VGA,addr=02.0"),
    Dev("qemu-pc-e1000", "0000:00:03.0", "e1000,addr=03.0,netdev=n0"),
    Dev("qemu-pc-rtl8139", "0000:00:04.0", "rtl8139,addr=04.0,netdev=n1"),
    Dev("qemu-pc-pcnet", "0000:00:05.0", "pcnet,addr=05.0,netdev=n2"),
    Dev("qemu-pc-ne2k", "0000:00:06.0", "ne2k_pci,addr=06.0,netdev=n3"),
    Dev("qemu-pc-i82559er", "0000:00:07.0", "i82559er,addr=07.0,netdev=n4"),
    Dev("qemu-pc-lsi53c895a", "0000:00:08.0", "lsi53c895a,addr=08.0"),
    Dev("qemu-pc-megasas", "0000:00:09.0", "megasas,addr=09.0"),
    Dev("qemu-pc-am53c974", "0000:00:0a.0", "am53c974,addr=0a.0"),
    Dev("qemu-pc-intel-hda", "0000:00:0b.0", "intel-hda,addr=0b.0"),
    Dev("qemu-pc-ac97", "0000:00:0c.0", "AC97,addr=0c.0"),
    Dev("qemu-pc-es1370", "0000:00:0d.0", "ES1370,addr=0d.0"),
    Dev("qemu-pc-piix3-uhci", "0000:00:0e.0", "piix3-usb-uhci,addr=0e.0"),
    Dev("qemu-pc-usb-ehci", "0000:00:0f.0", "usb-ehci,addr=0f.0"),
    Dev("qemu-pc-virtio-net", "0000:00:10.0", "virtio-net-pci,addr=10.0,netdev=n5", False),
    Dev("qemu-pc-virtio-blk", "0000:00:11.0", "virtio-blk-pci,addr=11.0,drive=d0", False),
    Dev("qemu-pc-virtio-scsi", "0000:00:12.0", "virtio-scsi-pci,addr=12.0", False),
    Dev("qemu-pc-virtio-balloon", "0000:00:13.0", "virtio-balloon-pci,addr=13.0", False),
    Dev("qemu-pc-virtio-serial", "0000:00:14.0", "virtio-serial-pci,addr=14.0", False),
    Dev("qemu-pc-vmxnet3", "0000:00:15.0", "vmxnet3,addr=15.0,netdev=n6"),
    Dev("qemu-pc-pvscsi", "0000:00:16.0", "pvscsi,addr=16.0"),
    Dev("qemu-pc-tulip", "0000:00:17.0", "tulip,addr=17.0,netdev=n7"),
    Dev("qemu-pc-qemu-xhci", "0000:00:19.0", "qemu-xhci,addr=19.0"),
    Dev("qemu-pc-pci-bridge", "0000:00:1a.0", "pci-bridge,id=pb1,addr=1a.0,chassis_nr=1"),
    Dev("qemu-pc-e1000-82544gc", "0000:00:1a.0:01.0", "e1000-82544gc,bus=pb1,addr=01.0,netdev=n8"),
    Dev("qemu-pc-mptsas1068", "0000:00:1b.0", "mptsas1068,addr=1b.0"),
)
PC_EXTRA = " ".join(f"-netdev user,id=n{i}" for i in range(9)) + (
    " -drive if=none,id=d0,format=raw,file=null-co://"
)


class Qmp:
    """Just enough QMP: one command at a time, events skipped."""

    def __init__(self, path: Path) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(path))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.file = self.sock.makefile("rw")
        self._reply()  # greeting
        self.cmd("qmp_capabilities")

    def _reply(self) -> dict[str, Any]:
        while True:
            line = self.file.readline()
            if not line:
                raise RuntimeError("QEMU closed the QMP socket")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def cmd(self, name: str, **args: Any) -> Any:
        self.file.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.file.flush()
        reply = self._reply()
        if "error" in reply:
            raise RuntimeError(f"{name}: {reply['error']}")
        return reply["return"]

    def hmp(self, line: str) -> str:
        return str(self.cmd("human-monitor-command", **{"command-line": line}))


class Machine:
    """A QEMU booted to the point where SeaBIOS has given up looking for a boot disk."""

    def __init__(self, work: Path, machine: str, devs: Sequence[Dev], extra: str) -> None:
        self.work = work
        self.qmp_path = work / "qmp.sock"
        self.debug_log = work / "seabios.log"
        argv = [
            "qemu-system-x86_64", "-M", machine, "-accel", "tcg", "-nodefaults",
            "-display", "none", "-m", "256", "-boot", "strict=on,order=c",
            "-chardev", f"socket,id=qmp,path={self.qmp_path},server=on,wait=off",
            "-mon", "chardev=qmp,mode=control",
            "-chardev", f"file,id=dbg,path={self.debug_log}",
            "-device", "isa-debugcon,iobase=0x402,chardev=dbg",
        ]  # fmt: skip
        for dev in devs:
            if dev.args:
                argv += ["-device", dev.args]
        argv += extra.split()
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        self.qmp = Qmp(self.qmp_path)
        self._wait_for_bios()

    def _wait_for_bios(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if "No bootable device" in self.debug_log.read_text(errors="replace"):
                self.qmp.cmd("stop")
                return
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"QEMU exited: {self.proc.stderr.read() if self.proc.stderr else ''}"
                )
            time.sleep(0.2)
        raise RuntimeError("SeaBIOS did not finish in time")

    def migration_json(self, qemu_src: Path) -> dict[str, Any]:
        """Sections of a migration stream, as analyze-migration.py prints them."""
        stream = self.work / "stream.bin"
        self.qmp.cmd("migrate", uri=f"exec:cat > {stream}")
        while (status := self.qmp.cmd("query-migrate").get("status")) not in (
            "completed",
            "failed",
        ):
            time.sleep(0.1)
        if status != "completed":
            raise RuntimeError("migration failed")
        script = qemu_src / "scripts" / "analyze-migration.py"
        out = subprocess.run(
            [sys.executable, str(script), "-f", str(stream)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out)

    def ecam_config(self, qdev_id: str) -> bytes:
        """4096 bytes of *qdev_id*'s config space read through the ECAM window."""
        bus, devfn = _find_pci(self.qmp.cmd("query-pci"), qdev_id)
        base = ECAM_BASE + (bus << 20) + (devfn << 12)
        host = _xp_words(self.qmp.hmp(f"xp /1wx {ECAM_BASE:#x}"))
        if host[:1] != [0x29C0_8086]:
            raise RuntimeError(f"ECAM window is not at {ECAM_BASE:#x}")
        words = _xp_words(self.qmp.hmp(f"xp /1024wx {base:#x}"))
        return b"".join(w.to_bytes(4, "little") for w in words)

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.qmp.cmd("quit")
        self.proc.wait(timeout=30)


def _find_pci(buses: list[dict[str, Any]], qdev_id: str) -> tuple[int, int]:
    """(bus number, devfn) of *qdev_id* in a query-pci answer."""

    def walk(bus: int, devices: list[dict[str, Any]]) -> Iterator[tuple[int, int, str]]:
        for d in devices:
            yield bus, d["slot"] << 3 | d["function"], d.get("qdev_id", "")
            bridge = d.get("pci_bridge")
            if bridge:
                yield from walk(bridge["bus"]["secondary"], bridge.get("devices", []))

    for b in buses:
        for bus, devfn, name in walk(b["bus"], b["devices"]):
            if name == qdev_id:
                return bus, devfn
    raise RuntimeError(f"{qdev_id} not in query-pci")


def _xp_words(text: str) -> list[int]:
    return [
        int(w, 16)
        for line in text.splitlines()
        for w in re.findall(r"0x([0-9a-f]{8})", line.split(":", 1)[1])
    ]


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def _find_config(tree: Any) -> bytes | None:
    """The PCIDevice config buffer inside one section's JSON ("config[0]"/"config[1]")."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if re.fullmatch(r"config\[[01]\]", key) and "irq_state" in tree:
                return _hex(value)
            found = _find_config(value)
            if found is not None:
                return found
    return None


def _virtio_config(field: str, express: bool) -> bytes:
    """Config out of virtio's opaque field: be32 version_id, config, 4 x be32 irq_state."""
    raw = _hex(field)
    size = 4096 if express else 256
    version = int.from_bytes(raw[:4], "big")
    irq = [int.from_bytes(raw[4 + size + 4 * i : 8 + size + 4 * i], "big") for i in range(4)]
    if version != 2 or any(v not in (0, 1) for v in irq):
        raise RuntimeError("virtio field does not start with PCIDevice v2 + config + irq_state")
    return raw[4 : 4 + size]


def capture_migrated(
    machine: str, devs: Sequence[Dev], extra: str, qemu_src: Path
) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        vm = Machine(Path(tmp), machine, devs, extra)
        try:
            sections = vm.migration_json(qemu_src)
        finally:
            vm.close()
    by_path: dict[str, list[Any]] = {}
    for key, value in sections.items():
        idstr = key.rsplit(" (", 1)[0]
        if "/" in idstr:
            by_path.setdefault(idstr.split("/", 1)[0], []).append(value)
    out: dict[str, bytes] = {}
    for dev in devs:
        if not dev.name:
            continue
        if dev.virtio_express is not None:
            found = [_virtio_config(s["virtio"], dev.virtio_express) for s in by_path[dev.path]]
        else:
            found = [c for s in by_path[dev.path] if (c := _find_config(s)) is not None]
        if len(found) != 1:
            raise RuntimeError(f"{len(found)} PCIDevice configs in the sections of {dev.name}")
        out[dev.name] = found[0]
    return out


def capture_ecam(devs: Sequence[Dev], extra: str = "") -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        vm = Machine(Path(tmp), "q35", devs, extra)
        try:
            return {d.name: vm.ecam_config(d.path) for d in devs if d.name}
        finally:
            vm.close()


def capture_host() -> dict[str, bytes]:
    out = {}
    for dev in sorted(Path("/sys/bus/pci/devices").iterdir()):
        ids = "-".join((dev / n).read_text().strip()[2:] for n in ("vendor", "device"))
        out[f"host-{dev.name.replace(':', '_')}-{ids}"] = (dev / "config").read_bytes()
    return out


def _patched(name: str, *edits: tuple[int, bytes]) -> bytes:
    """Config *name* with bytes replaced at the given offsets."""
    data = bytearray((HERE / f"{name}.bin").read_bytes())
    for offset, new in edits:
        data[offset : offset + len(new)] = new
    return bytes(data)


def _ext_header(data: bytes, offset: int, next_offset: int) -> tuple[int, bytes]:
    """An edit that points the extended capability at *offset* to *next_offset*."""
    header = int.from_bytes(data[offset : offset + 4], "little") & 0x000F_FFFF
    return offset, (header | next_offset << 20).to_bytes(4, "little")


def make_malformed() -> dict[str, bytes]:
    """Broken chains for the bounded-walk tests, each one edit away from a capture."""
    e1000e = (HERE / "qemu-q35-e1000e-pcie.bin").read_bytes()
    root_port = (HERE / "qemu-q35-pcie-root-port.bin").read_bytes()
    return {
        # last capability (a0, MSI-X) points back to the first (c8)
        "bad-cap-loop": _patched("qemu-q35-e1000e-pcie", (0xA1, b"\xc8")),
        # the capability at 48 points into the header (0x20)
        "bad-cap-into-header": _patched("qemu-pc-pci-bridge", (0x49, b"\x20")),
        # the second capability's id is 0xff, what a missing device reads as
        "bad-cap-id-ff": _patched("qemu-pc-megasas", (0x50, b"\xff")),
        # the 64-byte header alone (lspci -x): the capability pointer leads outside it
        "bad-cap-outside-64": (HERE / "qemu-pc-intel-hda.bin").read_bytes()[:64],
        # pointers with the reserved low bits set, which readers must mask
        "odd-cap-pointer-bits": _patched(
            "qemu-q35-pcie-root-port", (0x34, b"\x57"), (0x55, b"\x4b")
        ),
        # MSI Multiple Message Capable 7 (reserved)
        "bad-msi-count": _patched("qemu-pc-pci-bridge", (0x4E, b"\x8e")),
        # MSI-X table in BAR 7, which no header has
        "bad-msix-bir": _patched("qemu-q35-e1000e-pcie", (0xA4, b"\x07")),
        # the last extended capability (ACS at 148) points back to 100
        "bad-ext-loop": _patched("qemu-q35-pcie-root-port", _ext_header(root_port, 0x148, 0x100)),
        # DSN at 140 points below 0x100
        "bad-ext-pointer-low": _patched("qemu-q35-e1000e-pcie", _ext_header(e1000e, 0x140, 0x0C0)),
        # ARI at 100 points at an all-zero header (SR-IOV at 120 wiped)
        "bad-ext-empty": _patched("qemu-q35-nvme-sriov", (0x120, bytes(0x40))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", action="store_true", help="capture /sys/bus/pci/devices/*/config")
    parser.add_argument("--qemu", action="store_true", help="capture QEMU's emulated devices")
    parser.add_argument("--malformed", action="store_true", help="derive the bad-*.bin files")
    parser.add_argument(
        "--qemu-src", type=Path, default=Path("/root/src/qemu-7.2.0"),
        help="QEMU source tree, for scripts/analyze-migration.py",
    )  # fmt: skip
    args = parser.parse_args()
    captured: dict[str, bytes] = {}
    if args.host:
        captured |= capture_host()
    if args.qemu:
        captured |= capture_migrated("q35", Q35, Q35_EXTRA, args.qemu_src)
        captured |= capture_migrated("pc", PC, PC_EXTRA, args.qemu_src)
        captured |= capture_ecam(Q35_NVME)
    for name, data in sorted(captured.items()):
        write_atomic(HERE / f"{name}.bin", data)
        print(f"{name}.bin {len(data)}")
    if args.malformed:
        for name, data in sorted(make_malformed().items()):
            write_atomic(HERE / f"{name}.bin", data)
            print(f"{name}.bin {len(data)}")


if __name__ == "__main__":
    main()
