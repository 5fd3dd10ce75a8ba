"""The command line as a whole: one exit-status rule for every command (2: the command
line is wrong; 1: what it names cannot be read or is rejected), one line per failure,
every input form for every command that reads a file, --debug before or after the
command, --version, a did-you-mean, ^C and a reader that goes away, and what
``vmstate --help`` and ``vmstate analyze`` import."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import DATA
from test_inputs import image
from test_pci_vfio import host_bdfs, require_root

from vmstate import analyze as analyze_module
from vmstate.cli import COMMANDS, main

STREAM = DATA / "qemu" / "pc-minimal.mig"
OTHER_STREAM = DATA / "qemu" / "pc-e1000-usb-hda.mig"
DUMP = DATA / "qemu" / "dump-pc-i440fx-7.2.json"
VMDESC = DATA / "qemu" / "pc-minimal.desc.json"
TOML = DATA / "descriptions" / "every-kind.toml"


def vmstate(
    *args: str, stdin: bytes | None = None, pipe: bytes | None = None, timeout: float = 120
) -> tuple[int, str, str]:
    """``python -m vmstate ARGS`` as a user runs it: *stdin* on standard input, *pipe*
    through a pipe named ``/dev/fd/N`` where an argument says PIPE (what a shell's
    ``<(...)`` gives).  Exit status, stdout, stderr."""
    fds: tuple[int, ...] = ()
    writer = None
    if pipe is not None:
        read_end, write_end = os.pipe()
        args = tuple(f"/dev/fd/{read_end}" if a == "PIPE" else a for a in args)
        fds = (read_end,)

        def feed() -> None:
            with os.fdopen(write_end, "wb") as f:
                f.write(pipe)

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "vmstate", *args],
            input=stdin,
            capture_output=True,
            pass_fds=fds,
            timeout=timeout,
            check=False,
        )
    finally:
        for fd in fds:
            os.close(fd)
    if writer is not None:
        writer.join(timeout=10)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


# -- the exit-status rule, per command ---------------------------------------------------

MISSING = "/nonexistent/input"
USAGE, REJECTED = 2, 1


def _cases(tmp: Path) -> list[tuple[str, list[str], int, str]]:
    """(command, arguments, status, a word of the one error line) for every command."""
    garbage = tmp / "garbage"
    garbage.write_bytes(b"this is no stream, no JSON and no TOML \xff\xfe")
    taken = tmp / "taken"
    taken.mkdir()
    saved = tmp / "saved.vms"
    return [
        ("devices", ["devices", "--bdf-only", "--json"], USAGE, "not allowed with"),
        ("decode-config", ["decode-config", MISSING], REJECTED, "no such file"),
        ("decode-config", ["decode-config", "--slot", "x", str(garbage)], USAGE, "--slot"),
        ("save", ["save", "0000:ff:1f.7", "-o", str(saved)], REJECTED, "no PCI device"),
        ("save", ["save", "eth0", "-o", str(saved)], USAGE, "neither a PCI address"),
        ("show", ["show", MISSING], REJECTED, "No such file"),
        ("show", ["show", str(garbage)], REJECTED, "not a QEMU migration stream"),
        ("show", ["show"], USAGE, "required: FILE"),
        ("load", ["load", "--dry-run", MISSING, "0000:00:00.0"], REJECTED, "No such file"),
        ("load", ["load", str(STREAM), "0000:00:00.0"], USAGE, "give a command"),
        ("analyze", ["analyze", MISSING], REJECTED, "No such file"),
        ("analyze", ["analyze", str(garbage)], REJECTED, "not a QEMU migration stream"),
        ("analyze", ["analyze", str(STREAM), "--extract-ram", str(taken)], REJECTED, "exists"),
        ("analyze", ["analyze", str(STREAM), "--format", "xml"], USAGE, "invalid choice"),
        ("encode", ["encode", MISSING, "-o", str(tmp / "o")], REJECTED, "No such file"),
        ("encode", ["encode", str(garbage), "-o", str(tmp / "o")], REJECTED, "not JSON"),
        ("encode", ["encode", str(garbage)], USAGE, "-o/--output"),
        ("diff", ["diff", MISSING, str(STREAM)], REJECTED, "No such file"),
        ("diff", ["diff", str(STREAM), str(DUMP)], REJECTED, "the other a description set"),
        ("diff", ["diff", "-", "-"], USAGE, "only one of A and B"),
        ("check", ["check", "--src", MISSING, "--dst", str(DUMP)], REJECTED, "No such file"),
        (
            "check",
            ["check", "--src", str(garbage), "--dst", str(DUMP)],
            REJECTED,
            "not a description",
        ),
        ("check", ["check", "--stream", MISSING, "--dst", str(DUMP)], REJECTED, "No such file"),
        ("check", ["check", "--stream", str(STREAM)], USAGE, "--stream needs --dst"),
        (
            "check",
            ["check", "--stream", str(STREAM), "--dst", str(DUMP), "--src", str(VMDESC)],
            REJECTED,
            "--src is the source QEMU's -dump-vmstate",
        ),
        ("lint", ["lint", MISSING], REJECTED, ""),
        ("lint", ["lint"], USAGE, "required: FILE"),
        ("describe", ["describe", f"{MISSING}.json"], REJECTED, "No such file"),
        ("describe", ["describe", str(garbage)], REJECTED, "not a description file"),
        ("describe", ["describe", "no-such-description"], USAGE, "no description named"),
        ("describe", ["describe", str(DUMP), "no-such-device"], REJECTED, "no section"),
    ]


def test_every_command_has_its_exit_status_cases(tmp_path: Path) -> None:
    assert {command for command, *_ in _cases(tmp_path)} == set(COMMANDS)


@pytest.mark.parametrize("n", range(31))
def test_exit_status_rule(n: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = _cases(tmp_path)
    assert len(cases) == 31
    command, args, status, word = cases[n]
    assert main(args) == status, (command, capsys.readouterr().err)
    out, err = capsys.readouterr()
    if status == REJECTED and command == "lint":
        assert "[unreadable]" in out and err == ""
        return
    lines = err.splitlines()
    if status == USAGE and not err.startswith("vmstate: usage error: "):
        assert lines[0].startswith("usage: vmstate")  # argparse: the usage, then one line
        assert lines[-1].startswith("vmstate") and ": error: " in lines[-1]
    else:
        assert len(lines) == 1, err
    assert word in lines[-1]
    assert "Traceback" not in err


def test_debug_before_or_after_the_command_shows_the_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for args in (["--debug", "analyze", MISSING], ["analyze", MISSING, "--debug"]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err
        assert err.endswith(f"vmstate: error: {MISSING}: No such file or directory\n")


def test_version_and_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("vmstate 0.")
    assert main(["analyse", str(STREAM)]) == 2
    assert "unknown command 'analyse' (did you mean 'analyze'?)" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate' (commands: devices, " in capsys.readouterr().err


def test_a_bug_is_one_line_with_its_own_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(analyze_module, "qemu_sections", broken)
    assert main(["analyze", str(STREAM), "--format", "qemu"]) == 70
    assert capsys.readouterr().err == (
        "vmstate: internal error (a bug: --debug shows where): ZeroDivisionError: division by zero\n"
    )


# -- streams that are none, or cut short --------------------------------------------------

#: how each command that reads a stream is given one
BROKEN_READERS = {
    "show": ["show", "FILE"],
    "analyze": ["analyze", "FILE"],
    "analyze --format qemu": ["analyze", "FILE", "--format", "qemu"],
    "describe": ["describe", "FILE"],
    "check --stream": ["check", "--stream", "FILE", "--dst", str(DUMP)],
    "diff": ["diff", "FILE", str(STREAM)],
}


def _broken_streams() -> list[tuple[str, bytes, str]]:
    """(name, bytes, what the one error line says): the length cut at is where it ends."""
    data = STREAM.read_bytes()
    cases = [("empty", b"", "not a QEMU migration stream")]
    cases.append(("garbage", b"GARBAGE!" * 64, "not a QEMU migration stream"))
    for n in (3, 20, 100_000, len(data) - 20):  # header, configuration, RAM, vmdesc
        cases.append((f"cut at {n}", data[:n], f"truncated at offset {n:#x}"))
    return cases


@pytest.mark.parametrize("reader", BROKEN_READERS)
def test_no_stream_and_a_cut_stream_are_said_so_by_every_reader(
    reader: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Never "no vmdesc": what is wrong is the stream itself."""
    for name, data, said in _broken_streams():
        path = tmp_path / "input"
        path.write_bytes(data)
        args = [str(path) if a == "FILE" else a for a in BROKEN_READERS[reader]]
        assert main(args) == REJECTED, (name, capsys.readouterr())
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1, (name, err)
        if reader == "describe" and name in ("empty", "garbage"):
            said = "empty: not a description file" if name == "empty" else "not TOML"
        assert said in err and "vmdesc;" not in err and "no vmdesc" not in err, (name, err)


# -- ^C and a reader that goes away -------------------------------------------------------


def test_interrupted_ram_extraction_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """^C half way through the pages: exit 130, one line, no directory, no temporary one."""
    writes = 0
    pwritev = os.pwritev

    def interrupted(fd: int, parts: list[bytes], offset: int) -> int:
        nonlocal writes
        writes += 1
        if writes == 3:
            raise KeyboardInterrupt
        return pwritev(fd, parts, offset)

    monkeypatch.setattr(os, "pwritev", interrupted)
    target = tmp_path / "ram"
    assert main(["analyze", str(STREAM), "--extract-ram", str(target)]) == 130
    assert capsys.readouterr().err == "vmstate: interrupted\n"
    assert writes == 3
    assert list(tmp_path.iterdir()) == []


def test_interrupted_encode_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import vmstate.encode

    assert main(["analyze", str(STREAM), "--json"]) == 0
    (tmp_path / "doc.json").write_text(capsys.readouterr().out)
    out = tmp_path / "out.mig"
    out.write_bytes(b"old")
    records = vmstate.encode._records

    def interrupted(*args: object) -> object:
        for n, chunk in enumerate(records(*args)):  # type: ignore[arg-type]
            if n == 20:
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(vmstate.encode, "_records", interrupted)
    assert main(["encode", str(tmp_path / "doc.json"), "-o", str(out)]) == 130
    assert capsys.readouterr().err == "vmstate: interrupted\n"
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.json", "out.mig"]


def test_sigint_from_a_terminal_is_one_line_and_130(tmp_path: Path) -> None:
    """A real SIGINT while vmstate waits for a pipe that never ends."""
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vmstate", "analyze", f"/dev/fd/{read_end}"],
            pass_fds=(read_end,),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        os.write(write_end, STREAM.read_bytes()[:4096])
        time.sleep(1.0)  # it is blocked reading the rest
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert (proc.returncode, out, err) == (130, b"", b"vmstate: interrupted\n")


def test_a_reader_that_goes_away_gets_no_complaint() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmstate", "describe", str(DUMP)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # | head -1
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert err == b""


# -- every input form ---------------------------------------------------------------------


def _forms(data: bytes) -> list[tuple[str, dict[str, bytes]]]:
    """The argument and the subprocess input of each form of one file's contents."""
    return [("-", {"stdin": data}), ("/dev/stdin", {"stdin": data}), ("PIPE", {"pipe": data})]


READERS = {
    "show": (["show", "FILE"], STREAM),
    "analyze": (["analyze", "FILE"], STREAM),
    "analyze --format qemu": (["analyze", "FILE", "--format", "qemu"], STREAM),
    "check --stream": (["check", "--stream", "FILE", "--dst", str(STREAM)], STREAM),
    "check --src": (["check", "--src", "FILE", "--dst", str(DUMP)], DUMP),
    "check --dst": (["check", "--src", str(DUMP), "--dst", "FILE"], DUMP),
    "describe (a stream)": (["describe", "FILE", "timer"], STREAM),
    "describe (a dump)": (["describe", "FILE", "e1000"], DUMP),
    "describe (a description file)": (["describe", "FILE"], TOML),
    "lint": (["lint", "FILE"], TOML),
    "diff": (["diff", "FILE", str(OTHER_STREAM)], STREAM),
}


def _named(out: str, name: str) -> str:
    """*out* with the file's name, where a line starts with it, said FILE."""
    lines = []
    for line in out.splitlines():
        for prefix in (f"{name}:", "/dev/fd/"):
            if line.startswith(prefix):
                line = (
                    "FILE:" + line[len(prefix) :].split(":", 1)[-1]
                    if prefix == "/dev/fd/"
                    else "FILE:" + line[len(prefix) :]
                )
        lines.append("A: FILE" if line.startswith("A: ") else line)
    return "\n".join(lines)


@pytest.mark.parametrize("reader", READERS)
def test_every_reader_reads_stdin_and_pipes_as_it_reads_a_file(reader: str) -> None:
    template, path = READERS[reader]
    status, expected, err = vmstate(*(str(path) if a == "FILE" else a for a in template))
    assert status in (0, 1) and "Traceback" not in err, err
    for form, given in _forms(path.read_bytes()):
        status_form, out, err = vmstate(*(form if a == "FILE" else a for a in template), **given)
        assert status_form == status, (form, err)
        assert _named(out, form) == _named(expected, str(path)), form


STREAM_READERS = ["show", "analyze", "check --stream", "describe (a stream)", "diff"]


@pytest.mark.parametrize("reader", STREAM_READERS)
def test_every_stream_reader_reads_libvirt_save_images(reader: str, tmp_path: Path) -> None:
    template, path = READERS[reader]
    saved = tmp_path / "vm.save"
    saved.write_bytes(image(path.read_bytes()))
    status, expected, _ = vmstate(*(str(path) if a == "FILE" else a for a in template))
    status_image, out, err = vmstate(*(str(saved) if a == "FILE" else a for a in template))
    assert status_image == status, err
    if reader in ("show", "analyze"):
        first, out = out.split("\n", 1)  # the image's own line comes first
        assert "libvirt save image v2, raw, domain demo" in first
    assert _named(out, str(saved)) == _named(expected, str(path))


def test_encode_reads_its_document_from_stdin_and_pipes(tmp_path: Path) -> None:
    status, doc, _ = vmstate("analyze", str(STREAM), "--json")
    assert status == 0
    for form, given in _forms(doc.encode()):
        out = tmp_path / "out.mig"
        status, _, err = vmstate("encode", form, "-o", str(out), **given)
        assert status == 0, err
        assert out.read_bytes() == STREAM.read_bytes()
        out.unlink()


def test_saved_states_are_read_from_every_form_by_load_and_check(tmp_path: Path) -> None:
    """load --dry-run and check --state, on a file saved from this host's first device."""
    require_root()
    bdf = next(iter(host_bdfs()), None)
    if bdf is None:
        pytest.skip("this host has no PCI device")
    saved = tmp_path / "dev.vms"
    assert vmstate("save", bdf, "-o", str(saved))[0] == 0
    data = saved.read_bytes()
    for template in (
        ["load", "--dry-run", "FILE", bdf],
        ["check", "--state", "FILE", "--device", bdf],
    ):
        status, expected, err = vmstate(*(str(saved) if a == "FILE" else a for a in template))
        assert status == 0, err
        for form, given in _forms(data):
            status, out, err = vmstate(*(form if a == "FILE" else a for a in template), **given)
            assert status == 0, (template, form, err)
            if template[0] == "check":
                assert out == expected
            else:
                assert out.split(" -> ", 1)[1] == expected.split(" -> ", 1)[1]


# -- what gets imported -------------------------------------------------------------------


def _imported(*args: str) -> tuple[set[str], set[str]]:
    """The vmstate modules and the third-party packages a run of the command imports."""
    names = _modules_after(f"from vmstate.cli import main\nmain({list(args)!r})\n")
    ours = {n for n in names if n == "vmstate" or n.startswith("vmstate.")}
    third = {n.split(".")[0] for n in names} & {"attrs", "attr", "cattrs", "cffi", "backports"}
    return ours, third


def _modules_after(code: str) -> set[str]:
    """The modules in sys.modules after *code* runs in a new interpreter started as on a
    clean machine: without site (-S), so that no .pth file of this one imports anything
    first; the library and its dependencies are found through PYTHONPATH."""
    import site

    import vmstate

    paths = [str(Path(vmstate.__file__).resolve().parents[1]), *site.getsitepackages()]
    script = f"import sys\n{code}sys.stdout.write('\\n' + repr(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-S", "-c", script], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
    )
    return set(ast.literal_eval(done.stdout.splitlines()[-1]))


#: standard modules a bare stream needs none of: decompressors and programs (libvirt
#: images), temporary files (pipes, RAM extraction), tracebacks (--debug)
UNPACKING_MODULES = {
    "bz2", "lzma", "subprocess", "shutil", "tempfile", "traceback", "pathlib", "zipfile",
}  # fmt: skip


def test_help_imports_nothing_of_the_library() -> None:
    """Nor typing, nor shutil (argparse's formatter takes it for the terminal's width),
    nor any of the library: ``vmstate --help`` costs argparse."""
    assert _imported("--help") == ({"vmstate", "vmstate.cli"}, set())
    bare = _modules_after("")
    for argv in (["--help"], ["analyze", "--help"]):
        added = _modules_after(f"from vmstate.cli import main\nmain({argv!r})\n") - bare
        assert added & {"typing", "shutil", "bz2", "lzma", "tempfile", "subprocess"} == set()
    ours, third = _imported("analyze", "--no-such-option")
    assert (ours, third) == ({"vmstate", "vmstate.cli", "vmstate.cli.analyze"}, set())


#: what reading a bare stream without vfio sections may use: the interpreter and the
#: kinds a vmdesc names, the stream's framing, its vmdesc, the input layer
ANALYZE_MODULES = {
    "vmstate", "vmstate.cli", "vmstate.cli.analyze", "vmstate.analyze", "vmstate.errors",
    "vmstate.description", "vmstate.fields", "vmstate.hooks", "vmstate.predicates",
    "vmstate.interpreter", "vmstate.interpreter.context", "vmstate.interpreter.engine",
    "vmstate.interpreter.plan", "vmstate.interpreter.spans", "vmstate.kinds",
    "vmstate.kinds.arrays", "vmstate.kinds.base", "vmstate.kinds.buffer",
    "vmstate.kinds.nullptr", "vmstate.kinds.scalar", "vmstate.kinds.struct",
    "vmstate.inputs", "vmstate.progress",
    "vmstate.stream", "vmstate.stream_config", "vmstate.stream_ram", "vmstate.vfio_section",
    "vmstate.vmdesc",
}  # fmt: skip


def test_analyze_imports_the_stream_reader_only() -> None:
    """No PCI decoding, VFIO bindings, description files (TOML, cattrs), checks, libvirt
    images or decompressors: a bare stream needs none of them."""
    ours, third = _imported("analyze", str(STREAM))
    assert ours == ANALYZE_MODULES
    assert third == {"attrs", "attr"}
    added = _modules_after(f"from vmstate.cli import main\nmain(['analyze', {str(STREAM)!r}])\n")
    bare = _modules_after("")
    assert (added - bare) & UNPACKING_MODULES == set()


# -- the program as installed ---------------------------------------------------------


def test_the_program_writes_all_of_qemus_text_before_it_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``vmstate`` (``python -m vmstate``, the console script's ``program``) ends
    without tearing the interpreter down: its whole output must be flushed first.
    The text is QEMU 7.2's analyzer's own, 1.7 MB; the exit statuses are main's."""
    stream = DATA / "qemu" / "q35-e1000e-virtio.mig"
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run(
        [sys.executable, "-m", "vmstate", "analyze", "--format", "qemu", str(stream)],
        capture_output=True, check=False, env=buffered,
    )
    expected = stream.with_name("q35-e1000e-virtio.state.json").read_bytes()
    assert (done.returncode, done.stdout, done.stderr) == (0, expected, b"")
    # the summary is many short prints, held in the buffer until the flush
    summary = subprocess.run(
        [sys.executable, "-m", "vmstate", "analyze", str(stream)],
        capture_output=True, text=True, check=False, env=buffered,
    )
    main(["analyze", str(stream)])
    assert (summary.returncode, summary.stdout) == (0, capsys.readouterr().out)
    refused = subprocess.run(
        [sys.executable, "-m", "vmstate", "analyze", str(DATA / "qemu" / "MANIFEST.json")],
        capture_output=True, text=True, check=False,
    )
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("vmstate: ")
    usage = subprocess.run([sys.executable, "-m", "vmstate", "analyze"], capture_output=True,
                           text=True, check=False)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    with open("/dev/full", "w") as full:  # the output held until the end cannot be written
        lost = subprocess.run([sys.executable, "-m", "vmstate", "analyze", str(stream)],
                              stdout=full, stderr=subprocess.PIPE, text=True, check=False,
                              env=buffered)
    assert (lost.returncode, lost.stderr) == (
        1, "vmstate: cannot write the output: No space left on device\n"
    )
