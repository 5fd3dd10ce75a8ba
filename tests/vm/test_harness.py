"""The guest harness' host-side logic, without booting anything.

The end-to-end check is `pytest -m vfio` itself; these pin down the parts whose
mistakes would be silent there: which kernel is chosen, how guest results map back to
host tests, and the small parsers.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from peers.apt import PeerError

from vm import guest_plugin, harness

TESTS = Path(__file__).resolve().parents[1]

GUEST_MODULE = """
import pytest

pytestmark = pytest.mark.vfio

def test_pass():
    pass

def test_fail():
    print("captured-output")
    assert 1 == 2, "boom"

def test_skip():
    pytest.skip("no device")

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False

@pytest.fixture
def broken():
    raise RuntimeError("setup broke")

def test_setup_error(broken):
    pass

@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    assert n == 1

class TestGroup:
    def test_method(self):
        pass

@pytest.mark.parametrize("dev", ["guest-a", "guest-b"])
def test_discovered(dev):
    assert dev != "guest-b"

def test_not_selected():
    pass
"""


@pytest.fixture(scope="module")
def guest_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, harness.GuestOutcome]:
    """Outcomes of a real pytest run with the guest's options, plugin and selection."""
    root = tmp_path_factory.mktemp("guest")
    (root / "test_sample.py").write_text(GUEST_MODULE)
    (root / "test_broken.py").write_text("def test_never(:\n")
    host_ids = [
        "test_sample.py::test_pass", "test_sample.py::test_fail", "test_sample.py::test_skip",
        "test_sample.py::test_xfail", "test_sample.py::test_setup_error",
        "test_sample.py::test_param[1]", "test_sample.py::test_param[2]",
        "test_sample.py::TestGroup::test_method",
        "test_sample.py::test_discovered[no-device]",  # the host found no devices
        "test_broken.py::test_never",
    ]
    (root / "selected.txt").write_text("\n".join(host_ids))
    junit = root / "junit.xml"
    env = {**os.environ, "PYTHONPATH": str(TESTS), "VMSTATE_GUEST_SELECT": str(root / "selected.txt")}
    subprocess.run([sys.executable, "-m", "pytest", *harness.guest_pytest_args(str(junit)),
                    "--rootdir", str(root), "-c", os.devnull,
                    str(root / "test_sample.py"), str(root / "test_broken.py")],
                   cwd=root, env=env, capture_output=True, check=False, timeout=120)
    outcomes = harness.parse_junit(junit.read_text())
    assert "test_sample.py::test_not_selected" not in outcomes
    assert "test_sample.py::test_discovered[guest-a]" in outcomes
    return {h: o for h in host_ids if (o := harness.outcome_for(h, outcomes, host_ids))} | {
        k: o for k, o in outcomes.items() if ".py::" not in k}


def test_guest_outcomes_come_back_under_host_node_ids(
        guest_report: dict[str, harness.GuestOutcome]) -> None:
    kinds = {k: o.outcome for k, o in guest_report.items()}
    assert kinds == {
        "test_sample.py::test_pass": "passed",
        "test_sample.py::test_fail": "failed",
        "test_sample.py::test_skip": "skipped",
        "test_sample.py::test_xfail": "xfailed",
        "test_sample.py::test_setup_error": "failed",
        "test_sample.py::test_param[1]": "passed",
        "test_sample.py::test_param[2]": "failed",
        "test_sample.py::TestGroup::test_method": "passed",
        "test_sample.py::test_discovered[no-device]": "failed",
        "test_broken": "failed",  # a collection error, keyed by its JUnit name
    }


def test_guest_failures_carry_their_report(guest_report: dict[str, harness.GuestOutcome]) -> None:
    failed = guest_report["test_sample.py::test_fail"]
    assert "boom" in failed.message
    assert "captured-output" in failed.details
    assert "setup broke" in guest_report["test_sample.py::test_setup_error"].details
    assert guest_report["test_sample.py::test_skip"].message == "no device"
    assert "SyntaxError" in guest_report["test_broken"].details


def test_unmatched_parameters_are_reported_together(
        guest_report: dict[str, harness.GuestOutcome]) -> None:
    combined = guest_report["test_sample.py::test_discovered[no-device]"]
    assert combined.message == "1 of 2 instances failed in the guest"
    assert "test_discovered[guest-b]" in combined.details
    assert "test_discovered[guest-a]" not in combined.details


def test_selection_keeps_every_instance_of_an_unmatched_function() -> None:
    guest_ids = ["m.py::t[a]", "m.py::t[b]", "m.py::u[1]", "m.py::u[2]", "m.py::v"]
    host_ids = {"m.py::t[host]", "m.py::u[1]"}
    assert guest_plugin.selected(guest_ids, host_ids) == {"m.py::t[a]", "m.py::t[b]", "m.py::u[1]"}


def _versions(*names: str, version: str = "1") -> dict[str, list[str]]:
    return {n: [version] for n in names}


def _complete(abi: str, *, image: str = "signed") -> dict[str, list[str]]:
    names = harness.kernel_names(abi)
    chosen = names["image"][0 if image == "signed" else 1]
    return _versions(chosen, names["headers"][0], names["headers-common"][0],
                     names["kbuild"][0], version=f"{abi}-v")


def test_the_newest_complete_kernel_is_chosen() -> None:
    headers = ["linux-headers-6.12.90+deb12-amd64", "linux-headers-6.12.90+deb12.1-amd64",
               "linux-headers-6.12.96+deb12-amd64", "linux-headers-6.12.96+deb12-cloud-amd64"]
    versions = {**_complete("6.12.90+deb12"), **_complete("6.12.90+deb12.1", image="unsigned"),
                "linux-headers-6.12.96+deb12-amd64": ["6.12.96+deb12-v"],  # no image, no kbuild
                "linux-source-6.12": ["6.12.96+deb12-v", "6.12.90+deb12.1-v", "6.12.90+deb12-v"]}
    release, chosen = harness.choose_kernel(headers, versions)
    assert release == "6.12.90+deb12.1-amd64"
    assert chosen["image"] == ("linux-image-6.12.90+deb12.1-amd64-unsigned", "6.12.90+deb12.1-v")
    assert chosen["source"] == ("linux-source-6.12", "6.12.90+deb12.1-v")


def test_a_source_of_another_version_does_not_complete_a_kernel() -> None:
    versions = {**_complete("6.12.95+deb12"), "linux-source-6.12": ["6.12.96-1"]}
    with pytest.raises(PeerError, match="no complete set"):
        harness.choose_kernel(["linux-headers-6.12.95+deb12-amd64"], versions)


def test_kbuild_compiler_comes_from_the_headers(tmp_path: Path) -> None:
    (tmp_path / ".kernelvariables").write_text(
        "override ARCH = x86\n"
        "CC = $(if $(DEBIAN_KERNEL_USE_CCACHE),$(CCACHE)) $(CROSS_COMPILE)gcc-12\n"
        "override CROSS_COMPILE = x86_64-linux-gnu-\n")
    assert harness.kbuild_compiler(tmp_path) == "x86_64-linux-gnu-gcc-12"
    (tmp_path / ".kernelvariables").write_text("CC = gcc-14\n")
    assert harness.kbuild_compiler(tmp_path) == "gcc-14"


def _elf(*segment_types: int) -> bytes:
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 0x20, 64)
    struct.pack_into("<HH", header, 0x36, 56, len(segment_types))
    return bytes(header) + b"".join(struct.pack("<I", t) + bytes(52) for t in segment_types)


def test_static_elf_has_no_interpreter(tmp_path: Path) -> None:
    pt_load, pt_interp, pt_dynamic = 1, 3, 2
    static, dynamic = tmp_path / "static", tmp_path / "dynamic"
    static.write_bytes(_elf(pt_load, pt_load))
    dynamic.write_bytes(_elf(pt_load, pt_interp, pt_dynamic))
    assert harness._is_static_elf(static)
    assert not harness._is_static_elf(dynamic)
    assert not harness._is_static_elf(Path(__file__))
