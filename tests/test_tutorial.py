"""docs/tutorial.md runs as written: every code block is a step, run in order in a fresh directory.

- ```` ```LANG title="FILE" ```` writes FILE (the tutorial asks the reader to create it);
- ```` ```text title="FILE" ```` shows what FILE now holds: it must, exactly;
- ```` ```diff title="FILE" ```` edits FILE: its ``-`` lines become its ``+`` lines;
- ```` ```console ```` runs each ``$ command`` in one bash session; what follows it is its
  output (stdout and stderr) where ``...`` stands for anything. A command must exit 0
  unless the next command is ``echo $?``, which shows its status.

Any other block fails the test: nothing in the tutorial goes unchecked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

TUTORIAL = Path(__file__).parent.parent / "docs" / "tutorial.md"
_BLOCK = re.compile(
    r'^```(?P<lang>[a-z]+)(?: title="(?P<title>[^"]+)")?\n(?P<body>.*?)^```\n', re.M | re.S
)
_MARK = "@@vmstate-tutorial"
_MARKED = re.compile(rf"\n?{_MARK} (\d+) (\d+)@@\n")
_SHOW_STATUS = "echo $?"


@attrs.frozen
class Block:
    lang: str
    title: str | None
    body: str
    line: int

    def __str__(self) -> str:
        title = "" if self.title is None else f' title="{self.title}"'
        return f"tutorial.md:{self.line}: ```{self.lang}{title}"


def blocks(text: str) -> list[Block]:
    return [
        Block(m["lang"], m["title"], m["body"], text.count("\n", 0, m.start()) + 1)
        for m in _BLOCK.finditer(text)
    ]


@attrs.frozen
class Command:
    line: str
    shown: str


def commands(body: str) -> list[Command]:
    out: list[Command] = []
    for line in body.splitlines(keepends=True):
        if line.startswith("$ "):
            out.append(Command(line[2:].rstrip("\n"), ""))
        else:
            assert out, f"console output before any command: {line!r}"
            out[-1] = attrs.evolve(out[-1], shown=out[-1].shown + line)
    return out


def shown_matches(shown: str, actual: str) -> bool:
    """Whether *actual* output is what the tutorial shows, ``...`` matching anything."""
    pattern = re.escape(shown.rstrip()).replace(re.escape("..."), ".*?")
    return re.fullmatch(pattern, actual.rstrip(), re.S) is not None


def run_console(cmds: list[Command], cwd: Path, env: dict[str, str]) -> list[tuple[int, str]]:
    """Each command's exit status and output, from one bash session as a reader would type them."""
    script = ["exec 2>&1"]
    for i, cmd in enumerate(cmds):
        # the marker reports the status of the command before it, then restores it for `echo $?`
        script.append(f'__s=$?; printf "\\n{_MARK} {i} %s@@\\n" "$__s"; (exit $__s); {cmd.line}')
    script.append(f'printf "\\n{_MARK} {len(cmds)} %s@@\\n" "$?"')
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    parts = _MARKED.split(done.stdout)
    # parts: ["", "0", status, output0, "1", status, output1, ..., str(n), status, ""]
    outputs = parts[3:-1:3]
    statuses = [int(s) for s in parts[5::3]]
    assert parts[0] == parts[-1] == "", done.stdout
    assert len(outputs) == len(statuses) == len(cmds), done.stdout
    return list(zip(statuses, outputs, strict=True))


def apply_diff(path: Path, body: str) -> None:
    old: list[str] = []
    new: list[str] = []
    for line in body.splitlines(keepends=True):
        sign, text = line[:1], line[1:]
        assert sign in "-+ ", f"not a diff line: {line!r}"
        if sign != "+":
            old.append(text)
        if sign != "-":
            new.append(text)
    text = path.read_text()
    before = "".join(old)
    assert text.count(before) == 1, f"{path.name} does not have exactly one:\n{before}"
    path.write_text(text.replace(before, "".join(new)))


@pytest.fixture
def shell_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """`python` and `vmstate` of the interpreter running the tests, first on PATH."""
    bin_dir = tmp_path_factory.mktemp("bin")
    for name, exec_line in (
        ("python", f'exec "{sys.executable}" "$@"'),
        ("vmstate", f'exec "{sys.executable}" -m vmstate "$@"'),
    ):
        shim = bin_dir / name
        shim.write_text(f"#!/bin/sh\n{exec_line}\n")
        shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        PY_COLORS="0",
        COLUMNS="80",
    )
    return env


def test_the_tutorial_runs_as_written(tmp_path: Path, shell_env: dict[str, str]) -> None:
    steps = blocks(TUTORIAL.read_text())
    assert {b.lang for b in steps} >= {"toml", "python", "console", "text", "diff"}
    work = tmp_path / "work"
    work.mkdir()
    for block in steps:
        if block.lang == "console":
            cmds = commands(block.body)
            results = run_console(cmds, work, shell_env)
            for i, (cmd, (status, output)) in enumerate(zip(cmds, results, strict=True)):
                assert shown_matches(cmd.shown, output), (
                    f"{block}: `{cmd.line}` printed:\n{output}\nthe tutorial shows:\n{cmd.shown}"
                )
                status_shown = i + 1 < len(cmds) and cmds[i + 1].line == _SHOW_STATUS
                assert status == 0 or status_shown, (
                    f"{block}: `{cmd.line}` exited {status}:\n{output}"
                )
        elif block.title is None:
            pytest.fail(f"{block}: a block with no title and not console cannot be run")
        elif block.lang == "text":
            path = work / block.title
            assert path.read_text() == block.body, (
                f"{block}: {block.title} holds:\n{path.read_text()}"
            )
        elif block.lang == "diff":
            apply_diff(work / block.title, block.body)
        else:
            (work / block.title).parent.mkdir(parents=True, exist_ok=True)
            (work / block.title).write_text(block.body)


# -- the harness itself: a wrong tutorial must fail ------------------------------------------


def test_a_wrong_output_or_an_unshown_failure_is_caught(
    tmp_path: Path, shell_env: dict[str, str]
) -> None:
    cmds = commands("$ echo one; echo two >&2\none\ntwo\n$ false\n$ echo $?\n1\n$ printf x\nx\n")
    results = run_console(cmds, tmp_path, shell_env)
    assert results == [(0, "one\ntwo\n"), (1, ""), (0, "1\n"), (0, "x")]
    assert shown_matches(cmds[0].shown, results[0][1])
    assert not shown_matches("one\n", results[0][1])
    assert shown_matches("...\ntwo\n", results[0][1])
    assert not shown_matches("three\n...", results[0][1])
    assert shown_matches("", "")
    assert not shown_matches("", "surprise")


def test_blocks_and_diffs(tmp_path: Path) -> None:
    text = 'prose\n```toml title="a.toml"\nx = 1\n```\n\n```console\n$ ls\n```\n'
    assert blocks(text) == [
        Block("toml", "a.toml", "x = 1\n", 2),
        Block("console", None, "$ ls\n", 6),
    ]
    path = tmp_path / "f.py"
    path.write_text("a = 1\nb = 2\nc = 3\n")
    apply_diff(path, " a = 1\n-b = 2\n+b = 20\n+b2 = 4\n")
    assert path.read_text() == "a = 1\nb = 20\nb2 = 4\nc = 3\n"
    with pytest.raises(AssertionError, match="does not have exactly one"):
        apply_diff(path, "-b = 2\n+b = 3\n")
