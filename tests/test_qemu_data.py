"""The QEMU test data is exactly what tests/data/qemu/make_data.py wrote.

Every file must match the size and sha256 in its directory's MANIFEST.json and
every data file must be listed there, so hand edits and stray files are caught;
regenerate with the script instead.  QEMU 7.2's data is in tests/data/qemu,
QEMU 10.0's in tests/data/qemu-10.0.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"
SERIES = {"7.2": DATA / "qemu", "10.0": DATA / "qemu-10.0"}
# Written by hand or the generator itself, so not checksummed.
NOT_GENERATED = {"MANIFEST.json", "README.md", "make_data.py", "static-checker/README.md"}


def load_manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "MANIFEST.json").read_text())


def listed_files(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Relative path -> {"size", "sha256"} for every file the manifest lists."""
    entries: list[dict[str, Any]] = []
    for stream in manifest["streams"].values():
        entries.append(stream)
        entries.extend(stream[key] for key in ("state_json", "desc_json") if key in stream)
    entries.extend(manifest["dumps"].values())
    entries.extend(manifest["static_checker"].values())
    return {entry["file"]: entry for entry in entries}


LISTED = {
    (series, name): entry
    for series, directory in SERIES.items()
    for name, entry in listed_files(load_manifest(directory)).items()
}


@pytest.mark.parametrize(("series", "name"), sorted(LISTED), ids="/".join)
def test_file_matches_manifest(series: str, name: str) -> None:
    data = (SERIES[series] / name).read_bytes()
    entry = LISTED[(series, name)]
    assert len(data) == entry["size"], f"{name}: size differs from MANIFEST.json"
    assert hashlib.sha256(data).hexdigest() == entry["sha256"], (
        f"{name}: sha256 differs from MANIFEST.json; regenerate with make_data.py"
    )


@pytest.mark.parametrize("series", sorted(SERIES))
def test_every_data_file_is_listed(series: str) -> None:
    directory = SERIES[series]
    present = {
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    listed = {name for s, name in LISTED if s == series}
    assert present - NOT_GENERATED == listed


@pytest.mark.parametrize("series", sorted(SERIES))
def test_streams_the_analyzer_reads_have_reference_output(series: str) -> None:
    """A stream QEMU's analyzer can read comes with its state and desc output; for the
    others the manifest records why it could not."""
    streams = load_manifest(SERIES[series])["streams"]
    assert len([s for s in streams.values() if "state_json" in s]) >= 4
    for name, stream in streams.items():
        assert stream["file"] in (f"{name}.mig", f"{name}.mig.xz")
        if "state_json" in stream:
            assert stream["state_json"]["file"] == f"{name}.state.json"
            assert stream["desc_json"]["file"] == f"{name}.desc.json"
            assert stream["programmed_pci"], f"{name}: firmware programmed no PCI device"
        else:
            assert "desc_json" not in stream
            assert stream.get("analyzer_error") or not stream["vmdesc"]


def test_qemu_10_data_covers_what_the_issue_asks() -> None:
    """Today's and pinned machine types, mapped-ram, a stream without vmdesc, postcopy."""
    manifest = load_manifest(SERIES["10.0"])
    assert manifest["qemu_series"] == "10.0"
    machines = {
        opt.split()[1].split(",")[0]
        for s in manifest["streams"].values()
        for opt in s["options"]
        if opt.startswith("-M ")
    }
    assert {"pc-i440fx-10.0", "pc-q35-10.0", "pc-i440fx-7.2", "pc-q35-7.2"} <= machines
    capabilities = {c for s in manifest["streams"].values() for c in s["capabilities"]}
    assert {"mapped-ram", "postcopy-ram"} <= capabilities
    assert any(not s["vmdesc"] for s in manifest["streams"].values())
    assert set(manifest["dumps"]) == {
        "pc-i440fx-10.0",
        "pc-q35-10.0",
        "pc-i440fx-7.2",
        "pc-q35-7.2",
    }
