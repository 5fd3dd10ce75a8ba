"""Tests here need real kernel VFIO; on the host they report their run inside the guest.

Inside the QEMU guest (VMSTATE_IN_GUEST=1) the tests run as written.  On the host,
after -m/-k selection, each selected vfio test is replaced by a stand-in with the same
node ID: the first stand-in to run boots the guest (tests/vm) once for the session,
running exactly the selected tests there, and each stand-in then reports its guest
twin's outcome, so `pytest -m vfio` lists the real-VFIO tests' own results.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import IN_CI, require_tool
from peers.apt import PeerError
from vm import guest_qemu, harness

IN_GUEST = os.environ.get("VMSTATE_IN_GUEST") == "1"
HERE = Path(__file__).resolve().parent


class GuestSession:
    """One guest boot per pytest session, shared by every stand-in."""

    def __init__(self, config: pytest.Config, node_ids: list[str], needs_qemu: bool) -> None:
        self.config = config
        self.node_ids = node_ids
        self.needs_qemu = needs_qemu
        self._run: harness.GuestRun | BaseException | None = None
        self._console_shown_by: str | None = None

    def run(self) -> harness.GuestRun:
        """The guest's report; what prevented it is re-raised for every stand-in."""
        if self._run is None:
            try:
                artifacts = harness.prepare(require_tool)
                timeout = float(os.environ.get("VMSTATE_VM_TIMEOUT", harness.DEFAULT_TIMEOUT))
                self._run = harness.run_guest(
                    artifacts, self.node_ids, rootdir=self.config.rootpath,
                    inifile=self.config.inipath, require=require_tool, timeout=timeout,
                    extra_env=self._qemu_env())
            except PeerError as e:
                self._run = pytest.fail.Exception(
                    f"preparing or booting the guest failed: {e}", pytrace=False)
            except (Exception, pytest.skip.Exception, pytest.fail.Exception) as e:
                self._run = e
        if isinstance(self._run, BaseException):
            raise self._run
        return self._run

    def _qemu_env(self) -> dict[str, str]:
        """QEMU 10.0 for the guest when a selected test needs it; a missing tool or a
        failed download is that test's problem only (see vm.guest_qemu)."""
        if not self.needs_qemu:
            return {}
        try:
            return guest_qemu.host_env(require_tool)
        except (pytest.skip.Exception, pytest.fail.Exception) as e:
            return {guest_qemu.PROBLEM_ENV: str(e.msg)}

    def console(self, nodeid: str) -> str:
        """The console tail for the first report that needs it, a pointer for the others."""
        run = self.run()
        if self._console_shown_by is None:
            self._console_shown_by = nodeid
            return (f"--- guest serial console, last {harness.CONSOLE_TAIL} lines "
                    f"(boot and test run took {run.seconds:.0f} s) ---\n{run.console_tail()}")
        return f"(guest serial console: see the report of {self._console_shown_by})"


def report(outcome: harness.GuestOutcome, in_ci: bool, console: Callable[[], str]) -> None:
    """End the host's stand-in as its guest twin ended.  Under CI a skip in the guest is
    a failure, as a missing tool is on the host: the guest exists to run these tests."""
    if outcome.outcome == "skipped" and in_ci:
        pytest.fail(f"skipped in the guest under CI: {outcome.message}", pytrace=False)
    if outcome.outcome == "skipped":
        pytest.skip(f"in the guest: {outcome.message}")
    if outcome.outcome == "xfailed":
        pytest.xfail(f"in the guest: {outcome.message}")
    if outcome.outcome == "failed":
        pytest.fail("\n".join([f"in the guest: {outcome.message}", outcome.details, console()]),
                    pytrace=False)


_SESSION = pytest.StashKey[GuestSession]()


class GuestTest(pytest.Item):
    """Stands in on the host for one vfio test and reports its outcome in the guest."""

    def __init__(self, *, location: tuple[str, int | None, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._location = location

    def runtest(self) -> None:
        session = self.config.stash[_SESSION]
        run = session.run()
        outcome = harness.outcome_for(self.nodeid, run.outcomes, session.node_ids)
        if outcome is None:
            # Collection errors are keyed by JUnit names, not node IDs: show them all.
            others = [f"{key}: {o.message}\n{o.details}" for key, o in run.outcomes.items()
                      if ".py::" not in key and o.outcome == "failed"]
            pytest.fail("\n".join([
                "the guest reported no result for this test"
                + (f" ({run.problem})" if run.problem else ""),
                *others, session.console(self.nodeid)]), pytrace=False)
        report(outcome, IN_CI, lambda: session.console(self.nodeid))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, self._location[1], self._location[2]


if not IN_GUEST:

    @pytest.hookimpl(trylast=True)  # after -m/-k deselection: boot for the selected only
    def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
        node_ids = []
        needs_qemu = False
        for index, item in enumerate(items):
            if item.path.is_relative_to(HERE) and item.get_closest_marker("vfio"):
                twin = GuestTest.from_parent(item.parent, name=item.name,
                                             location=item.location)
                twin.add_marker("vfio")
                items[index] = twin
                node_ids.append(item.nodeid)
                needs_qemu |= guest_qemu.FIXTURE in getattr(item, "fixturenames", ())
        if node_ids:
            config.stash[_SESSION] = GuestSession(config, node_ids, needs_qemu)
