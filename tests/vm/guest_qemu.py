"""QEMU 10.0 inside the test guest, for tests that migrate a VFIO device with QEMU there.

QEMU 7.2 (the host's) predates VFIO migration v2, the only protocol the guest's kernel
speaks.  The host prepares bookworm-backports' QEMU 10.0 as tests/peers/qemu.py does
(downloaded once, unpacked into the cache) and hands the guest the command that runs
it: the guest sees the host's root, so the same unpacked tree, the host's libraries and
the ``unshare -m`` wrapper work there unchanged (the guest's tests run as root).

Only a run that selects a test using the :data:`FIXTURE` fixture prepares it.  When
preparing fails, the reason goes to the guest instead, where that fixture skips with
it (fails under CI), so the other guest tests still run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from peers.apt import PeerError, Require
from peers.qemu import Qemu, backports_qemu

#: the guest fixture that needs QEMU 10.0 (tests/vfio/test_qemu_mtty.py)
FIXTURE = "guest_qemu"
SERIES = "10.0"
#: the prepared QEMU, as JSON
ENV = "VMSTATE_GUEST_QEMU"
#: why the host could not prepare it
PROBLEM_ENV = "VMSTATE_GUEST_QEMU_PROBLEM"


def to_env(qemu: Qemu) -> dict[str, str]:
    spec = {"series": qemu.series, "version": qemu.version, "prefix": list(qemu.prefix),
            "source": str(qemu.source)}
    return {ENV: json.dumps(spec)}


def host_env(require: Require) -> dict[str, str]:
    """The guest's environment entries that describe QEMU 10.0, or why there is none.

    *require* may raise pytest's skip or fail outcome for a missing tool; those are the
    caller's to turn into a problem (this module does not depend on pytest)."""
    try:
        return to_env(backports_qemu(require, SERIES))
    except PeerError as e:
        return {PROBLEM_ENV: f"preparing QEMU {SERIES} for the guest failed: {e}"}


def from_env(environ: Mapping[str, str] = os.environ) -> Qemu:
    """The QEMU the host prepared; PeerError saying why when there is none."""
    problem = environ.get(PROBLEM_ENV)
    if problem:
        raise PeerError(problem)
    spec = environ.get(ENV)
    if not spec:
        raise PeerError(f"the host passed no QEMU {SERIES} ({ENV} is unset)")
    fields = json.loads(spec)
    return Qemu(fields["series"], fields["version"], tuple(fields["prefix"]),
                Path(fields["source"]))
