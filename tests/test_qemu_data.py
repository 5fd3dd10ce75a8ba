"""The QEMU test data is exactly what tests/data/qemu/make_data.py wrote.

Every file must match the size and sha256 in MANIFEST.json and every data file
must be listed there, so hand edits and stray files are caught; regenerate
with the script instead.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

QEMU_DATA = Path(__file__).parent / "data" / "qemu"
# Written by hand or the generator itself, so not checksummed.
NOT_GENERATED = {"MANIFEST.json", "README.md", "make_data.py", "static-checker/README.md"}


def load_manifest() -> dict[str, Any]:
    return json.loads((QEMU_DATA / "MANIFEST.json").read_text())


def listed_files(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Relative path -> {"size", "sha256"} for every file the manifest lists."""
    entries: list[dict[str, Any]] = []
    for stream in manifest["streams"].values():
        entries.append(stream)
        entries.extend(stream[key] for key in ("state_json", "desc_json") if key in stream)
    entries.extend(manifest["dumps"].values())
    entries.extend(manifest["static_checker"].values())
    return {entry["file"]: entry for entry in entries}


LISTED = listed_files(load_manifest())


@pytest.mark.parametrize("name", sorted(LISTED))
def test_file_matches_manifest(name: str) -> None:
    data = (QEMU_DATA / name).read_bytes()
    assert len(data) == LISTED[name]["size"], f"{name}: size differs from MANIFEST.json"
    assert hashlib.sha256(data).hexdigest() == LISTED[name]["sha256"], (
        f"{name}: sha256 differs from MANIFEST.json; regenerate with make_data.py"
    )


def test_every_data_file_is_listed() -> None:
    present = {
        path.relative_to(QEMU_DATA).as_posix()
        for path in QEMU_DATA.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert present - NOT_GENERATED == set(LISTED)


def test_streams_with_vmdesc_have_reference_output() -> None:
    """A stream QEMU's analyzer can read comes with its state and desc output."""
    streams = load_manifest()["streams"]
    assert len([s for s in streams.values() if s["vmdesc"]]) >= 4
    for name, stream in streams.items():
        assert stream["file"] == f"{name}.mig"
        if stream["vmdesc"]:
            assert stream["state_json"]["file"] == f"{name}.state.json"
            assert stream["desc_json"]["file"] == f"{name}.desc.json"
            assert stream["programmed_pci"], f"{name}: firmware programmed no PCI device"
        else:
            assert "state_json" not in stream
            assert "desc_json" not in stream
