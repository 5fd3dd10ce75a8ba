"""Streams of a booted Linux guest, for ``bench_analyze.py --guest``.

tests/data's streams come from a 64 MiB guest stopped in SeaBIOS: almost every
page is a zero page and the stream is under 2 MB.  Users save running guests.
These streams come from the test guest's own kernel and initramfs (tests/vm)
booted on QEMU's ``pc`` machine with 1 GiB (or as asked) under TCG: its /init loads its
modules, finds no 9p share and powers off, and ``-no-shutdown`` keeps QEMU with
the guest's memory as the kernel left it; QMP then migrates it to a file.  One
stream per QEMU series, made once and cached in ``~/.cache/vmstate-bench``
(delete it to make them again).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))  # the QEMU and guest harnesses, as the tests import them

from peers.apt import PeerError, cache_root  # noqa: E402
from peers.migration import Vm, target_uri  # noqa: E402
from peers.qemu import Qemu, backports_qemu, system_qemu  # noqa: E402
from vm.harness import prepare  # noqa: E402

BOOT_TIMEOUT = 600.0


def require(tool: str) -> str:
    """A tool's path; the benchmark cannot run without it."""
    path = shutil.which(tool)
    if path is None:
        raise SystemExit(f"{tool} is not installed: the guest streams need it (see .ci/run)")
    return path


def qemu_of(series: str) -> Qemu:
    return system_qemu(require) if series == "7.2" else backports_qemu(require, series)


def guest_stream(series: str, mib: int = 1024) -> Path:
    """The cached stream of the booted guest of *mib* MiB saved by QEMU *series*, made
    if missing."""
    cache = cache_root("vmstate-bench")
    target = cache / f"guest-{mib}m-{series}.mig"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    qemu = qemu_of(series)
    artifacts = prepare(require)
    # QEMU writes beside the target, which then appears whole or not at all
    partial = cache / f".{target.name}.partial"
    with tempfile.TemporaryDirectory(prefix="vmstate-bench-") as tmp:
        work = Path(tmp)
        args = [
            "-M", "pc", "-m", str(mib), "-no-shutdown",
            "-kernel", str(artifacts.kernel), "-initrd", str(artifacts.initramfs),
            "-append", "console=ttyS0 panic=-1 loglevel=4",
            "-serial", f"file:{work / 'console.log'}",
        ]  # fmt: skip
        with Vm(qemu, args, work) as vm:
            _wait_for_poweroff(vm, work / "console.log")
            vm.save(target_uri(partial, "exec"))
    os.replace(partial, target)
    return target


def _wait_for_poweroff(vm: Vm, console: Path) -> None:
    """Until the guest's /init has powered the guest off (QEMU stays, paused)."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while vm.qmp.command("query-status").get("status") != "shutdown":
        if time.monotonic() > deadline or vm.proc.poll() is not None:
            text = console.read_text(errors="replace")[-2000:] if console.exists() else ""
            raise PeerError(f"the guest did not power off within {BOOT_TIMEOUT:.0f} s: {text}")
        time.sleep(0.5)


__all__ = ["guest_stream", "qemu_of"]
