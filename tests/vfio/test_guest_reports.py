"""The guest run cannot go green by skipping: host-side checks, nothing booted.

Under CI a test that skipped in the guest fails on the host, and a fixture whose
devices the guest promises fails inside the guest when they are missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from vm.harness import GuestOutcome

from vfio import test_vfio_device
from vfio.conftest import report


def test_a_skip_in_the_guest_is_a_failure_under_ci() -> None:
    with pytest.raises(pytest.fail.Exception, match="skipped in the guest under CI: no device"):
        report(GuestOutcome("skipped", "no device"), True, lambda: "")
    with pytest.raises(pytest.skip.Exception, match="in the guest: no device"):
        report(GuestOutcome("skipped", "no device"), False, lambda: "")
    report(GuestOutcome("passed", ""), True, lambda: "")  # a pass stays a pass


def test_missing_mdevs_fail_inside_the_guest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(test_vfio_device, "MDEVS", tmp_path / "no-mdevs")
    monkeypatch.setattr(test_vfio_device, "IN_GUEST", True)
    with pytest.raises(pytest.fail.Exception, match=r"no mediated devices .* yet VMSTATE_IN_GUEST=1"):
        test_vfio_device.mdev_uuids()
    monkeypatch.setattr(test_vfio_device, "IN_GUEST", False)
    with pytest.raises(pytest.skip.Exception, match="run in the QEMU test guest"):
        test_vfio_device.mdev_uuids()
