"""Small TCG guests of a QEMU peer, migrated to files and loaded back with ``-incoming``.

A guest boots SeaBIOS only (no disk, ``-m 64``) and is stopped once the firmware
has programmed PCI and given up booting ("No bootable device." on its debug port,
an ``isa-debugcon`` with no migration state).  Saving it is QMP ``stop`` then
``migrate`` to a file; loading is another QEMU started with ``-incoming defer``
and ``migrate-incoming`` from that file.  QEMU's own verdict is what the load
tells: ``query-migrate`` on the destination says ``completed``, or the load
fails and QEMU reports why (on stderr, and in ``error-desc`` where it stays up).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from .apt import PeerError, tail
from .qemu import Qemu

#: options every guest shares: no defaults, no network or display of the host's
COMMON = ("-accel", "tcg", "-m", "64", "-nographic", "-nodefaults", "-no-user-config")
SEABIOS_LOG = "seabios.log"
DEBUGCON = ("-chardev", f"file,id=seabios,path={SEABIOS_LOG}",
            "-device", "isa-debugcon,iobase=0x402,chardev=seabios")
QMP_SOCKET = "qmp.sock"
POST_DONE = b"No bootable device."
POST_TIMEOUT = 120.0
MIGRATE_TIMEOUT = 120.0


class Qmp:
    """Line-oriented QMP client: one command at a time, events skipped."""

    def __init__(self, path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
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
                    raise PeerError(f"QEMU exited with status {proc.returncode}") from None
                if time.monotonic() > deadline:
                    raise PeerError(f"QMP socket {path} never appeared") from None
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")
        self.read()  # greeting
        self.command("qmp_capabilities")

    def read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise PeerError("QEMU closed the QMP connection")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def command(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """The command's return value; a QMP error raises :class:`QmpError`."""
        message: dict[str, Any] = {"execute": name}
        if arguments is not None:
            message["arguments"] = arguments
        self.file.write(json.dumps(message).encode() + b"\n")
        self.file.flush()
        while True:
            reply = self.read()
            if "error" in reply:
                raise QmpError(f"QMP {name}: {reply['error'].get('desc', reply['error'])}")
            if "return" in reply:
                return reply["return"]
            # an event, or anything else that is no reply (once, under load, a message
            # without "return" answered qmp_capabilities): not the command's answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()


class QmpError(PeerError):
    """QEMU answered a QMP command with an error."""


@attrs.frozen
class Load:
    """What a destination QEMU made of an incoming stream."""

    accepted: bool
    #: QEMU's own words when it refused (its error-desc or the end of its stderr)
    error: str = ""


class Vm:
    """One running QEMU with a QMP socket in *work*; use as a context manager."""

    def __init__(self, qemu: Qemu, args: Sequence[str], work: Path, *,
                 incoming: bool = False) -> None:
        self.qemu = qemu
        self.work = work
        self.incoming = incoming
        work.mkdir(parents=True, exist_ok=True)
        for stale in (work / QMP_SOCKET, work / SEABIOS_LOG):
            stale.unlink(missing_ok=True)
        self.command = qemu.command(*COMMON, *args, *DEBUGCON, "-qmp",
                                    f"unix:{QMP_SOCKET},server=on,wait=off",
                                    *(("-incoming", "defer") if incoming else ()))
        self.log = work / "qemu.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(self.command, cwd=work, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        try:
            self.qmp = Qmp(work / QMP_SOCKET, self.proc)
        except (PeerError, OSError) as e:
            self.stop_process()
            raise PeerError(f"{e}: {self.output()}") from None

    def __enter__(self) -> Vm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def output(self) -> str:
        """What QEMU printed, last lines."""
        return tail(self.log.read_text(errors="replace").strip(), 20)

    def wait_for_post(self) -> None:
        """Until SeaBIOS reports the end of POST: PCI is programmed, the guest idles."""
        log = self.work / SEABIOS_LOG
        deadline = time.monotonic() + POST_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PeerError(f"QEMU exited early ({self.proc.returncode}): {self.output()}")
            if log.exists() and POST_DONE in log.read_bytes():
                return
            time.sleep(0.1)
        raise PeerError(f"SeaBIOS did not finish within {POST_TIMEOUT:.0f} s")

    def capabilities(self, names: Sequence[str], state: bool = True) -> None:
        if names:
            self.qmp.command("migrate-set-capabilities", {
                "capabilities": [{"capability": name, "state": state} for name in names]})

    def save(self, uri: str, capabilities: Sequence[str] = (),
             written: Path | None = None) -> None:
        """Stop the guest and migrate it to *uri* (``exec:cat > FILE``, ``file:FILE``).

        With ``postcopy-ram`` and no destination the source never completes: it waits
        for a return path after writing everything; given the *written* file, the
        migration is over once that file ends with its vmdesc, and is then cancelled."""
        self.qmp.command("stop")
        self.capabilities(capabilities)
        self.qmp.command("migrate", {"uri": uri})
        deadline = time.monotonic() + MIGRATE_TIMEOUT
        while (info := self.qmp.command("query-migrate")).get("status") != "completed":
            if info.get("status") in ("failed", "cancelled") or time.monotonic() > deadline:
                raise PeerError(f"migration to {uri} ended as {info.get('status')!r}: "
                                f"{info.get('error-desc', '')} {self.output()}")
            if info.get("status") == "device" and written is not None and _ends_with_vmdesc(written):
                self.qmp.command("migrate_cancel")
                return
            time.sleep(0.05)

    def load(self, uri: str, capabilities: Sequence[str] = ()) -> Load:
        """Load an incoming stream; QEMU's verdict, never an exception for a refusal."""
        assert self.incoming, "start the destination with incoming=True"
        self.capabilities(capabilities)
        try:
            self.qmp.command("migrate-incoming", {"uri": uri})
            deadline = time.monotonic() + MIGRATE_TIMEOUT
            while True:
                info = self.qmp.command("query-migrate")
                status = info.get("status")
                if status == "completed":
                    return Load(True)
                if status in ("failed", "cancelled"):
                    return Load(False, info.get("error-desc") or self.output())
                if time.monotonic() > deadline:
                    raise PeerError(f"loading {uri} did not finish: {info}")
                time.sleep(0.05)
        except (PeerError, OSError):
            # QEMU exits when a load fails (7.2 always, 10.0 by default): its stderr says why
            if self.proc.wait(timeout=30) != 0:
                return Load(False, self.output())
            raise

    def stop_process(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(PeerError, OSError):
                self.qmp.command("quit")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self.qmp.close()
        self.stop_process()


def target_uri(target: Path, uri: str) -> str:
    """``exec`` (``exec:cat > FILE``, any QEMU) or ``file`` (``file:FILE``, QEMU 8.2+,
    needed for ``mapped-ram``)."""
    return f"exec:cat > {shlex.quote(str(target))}" if uri == "exec" else f"file:{target}"


def save_guest(qemu: Qemu, args: Sequence[str], work: Path, target: Path,
               capabilities: Sequence[str] = (), uri: str = "exec") -> Path:
    """Boot a guest to the end of POST and migrate it into *target* (see :func:`target_uri`)."""
    with Vm(qemu, args, work) as vm:
        vm.wait_for_post()
        vm.save(target_uri(target, uri), capabilities,
                written=target if "postcopy-ram" in capabilities else None)
    return target


def _ends_with_vmdesc(path: Path) -> bool:
    from vmstate.stream import find_vmdesc

    data = path.read_bytes() if path.exists() else b""
    return find_vmdesc(data) is not None


def load_stream(qemu: Qemu, args: Sequence[str], work: Path, stream: Path,
                capabilities: Sequence[str] = ()) -> Load:
    """QEMU's verdict on loading *stream* into a guest started with *args*."""
    uri = f"exec:cat {shlex.quote(str(stream))}"
    with Vm(qemu, args, work, incoming=True) as vm:
        return vm.load(uri, capabilities)


@contextlib.contextmanager
def loaded(qemu: Qemu, args: Sequence[str], work: Path, uri: str,
           capabilities: Sequence[str] = ()) -> Iterator[Vm]:
    """A destination that has loaded *uri*, still paused, to be saved again."""
    with Vm(qemu, args, work, incoming=True) as vm:
        verdict = vm.load(uri, capabilities)
        if not verdict.accepted:
            raise PeerError(f"QEMU refused {uri}: {verdict.error}")
        yield vm


def split(options: Sequence[str]) -> list[str]:
    """``["-M pc", "-device e1000"]`` -> ``["-M", "pc", "-device", "e1000"]``."""
    return [word for option in options for word in option.split(" ", 1)]
