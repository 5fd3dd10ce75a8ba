"""The command line on generated files: every command that reads input, with its
options; each run exits 0 or 1 with at most one line on stderr and no traceback
(:func:`fuzz.checks.cli`)."""

from __future__ import annotations

import gzip
import json
import random
import tempfile
from pathlib import Path

from fuzz import corpus
from fuzz import formats as X
from fuzz import generate as G
from fuzz.checks import cli as run_cli
from fuzz.checks import require

#: a PCI address no host has: load reads the whole file before it looks for the device
NO_DEVICE = "0000:ff:1f.7"


def cli(rng: random.Random) -> None:
    """vmstate analyze, show, decode-config, check, check --stream, lint, describe, load,
    diff and encode on generated files, in-process: exit 0 or 1 with one line, no
    traceback, and a refused --extract-ram or encode leaves no files."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        command = G.pick(rng, [_analyze] * 4 + [_show, _decode_config, _decode_config, _check,
                                               _check, _check_stream, _lint, _load, _diff,
                                               _encode, _encode])
        argv = command(rng, root)
        before = set(root.iterdir())
        code, _ = run_cli(argv)
        if code == 1 and ("--extract-ram" in argv or argv[0] == "encode"):
            require(set(root.iterdir()) == before, f"a refused {argv[0]} left files behind")


def _stream_file(rng: random.Random, root: Path, vmdesc: bool = True) -> tuple[Path, corpus.Window]:
    """A real stream window (or a saved file, or a libvirt image of one) in a file."""
    reals = [r for r in corpus.real_streams() if bool(r.vmdesc) == vmdesc]
    w = corpus.window(rng, G.pick(rng, reals), most=3)
    data = w.data
    if rng.random() < 0.7:
        data = G.stream_mutation(rng, data, list(w.sections), w.vmdesc_at)
    if rng.random() < 0.1:
        data, _ = X.save_image(rng, data, G.pick(rng, ["raw", "gzip", "xz", "zstd", "bzip2"]))
    path = root / "stream.mig"
    path.write_bytes(data)
    return path, w


def _saved_file(rng: random.Random, root: Path) -> Path:
    _, data = G.pick(rng, list(corpus.saved_files()))
    path = root / "dev.vms"
    path.write_bytes(X.vfio_framing(rng, data) if rng.random() < 0.5 else X.mutate_bytes(rng, data))
    return path


def _analyze(rng: random.Random, root: Path) -> list[str]:
    choice = rng.randrange(10)
    if choice < 2:  # RAM to files
        data = G.ram_section(rng) if choice == 0 else G.mapped_ram_stream(rng)[0]
        path = root / "ram.mig"
        path.write_bytes(X.mutate_bytes(rng, data) if rng.random() < 0.5 else data)
        return ["analyze", str(path), "--extract-ram", str(root / "ram")]
    if choice == 2 and rng.random() < 0.2:  # without vmdesc, with the source's dump (slow)
        path, w = _stream_file(rng, root, vmdesc=False)
        assert w.dump is not None
        return ["analyze", str(path), "--descriptions", str(w.dump)]
    if choice == 3:  # VFIO sections of a saved file, their device data described
        return ["analyze", str(_saved_file(rng, root)), "--device-data", "mtty-migration-data",
                *G.pick(rng, [[], ["--format", "json"], ["--verify-roundtrip"]])]
    path, _ = _stream_file(rng, root)
    return ["analyze", str(path), *G.pick(rng, [[], ["--format", "json"], ["--format", "qemu"],
                                                 ["--verify-roundtrip"], ["--dump", "desc"]])]


def _show(rng: random.Random, root: Path) -> list[str]:
    path = _saved_file(rng, root) if rng.random() < 0.8 else _stream_file(rng, root)[0]
    return ["show", str(path)]


def _decode_config(rng: random.Random, root: Path) -> list[str]:
    from fuzz.device_targets import _config

    path = root / "config"
    choice = rng.randrange(4)
    if choice == 0:
        path.write_text(X.lspci_text(rng, [_config(rng) for _ in range(rng.randint(1, 3))]),
                        "latin-1")
        extra = G.pick(rng, [[], ["--slot", "00:01.0"], ["--slot", "0000:00:00.0"], ["--json"]])
    elif choice == 1:
        path = _saved_file(rng, root)
        extra = G.pick(rng, [[], ["--json"]])
    else:
        path.write_bytes(_config(rng))
        extra = G.pick(rng, [[], ["--json"]])
    return ["decode-config", str(path), *extra]


def _description_set(rng: random.Random, root: Path, name: str) -> Path:
    """One description source, as check takes it: a dump (.json, .json.gz), a vmdesc,
    a stream, a description file or a directory of them."""
    choice = rng.randrange(6)
    if choice < 2:
        tree = corpus.dump_subset(rng)
        for _ in range(rng.randint(0, 2)):
            G._mutate_json(rng, tree, 0)
        raw = json.dumps(tree).encode()
        if choice == 1:
            path = root / f"{name}.json.gz"
            packed = gzip.compress(raw, 1, mtime=0)
            path.write_bytes(X.mutate_bytes(rng, packed) if rng.random() < 0.2 else packed)
            return path
        path = root / f"{name}.json"
        path.write_bytes(raw)
        return path
    if choice == 2:
        w = corpus.window(rng, G.pick(rng, [r for r in corpus.real_streams() if r.vmdesc]))
        assert w.vmdesc_at is not None
        tree = json.loads(w.data[w.vmdesc_at + 5 :])
        for _ in range(rng.randint(0, 2)):
            G._mutate_json(rng, tree, 0)
        path = root / f"{name}.json"
        path.write_text(json.dumps(tree))
        return path
    if choice == 3:
        path, _ = _stream_file(rng, root)
        return path.rename(root / f"{name}.mig")
    path = root / f"{name}.toml"
    if choice == 5:
        path = root / name
        path.mkdir()
        for k in range(rng.randint(0, 2)):
            (path / f"d{k}.toml").write_text(G.description_file(rng))
        return path
    path.write_text(G.description_file(rng))
    return path


def _waivers(rng: random.Random, root: Path) -> list[str]:
    if rng.random() < 0.7:
        return G.pick(rng, [[], ["--no-shipped-waivers"]])
    entries = G.pick(rng, [
        '[[rename]]\nnames = ["e1000", "e1000-82540em"]\n',
        '[[rename]]\nnames = ["x"]\n',
        '[[accept]]\nsection = "e1000"\nfield = "mac_reg"\nreason = "r"\n',
        '[[rename_section]]\nnames = ["a", "b"]\n',
        "bogus = 1\n", "[[rename]]\nnames = 5\n", "x = [[[[1]]]]\n", "\xff",
    ])
    path = root / "waivers.toml"
    path.write_text(entries, "latin-1")
    return ["--waivers", str(path)]


def _check(rng: random.Random, root: Path) -> list[str]:
    src, dst = _description_set(rng, root, "src"), _description_set(rng, root, "dst")
    options = [o for o in ("--bidirectional", "--json") if rng.random() < 0.3]
    return ["check", "--src", str(src), "--dst", str(dst), *options, *_waivers(rng, root)]


def _check_stream(rng: random.Random, root: Path) -> list[str]:
    """check --stream against a destination's descriptions (a few device classes of a
    dump, mostly: a whole dump takes a second to read); a stream without vmdesc is read
    with its source's whole dump (--src), now and then."""
    dst = str(_description_set(rng, root, "dst"))
    if rng.random() < 0.15:
        path = _saved_file(rng, root)
        return ["check", "--stream", str(path), "--dst", dst, "--device-data",
                "mtty-migration-data"]
    vmdesc = rng.random() < 0.95
    path, w = _stream_file(rng, root, vmdesc)
    src = [] if vmdesc else ["--src", str(w.dump)]
    return ["check", "--stream", str(path), "--dst", dst, *src, *_waivers(rng, root)]


def _diff(rng: random.Random, root: Path) -> list[str]:
    """Two streams (a window and a changed copy of it), two saved files, or two
    description sets."""
    choice = rng.randrange(3)
    if choice == 0:
        a, w = _stream_file(rng, root)
        b = root / "b.mig"
        b.write_bytes(G.stream_mutation(rng, w.data, list(w.sections), w.vmdesc_at)
                      if rng.random() < 0.8 else w.data)
    elif choice == 1:
        a = _saved_file(rng, root).rename(root / "a.vms")
        b = _saved_file(rng, root)
    else:
        a, b = _description_set(rng, root, "a"), _description_set(rng, root, "b")
    return ["diff", str(a), str(b), *G.pick(rng, [[], ["--json"]])]


def _encode(rng: random.Random, root: Path) -> list[str]:
    """analyze --format json of a stream, its document changed (or the stream it keeps
    bytes of by reference), encoded back."""
    path, _ = _stream_file(rng, root)
    code, document = run_cli(["analyze", str(path), "--format", "json"])
    out = root / "out.mig"
    doc = root / "doc.json"
    if code != 0:
        doc.write_text(G.pick(rng, ["", "{}", "[]", '{"sections": 1}', "\xff"]), "latin-1")
        return ["encode", str(doc), "-o", str(out)]
    tree = json.loads(document)
    for _ in range(G.pick(rng, [0, 1, 1, 2, 4])):
        G._mutate_json(rng, tree, 0)
    doc.write_text(json.dumps(tree))
    if rng.random() < 0.1:
        path.write_bytes(X.mutate_bytes(rng, path.read_bytes()))
    return ["encode", str(doc), "-o", str(out)]


def _lint(rng: random.Random, root: Path) -> list[str]:
    path = root / "dev.toml"
    path.write_text(G.description_file(rng))
    return [G.pick(rng, ["lint", "describe"]), str(path)]


def _load(rng: random.Random, root: Path) -> list[str]:
    """load reads and checks the whole file before it looks for the device; with a
    device no host has, a file it accepts ends in that usage error (checked here)."""
    path = _saved_file(rng, root)
    return ["load", str(path), NO_DEVICE, *G.pick(rng, [["--dry-run"], ["--", "true"]])]
