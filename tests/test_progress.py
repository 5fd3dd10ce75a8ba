"""Progress of long transfers: a redrawn bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from conftest import DATA

from vmstate.progress import reporter


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_redrawn_bar() -> None:
    out = Terminal()
    report = reporter("dev", out)
    report(0, 4 << 20)
    report(4 << 20, 4 << 20)
    text = out.getvalue()
    assert text.startswith("\rdev [------------------------------] 0 B / 4.0 MiB")
    assert text.endswith("\rdev [##############################] 4.0 MiB / 4.0 MiB\n")
    assert text.count("\n") == 1


def test_a_pipe_gets_a_line_per_64_mib_and_the_end() -> None:
    out = io.StringIO()
    report = reporter("dev", out)
    for done in range(0, 200 << 20, 1 << 20):
        report(done, 200 << 20)
    report(200 << 20, 200 << 20)
    lines = out.getvalue().splitlines()
    assert lines == [
        "dev: 0 B of 200.0 MiB",
        "dev: 64.0 MiB of 200.0 MiB",
        "dev: 128.0 MiB of 200.0 MiB",
        "dev: 192.0 MiB of 200.0 MiB",
        "dev: 200.0 MiB of 200.0 MiB done",
    ]


def test_unknown_totals() -> None:
    out = Terminal()
    reporter("dev", out)(1536, None)
    assert out.getvalue() == "\rdev 1.5 KiB"


# -- a bar on a terminal only, for reading streams ------------------------------------------


def test_a_terminal_bar_waits_then_is_erased() -> None:
    from vmstate.progress import TerminalProgress

    out = Terminal()
    with TerminalProgress("reading x", out, delay=3600) as progress:
        progress(1 << 20, 4 << 20)
    assert out.getvalue() == "", "a quick run draws nothing"
    with TerminalProgress("reading x", out, delay=0) as progress:
        progress(1 << 20, 4 << 20)
    assert out.getvalue() == (
        "\rreading x [#######-----------------------] 1.0 MiB / 4.0 MiB\033[K\r\033[K"
    )
    piped = io.StringIO()
    with TerminalProgress("reading x", piped, delay=0) as progress:
        progress(1 << 20, 4 << 20)
    assert piped.getvalue() == ""


@pytest.mark.parametrize(
    "args",
    [
        ["analyze", "STREAM"],
        ["analyze", "STREAM", "--extract-ram", "RAM"],
        ["analyze", "STREAM", "--json"],
        ["show", "STREAM"],
        ["diff", "STREAM", "STREAM"],
        ["check", "--stream", "STREAM", "--dst", "STREAM"],
    ],
    ids=" ".join,
)
def test_long_commands_draw_a_bar_on_a_terminal_only(
    args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every command that reads a whole stream (describe reads its vmdesc only): with stderr a terminal, a bar (drawn at
    once here) that is erased at the end; output the same as without; without a terminal,
    nothing on stderr."""
    import sys

    import vmstate.progress
    from vmstate.cli import main

    stream = str(DATA / "qemu" / "pc-e1000-usb-hda.mig")
    monkeypatch.setattr(vmstate.progress, "DELAY", 0.0)
    given = [stream if a == "STREAM" else str(tmp_path / "ram1") if a == "RAM" else a for a in args]
    status = main(given)
    plain_out, plain_err = capsys.readouterr()
    assert plain_err == ""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    given = [str(tmp_path / "ram2") if a == str(tmp_path / "ram1") else a for a in given]
    assert main(given) == status
    out, _ = capsys.readouterr()
    assert out.replace("ram2", "ram1") == plain_out
    drawn = terminal.getvalue()
    assert drawn.startswith("\r") and " / " in drawn and drawn.endswith("\r\033[K"), drawn[:200]
