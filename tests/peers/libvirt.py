"""libvirt as a test peer: a private libvirtd that saves and restores small TCG domains.

Debian bookworm's libvirt 9.0 (``libvirt-daemon``, ``libvirt-daemon-driver-qemu``,
``libvirt-clients``; ``.ci/run`` installs them) runs as root with every path of
its own: in a private mount namespace, ``/etc/libvirt``, ``/var/lib/libvirt``,
``/run/libvirt``, ``/var/log/libvirt`` and ``/var/cache/libvirt`` are folders
of a temporary directory, so it neither sees nor disturbs a system libvirt,
and ``virsh`` reaches it through the socket in that directory.  Its
``qemu.conf`` runs QEMU as root without security labels or namespaces and
writes QEMU's output to files itself (no virtlogd).  ``save_image_format``
is read when the daemon starts, so a save in another format restarts it.

libvirt 9.0 insists that a ``libvirt-qemu`` user and group and a ``kvm``
group exist, whatever ``qemu.conf`` says; they are created when missing.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from .apt import PeerError, Require, run, tail

#: where the daemon's paths are bound inside its namespace -> folder in the private root
MOUNTS = {
    "/etc/libvirt": "etc",
    "/var/lib/libvirt": "lib",
    "/run/libvirt": "run",
    "/var/log/libvirt": "log",
    "/var/cache/libvirt": "cache",
}
QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = []
stdio_handler = "file"
swtpm_user = "root"
swtpm_group = "root"
save_image_format = "{save_format}"
"""
LIBVIRTD_CONF = """\
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
"""
START_TIMEOUT = 60


@attrs.frozen
class Restore:
    """What ``virsh restore`` did: started the domain, or failed with libvirt's message."""

    ok: bool
    message: str


def domain_xml(name: str, machine: str, emulator: str, devices: str = "") -> str:
    """A small TCG domain: 64 MiB, one vCPU, no disk (the firmware waits), ACPI on
    (without ``<acpi/>`` libvirt 9.0 passes ``-no-acpi``, which QEMU 10.0 removed)."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='{machine}'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <emulator>{emulator}</emulator>
    {devices}
  </devices>
</domain>
"""


def emulator_script(path: Path, prefix: Sequence[str]) -> Path:
    """A plain executable for ``<emulator>``: libvirt runs a path, not a command line."""
    path.write_text(f"#!/bin/sh\nexec {shlex.join(prefix)} \"$@\"\n")
    path.chmod(0o755)
    return path


class Libvirt:
    """One private libvirtd; ``virsh`` talks to it, ``stop`` ends it and its domains."""

    def __init__(self, root: Path, require: Require) -> None:
        self.root = root
        self.libvirtd = require("libvirtd")
        self.virsh_path = require("virsh")
        self.unshare = require("unshare")
        self.save_format = ""
        self.proc: subprocess.Popen[bytes] | None = None
        _accounts(require)
        for inside, folder in MOUNTS.items():
            Path(inside).mkdir(parents=True, exist_ok=True)  # mount points; empty on the host
            (root / folder).mkdir(parents=True, exist_ok=True)
        (root / "etc" / "libvirtd.conf").write_text(LIBVIRTD_CONF)

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.root / 'run' / 'libvirt-sock'}"

    def start(self, save_format: str = "raw") -> None:
        """(Re)start the daemon with *save_format* as ``save_image_format``."""
        if self.proc is not None and self.save_format == save_format:
            return
        self._end_daemon()
        (self.root / "etc" / "qemu.conf").write_text(QEMU_CONF.format(save_format=save_format))
        binds = " && ".join(
            f"mount --bind {shlex.quote(str(self.root / folder))} {inside}"
            for inside, folder in MOUNTS.items()
        )
        script = f"{binds} && exec {shlex.quote(self.libvirtd)} --config /etc/libvirt/libvirtd.conf --pid-file {shlex.quote(str(self.root / 'libvirtd.pid'))}"
        log = (self.root / "libvirtd.log").open("ab")
        self.proc = subprocess.Popen(
            [self.unshare, "-m", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        self.save_format = save_format
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PeerError(f"libvirtd exited with status {self.proc.returncode}:\n"
                                f"{tail(self._log(), 20)}")
            if self.virsh("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise PeerError(f"libvirtd did not answer within {START_TIMEOUT} s:\n{tail(self._log(), 20)}")

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.virsh_path, "-q", "-c", self.uri, *args], capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL, check=False,
                              env={**os.environ, "LC_ALL": "C"})
        if check and proc.returncode != 0:
            raise PeerError(f"virsh {shlex.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def save(self, xml: str, image: Path, save_format: str = "raw") -> None:
        """Start a transient domain from *xml* and save it into *image* in *save_format*."""
        self.start(save_format)
        definition = image.with_suffix(".xml")
        definition.write_text(xml)
        name = xml.split("<name>", 1)[1].split("</name>", 1)[0]
        self.virsh("create", str(definition))
        try:
            self.virsh("save", name, str(image))
        finally:
            self.virsh("destroy", name, check=False)

    def restore(self, image: Path, emulator: str) -> Restore:
        """``virsh restore`` with the saved XML's emulator replaced by *emulator*."""
        self.start(self.save_format or "raw")
        xml = self.virsh("save-image-dumpxml", str(image)).stdout
        start, end = xml.index("<emulator>") + len("<emulator>"), xml.index("</emulator>")
        alternative = image.with_name(f"{image.name}.restore.xml")
        alternative.write_text(xml[:start] + emulator + xml[end:])
        name = xml.split("<name>", 1)[1].split("</name>", 1)[0]
        proc = self.virsh("restore", str(image), "--xml", str(alternative), check=False)
        if proc.returncode != 0:
            return Restore(False, proc.stderr.strip())
        state = self.virsh("domstate", name).stdout.strip()
        self.virsh("destroy", name)
        return Restore(state == "running", f"restored, {state}")

    def stop(self) -> None:
        """Destroy every domain (libvirtd leaves its QEMUs running when it exits), then end it."""
        if self.proc is not None and self.proc.poll() is None:
            for name in self.virsh("list", "--name", check=False).stdout.split():
                self.virsh("destroy", name, check=False)
        self._end_daemon()

    def _end_daemon(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _log(self) -> str:
        path = self.root / "libvirtd.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _accounts(require: Require) -> None:
    """The user and groups libvirt 9.0 looks up at start (Debian's libvirt-daemon-system
    creates them; the plain daemon package does not)."""
    for group in ("kvm", "libvirt-qemu"):
        if subprocess.run(["getent", "group", group], capture_output=True, check=False).returncode:
            run([require("groupadd"), "--system", group])
    if subprocess.run(["getent", "passwd", "libvirt-qemu"], capture_output=True,
                      check=False).returncode:
        run([require("useradd"), "--system", "--no-create-home", "--home-dir", "/var/lib/libvirt",
             "--shell", "/usr/sbin/nologin", "-g", "libvirt-qemu", "-G", "kvm", "libvirt-qemu"])
