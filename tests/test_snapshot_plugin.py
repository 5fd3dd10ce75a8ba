"""The vmstate_snapshot fixture: a one-field change fails with a diff naming the field."""

from __future__ import annotations

import pytest

PROJECT_TEST = """
from pathlib import Path

from vmstate import fields as F
from vmstate.description import Description, Subsection
from vmstate.stream_writer import DeviceSection, write

DEV = Description(
    "demo-nic", 2, 1,
    [F.uint16("command"), F.uint32("mac_lo"), F.buffer("config", 40), F.array("regs", "uint16", 3)],
    [Subsection(Description("demo-nic/irq", 1, 1, [F.bool_("level")]))],
)
VALUE = int(Path(__file__).with_name("value.txt").read_text())


def test_stream(vmstate_snapshot):
    state = {"command": 0x0507, "mac_lo": VALUE, "config": bytes(range(40)), "regs": [1, 2, 3],
             "demo-nic/irq": {"level": True}}
    assert write([DeviceSection("0000:00:03.0/demo-nic", DEV, state)]) == vmstate_snapshot


def test_state(vmstate_snapshot):
    state = {"command": 1, "mac_lo": 2, "config": bytes(40), "regs": [VALUE & 0xFFFF, 0, 0],
             "demo-nic/irq": {"level": False}}
    assert (DEV, state) == vmstate_snapshot
"""


def test_one_field_change_is_named_in_the_diff(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_demo=PROJECT_TEST)
    pytester.path.joinpath("value.txt").write_text("287454020")
    created = pytester.runpytest_subprocess("--snapshot-update", "-p", "no:cacheprovider")
    created.assert_outcomes(passed=2)
    files = sorted(p.name for p in pytester.path.joinpath("__snapshots__", "test_demo").iterdir())
    assert files == ["test_state.vmstate.txt", "test_stream.vmstate.txt"]
    text = pytester.path.joinpath(
        "__snapshots__", "test_demo", "test_stream.vmstate.txt"
    ).read_text()
    assert "mac_lo = 287454020 (0x11223344)" in text
    assert "demo-nic/irq = -- subsection v1" in text

    assert pytester.runpytest_subprocess("-p", "no:cacheprovider").ret == 0

    pytester.path.joinpath("value.txt").write_text("287454021")
    changed = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-vv")
    changed.assert_outcomes(failed=2)
    out = changed.stdout.str()
    assert "- 0000002d  11 22 33 44                 mac_lo = 287454020 (0x11223344)" in out
    assert "+ 0000002d  11 22 33 45                 mac_lo = 287454021 (0x11223345)" in out
    assert "- 0000002e  33 44                       regs[0] = 13124 (0x3344)" in out
    assert "+ 0000002e  33 45                       regs[0] = 13125 (0x3345)" in out
    # only the changed field's lines are marked
    marked = [line for line in out.splitlines() if line.startswith(("  - ", "  + ", "- ", "+ "))]
    assert all("mac_lo" in line or "regs[0]" in line for line in marked), marked


def test_without_syrupy_the_plugin_is_quiet_until_its_fixture_is_asked_for(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain ``pip install vmstate`` has no syrupy: here a stand-in package that cannot
    be imported comes first on the path, and syrupy's own plugin is not loaded."""
    pytester.makepyfile(
        test_other="def test_unrelated():\n    assert True\n",
        test_snap="def test_snap(vmstate_snapshot):\n    assert b'' == vmstate_snapshot\n",
    )
    blocked = pytester.mkdir("blocked") / "syrupy"
    blocked.mkdir()
    (blocked / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'syrupy'\", name='syrupy')\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(blocked.parent))
    args = ["-p", "no:syrupy", "-p", "no:cacheprovider", "-W", "error"]
    quiet = pytester.runpytest_subprocess(*args, "test_other.py")
    assert quiet.ret == 0, quiet.stdout.str() + quiet.stderr.str()
    assert quiet.stderr.str() == ""
    asked = pytester.runpytest_subprocess(*args, "test_snap.py")
    assert asked.ret == 1
    assert "needs syrupy: pip install 'vmstate[pytest]'" in asked.stdout.str()
