"""``vmstate lint``: every problem of every file at its line:col, sorted, counted, exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA
from syrupy.assertion import SnapshotAssertion

from vmstate.cli import main

LINT = DATA / "lint"

#: each one-problem file: (line, col, severity, code, a word of the message)
ONE_PROBLEM = {
    "unknown-key.toml": (7, 67, "error", "unknown-key", "'lenght'"),
    "unknown-type.toml": (7, 20, "error", "unknown-type", "'uint24'"),
    "reference-unknown.toml": (8, 56, "warning", "reference-unknown", "'fifo_len'"),
    "reference-later.toml": (6, 38, "error", "reference-later", "comes later"),
    "since-above-version.toml": (9, 38, "error", "since-above-version", "'extra'"),
    "subsection-name.toml": (10, 1, "error", "subsection-name", "'lint-sub/irq'"),
    "subsection-prefix.toml": (16, 1, "error", "subsection-prefix", "'demo/msix'"),
    "unknown-predicate.toml": (7, 49, "warning", "unknown-predicate", "'has_msix'"),
}

MANY_PROBLEMS = [
    (5, 1, "error", "unknown-key"),
    (9, 36, "error", "since-above-version"),
    (10, 38, "error", "reference-later"),
    (12, 20, "error", "unknown-type"),
    (13, 34, "warning", "unknown-predicate"),
    (17, 1, "error", "subsection-name"),
    (21, 33, "error", "unknown-key"),
    (28, 36, "error", "since-above-version"),
]


def lint(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    status = main(["lint", *args])
    out, err = capsys.readouterr()
    assert err == ""
    return status, out.splitlines()


def test_the_data_is_one_file_per_problem_kind_plus_many() -> None:
    assert sorted(p.name for p in LINT.glob("*.toml")) == sorted(
        [*ONE_PROBLEM, "many-problems.toml"]
    )


@pytest.mark.parametrize("name", sorted(ONE_PROBLEM))
def test_each_problem_at_its_line_and_column(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(LINT)
    line, col, severity, code, word = ONE_PROBLEM[name]
    status, out = lint(capsys, name)
    assert len(out) == 2, out
    assert out[0].startswith(f"{name}:{line}:{col}: {severity}: ")
    assert out[0].endswith(f" [{code}]")
    assert word in out[0]
    errors, warnings = (1, 0) if severity == "error" else (0, 1)
    assert (
        out[1]
        == f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)} in 1 file"
    )
    assert status == (1 if severity == "error" else 0)


def test_every_problem_of_a_file_at_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(LINT)
    status, out = lint(capsys, "many-problems.toml", "--json")
    report = json.loads("\n".join(out))
    found = [(p["line"], p["col"], p["severity"], p["code"]) for p in report["problems"]]
    assert found == MANY_PROBLEMS
    assert {p["file"] for p in report["problems"]} == {"many-problems.toml"}
    assert (report["files"], report["errors"], report["warnings"]) == (1, 7, 1)
    assert status == 1


def test_sorted_by_file_line_col_whatever_the_argument_order(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(LINT)
    names = ["unknown-type.toml", "many-problems.toml", "reference-later.toml"]
    _, forward = lint(capsys, *names)
    _, backward = lint(capsys, *reversed(names))
    assert forward == backward
    located = [line.split(": ", 1)[0].split(":") for line in forward[:-1]]
    keys = [(file, int(line), int(col)) for file, line, col in located]
    assert keys == sorted(keys)
    assert [k[0] for k in keys] == ["many-problems.toml"] * 8 + [
        "reference-later.toml",
        "unknown-type.toml",
    ]
    assert forward[-1] == "9 errors, 1 warning in 3 files"


def test_whole_directory_output(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    snapshot: SnapshotAssertion,
) -> None:
    monkeypatch.chdir(DATA)
    status, out = lint(capsys, "lint")
    assert status == 1
    assert out[-1] == "13 errors, 3 warnings in 9 files"
    assert "\n".join(out) == snapshot


def test_clean_file_and_warnings_only_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = tmp_path / "clean.toml"
    clean.write_text(
        '[description]\nname = "clean"\nversion_id = 1\n'
        'fields = [ { name = "n", type = "uint8" }, '
        '{ name = "d", type = "vbuffer", size = "n", max_size = 8 } ]\n'
    )
    assert lint(capsys, str(clean)) == (0, ["0 errors, 0 warnings in 1 file"])
    status, out = lint(capsys, str(LINT / "unknown-predicate.toml"), str(clean))
    assert (status, out[-1]) == (0, "0 errors, 1 warning in 2 files")


def test_unreadable_files_are_problems_of_their_own_and_the_rest_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.toml"
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[description]\nname = "\xe9"\n')
    status, out = lint(capsys, str(LINT / "unknown-key.toml"), str(missing), str(latin1))
    assert status == 1
    assert f"{missing}:1:1: error: cannot read: No such file or directory [unreadable]" in out
    assert f"{latin1}:2:9: error: not UTF-8: byte 0xe9 at offset 22 [unreadable]" in out
    assert any(line.startswith(f"{LINT / 'unknown-key.toml'}:") for line in out)
    assert out[-1].endswith(" in 3 files")


def test_a_directory_without_description_files_is_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lint", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"vmstate: error: {tmp_path}: no .toml files in this directory\n"


def test_absurd_counts_and_sizes_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fixed size no load accepts is an error, a maximum above the limit a warning."""
    path = tmp_path / "absurd.toml"
    path.write_text(
        '[description]\nname = "absurd"\nversion_id = 1\nfields = [\n'
        '  { name = "n", type = "uint32" },\n'
        '  { name = "big", type = "buffer", size = 4294967296 },\n'
        '  { name = "list", type = "varray", element = "uint8", count = "n", max_count = 4294967295 },\n'
        "]\n"
    )
    status, out = lint(capsys, str(path))
    assert status == 1
    assert out == [
        f"{path}:6:36: error: size 4294967296 is above the 1073741824 a load accepts: "
        "this field never loads [over-limit]",
        f"{path}:7:69: warning: max_count 4294967295 is above the 4194304 a load accepts: "
        "longer data is refused all the same [max-over-limit]",
        "1 error, 1 warning in 1 file",
    ]


def test_a_real_process_exits_1_on_errors() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vmstate", "lint", "subsection-name.toml"],
        cwd=LINT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout.splitlines()[0].startswith("subsection-name.toml:10:1: error: ")
