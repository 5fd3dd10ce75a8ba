"""The README's library example and commands run as shown; its table lists every command."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from test_tutorial import blocks, commands, run_console, shell_env, shown_matches  # noqa: F401

from vmstate.cli import COMMANDS

README = Path(__file__).resolve().parent.parent / "README.md"


def test_library_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1
    exec(compile(blocks[0], "README.md", "exec"), {})  # the README's own example, not input


def test_quickstart_commands_are_the_ci_ones() -> None:
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    test_command = "python3 -m pip install -e '.[test]' && python3 -m pytest"
    assert f"    {test_command}\n" in text
    assert ci.rstrip().splitlines()[-1].strip() == test_command


def test_the_readme_commands_run_as_shown(
    tmp_path: Path,
    shell_env: dict[str, str],  # noqa: F811 (a fixture)
) -> None:
    """Its console block, on the QEMU 7.2 stream it speaks of (tests/data/qemu/pc-minimal)."""
    (block,) = (b for b in blocks(README.read_text()) if b.lang == "console")
    shutil.copy(README.parent / "tests" / "data" / "qemu" / "pc-minimal.mig", tmp_path / "vm.mig")
    cmds = commands(block.body)
    results = run_console(cmds, tmp_path, shell_env)
    for i, (cmd, (status, output)) in enumerate(zip(cmds, results, strict=True)):
        assert shown_matches(cmd.shown, output), f"`{cmd.line}` printed:\n{output}"
        assert status == 0 or cmds[i + 1].line == "echo $?", f"`{cmd.line}` exited {status}"


def test_the_command_table_names_every_command() -> None:
    rows = re.findall(r"^\| `vmstate ([a-z-]+)", README.read_text(), re.M)
    assert set(rows) == set(COMMANDS)
