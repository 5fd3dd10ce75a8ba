"""The README's library example runs as shown."""

from __future__ import annotations

import re
from pathlib import Path

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
