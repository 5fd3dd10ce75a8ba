"""A QEMU process driven over QMP, for tests that migrate with QEMU itself.

QEMU is started paused (``-S``) with a QMP socket; commands are sent in order and
events are skipped.  Everything QEMU prints goes to a log file, which every error
quotes, so a refusal shows QEMU's own reason.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .apt import PeerError, tail

#: how long QEMU may take to open its QMP socket (it starts under emulation in the guest)
START_TIMEOUT = 60.0
#: how long one command or one migration may take
COMMAND_TIMEOUT = 120.0
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


class QmpError(PeerError):
    """QEMU answered a command with an error, or went away."""


class QemuProcess:
    """``QemuProcess(argv, work)``: QEMU running *argv* plus a QMP socket in *work*."""

    def __init__(self, argv: Sequence[str], work: Path) -> None:
        self.socket_path = work / "qmp.sock"
        self.log_path = work / "qemu.log"
        self.argv = [*argv, "-qmp", f"unix:{self.socket_path},server=on,wait=off"]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        try:
            self.sock = self._connect()
            self.file = self.sock.makefile("rwb")
            self._read()  # the greeting
            self.command("qmp_capabilities")
        except BaseException:
            self.kill()
            raise

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(COMMAND_TIMEOUT)
            try:
                sock.connect(str(self.socket_path))
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if self.proc.poll() is not None:
                    raise QmpError(f"QEMU exited with status {self.proc.returncode} before "
                                   f"QMP was up:\n{self.log()}") from None
                if time.monotonic() > deadline:
                    raise QmpError(f"QEMU opened no QMP socket within {START_TIMEOUT:.0f} s:"
                                   f"\n{self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        """The last lines QEMU printed."""
        return tail(self.log_path.read_text(errors="replace"), 30)

    def _read(self) -> dict[str, Any]:
        try:
            line = self.file.readline()
        except OSError as e:
            raise QmpError(f"QMP connection failed ({e}):\n{self.log()}") from None
        if not line:
            raise QmpError(f"QEMU closed the QMP connection:\n{self.log()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def command(self, name: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """Send one command; its "return" value, or QmpError with QEMU's message."""
        message: dict[str, Any] = {"execute": name}
        if arguments:
            message["arguments"] = dict(arguments)
        self.file.write(json.dumps(message).encode() + b"\n")
        self.file.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                continue
            if "error" in reply:
                raise QmpError(f"QMP {name}: {reply['error'].get('desc', reply['error'])}"
                               f"\n{self.log()}")
            return reply.get("return")

    def migration_status(self, timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        """query-migrate once the migration (outgoing or incoming) has ended."""
        deadline = time.monotonic() + timeout
        while True:
            info: dict[str, Any] = self.command("query-migrate")
            if info.get("status") in FINAL_STATUSES:
                return info
            if time.monotonic() > deadline:
                raise QmpError(f"migration still {info.get('status')} after {timeout:.0f} s:"
                               f"\n{self.log()}")
            time.sleep(0.05)

    def quit(self) -> None:
        """Ask QEMU to quit and wait for it to exit."""
        with contextlib.suppress(QmpError):  # already gone: the wait below reaps it
            self.command("quit")
        try:
            self.proc.wait(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise QmpError(f"QEMU did not quit within {COMMAND_TIMEOUT:.0f} s") from None
        self._close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        for resource in ("file", "sock"):
            if hasattr(self, resource):
                getattr(self, resource).close()

    def __enter__(self) -> QemuProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is None:
            self.quit()
        else:
            self.kill()
