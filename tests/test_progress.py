"""Progress of long transfers: a redrawn bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

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
