"""What installing vmstate asks for: a light plain install, and floors CI really tests."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REQUIREMENT = re.compile(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?\s*(?:>=\s*([0-9.]+))?")


def requirements(items: list[str]) -> dict[str, str | None]:
    """name -> floor (None: no >= bound), for requirements of other projects."""
    out: dict[str, str | None] = {}
    for item in items:
        match = REQUIREMENT.match(item)
        assert match is not None, item
        name, floor = match.groups()
        if name != PROJECT["name"]:
            out[name.lower()] = floor
    return out


def test_a_plain_install_brings_no_test_tools() -> None:
    plain = requirements(PROJECT["dependencies"])
    assert not {"pytest", "syrupy", "hypothesis"} & set(plain)
    assert "vmstate[pytest]" in PROJECT["optional-dependencies"]["test"]


def test_ci_installs_exactly_the_floors_pyproject_allows() -> None:
    declared: dict[str, str | None] = requirements(PROJECT["dependencies"])
    for extra in ("pytest", "test"):
        declared |= requirements(PROJECT["optional-dependencies"][extra])
    assert all(floor is not None for floor in declared.values()), declared
    pinned = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[name.strip().lower()] = version.strip()
    assert set(pinned) == set(declared)
    for name, floor in declared.items():
        assert floor is not None
        release = pinned[name].split(".")
        assert release[: len(floor.split("."))] == floor.split("."), (name, floor, pinned[name])
        assert all(part == "0" for part in release[len(floor.split(".")) :]), (name, pinned[name])


def test_core_modules_never_import_the_test_equipment() -> None:
    """vmstate.testing (emulated devices) is for tests, ours and users': no other module
    of the package may depend on it."""
    import ast

    package = ROOT / "vmstate"
    offenders = []
    for path in package.rglob("*.py"):
        if path.is_relative_to(package / "testing"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            if any(n == "vmstate.testing" or n.startswith("vmstate.testing.") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
