"""Waiver files: the reviewable list of renames and accepted differences.

A compatibility check never hard-codes that two names are the same field or
that a difference is fine; a waiver file says so, where a reviewer sees it::

    [[rename]]               # fields (or descriptions) that are the same on the wire
    scope = "e1000"          # a section or description name; omit for everywhere
    names = ["dev", "parent_obj"]

    [[rename_section]]
    names = ["ICH9 LPC", "ICH9-LPC"]

    [[accept]]               # a reported problem that is known and fine
    section = "usb-kbd"
    path = "usb-kbd.kbd.keycodes"   # optional; fnmatch pattern
    rule = "size-changed"           # optional
    machine = "pc-*"                # optional: only when the check's machine type matches
    reason = "widened in 2.2, guarded by a machine-type compat property"

An accept is a claim about QEMU: its reason says why the reported difference
never breaks a migration (the condition never holds on those machines, the
bytes are the same...), so a reviewer can check it against QEMU's sources.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import cattrs

from vmstate.errors import DescriptionError, UsageError

if TYPE_CHECKING:
    from vmstate.findings import Finding


@attrs.frozen
class Rename:
    names: tuple[str, ...] = attrs.field(converter=tuple)
    scope: str | None = None


@attrs.frozen
class SectionRename:
    names: tuple[str, ...] = attrs.field(converter=tuple)


@attrs.frozen
class Accept:
    section: str
    reason: str
    path: str = "*"
    rule: str = "*"
    machine: str = "*"


@attrs.frozen
class Waivers:
    rename: tuple[Rename, ...] = ()
    rename_section: tuple[SectionRename, ...] = ()
    accept: tuple[Accept, ...] = ()

    def renamed(self, section: str, a: str, b: str, desc: str | None = None) -> bool:
        """True when a waiver says names *a* and *b* are the same thing here."""
        return any(
            a in r.names and b in r.names and (r.scope is None or r.scope in (section, desc))
            for r in self.rename
        )

    def section_name(self, name: str) -> str:
        """The other name of section *name* (itself when not renamed); a caller looks for
        *name* itself first."""
        for r in self.rename_section:
            if name in r.names:
                return next((other for other in r.names if other != name), name)
        return name

    def accepts(self, problem: Finding, machine: str | None = None) -> bool:
        """Whether an accept covers *problem*; one limited to machine types needs *machine*."""
        return any(
            fnmatch.fnmatchcase(problem.section, a.section)
            and fnmatch.fnmatchcase(problem.path, a.path)
            and fnmatch.fnmatchcase(problem.rule, a.rule)
            and (
                a.machine == "*"
                or (machine is not None and fnmatch.fnmatchcase(machine, a.machine))
            )
            for a in self.accept
        )

    def __add__(self, other: Waivers) -> Waivers:
        return Waivers(
            self.rename + other.rename,
            self.rename_section + other.rename_section,
            self.accept + other.accept,
        )


NO_WAIVERS = Waivers()
#: the waiver file shipped for QEMU's own devices, relative to the shipped descriptions
SHIPPED = Path("waivers") / "qemu.toml"


def shipped_waivers(name: str = "qemu") -> Waivers:
    """A shipped waiver file by *name* (``qemu``: renames QEMU's checker knows, reasoned
    accepts), found wherever the package is installed."""
    from vmstate.registry import shipped_directory

    directory = shipped_directory()
    shipped = (
        sorted(p.stem for p in (directory / SHIPPED.parent).glob("*.toml")) if directory else []
    )
    if directory is None or name not in shipped:
        raise UsageError(
            f"no shipped waiver file {name!r}"
            + (f" (shipped: {', '.join(shipped)})" if shipped else "")
        )
    return load_waivers(directory / SHIPPED.parent / f"{name}.toml")


def waivers_named(argument: str) -> Waivers:
    """``--waivers``'s argument: a file, or the name of a shipped waiver file."""
    if os.sep in argument or argument.endswith(".toml") or os.path.lexists(argument):
        return load_waivers(argument)
    return shipped_waivers(argument)


_converter = cattrs.Converter(forbid_extra_keys=True)
#: the shipped waivers are 7 kB; a file this big is no waiver file
MAX_WAIVER_BYTES = 4 << 20


def load_waivers(path: str | os.PathLike[str]) -> Waivers:
    """Read a waiver file; a malformed one is a DescriptionError naming the entry."""
    source = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_WAIVER_BYTES + 1)
        if len(raw) > MAX_WAIVER_BYTES:
            raise DescriptionError(f"larger than {MAX_WAIVER_BYTES} bytes", location=source)
        data: Any = tomllib.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise DescriptionError(f"cannot read waivers: {e}", location=source) from None
    except RecursionError:
        raise DescriptionError("cannot read waivers: nested too deeply", location=source) from None
    try:
        waivers = _converter.structure(data, Waivers)
    except cattrs.BaseValidationError as e:
        details = "; ".join(cattrs.transform_error(e))
        raise DescriptionError(f"bad waiver file: {details}", location=source) from None
    for r in (*waivers.rename, *waivers.rename_section):
        if len(r.names) < 2:
            raise DescriptionError(
                f"a rename needs at least two names, got {list(r.names)}", location=source
            )
    return waivers
