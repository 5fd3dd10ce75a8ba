"""apt-get and apt-cache on a private source list, for the peers the tests fetch.

The test suite downloads what it compares against (a Debian kernel for the VFIO
guest, QEMU 10.0 and its scripts) from the system's own Debian mirror with the
system's own key, through a source list of its own: the system's apt state is
never touched.  Every download is checked against the SHA256 in apt's metadata.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import attrs

from vmstate._files import write_atomic

APT_LIST_MAX_AGE = 24 * 3600

Require = Callable[[str], str]
"""Path of a host tool by name; skips or fails the tests when it is missing."""


class PeerError(Exception):
    """Fetching or preparing a peer failed; the message says where and why."""


class PeerWarning(UserWarning):
    """Something degraded but the run goes on (e.g. stale apt lists)."""


def cache_root(name: str) -> Path:
    """``$XDG_CACHE_HOME/<name>`` (or ``~/.cache``): outside the clone, shared by checkouts."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / name


def tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run(argv: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None,
        timeout: float = 900) -> str:
    """Run a preparation step; its output becomes the error when it fails."""
    args = [os.fspath(a) for a in argv]
    try:
        proc = subprocess.run(args, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, env={**os.environ, "LC_ALL": "C"}, check=False)
    except subprocess.TimeoutExpired as e:
        raise PeerError(f"{shlex.join(args)} did not finish within {timeout} s") from e
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")
        raise PeerError(f"{shlex.join(args)} exited with status {proc.returncode}:\n"
                        f"{tail(out + err, 40)}")
    return out


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialise cache updates between concurrent test sessions on one machine."""
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- the system's sources --------------------------------------------------------------

def deb822(text: str) -> list[dict[str, str]]:
    """Stanzas of a deb822 file (continuation lines kept, comments dropped)."""
    stanzas: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    key = ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                stanzas.append(fields)
            fields, key = {}, ""
        elif line[0].isspace() and key:
            fields[key] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return stanzas


def one_line_sources(text: str) -> list[dict[str, str]]:
    """Entries of a legacy sources.list as deb822 fields."""
    entries = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        fields = {"Types": "deb"}
        if words[1].startswith("["):
            options = []
            while not words[1].endswith("]"):
                options.append(words.pop(1))
            options.append(words.pop(1))
            for option in " ".join(options).strip("[]").split():
                name, _, value = option.partition("=")
                if name == "signed-by":
                    fields["Signed-By"] = value
        if len(words) >= 3:
            fields.update(URIs=words[1], Suites=words[2], Components=" ".join(words[3:]))
            entries.append(fields)
    return entries


def private_source(entries: Iterable[Mapping[str, str]], suites: Sequence[str],
                   types: Sequence[str] = ("deb",)) -> str:
    """The system's main archive (same mirror, same key) for *suites* and *types*."""
    for entry in entries:
        if "deb" not in entry.get("Types", "").split():
            continue
        if not any("-" not in suite for suite in entry.get("Suites", "").split()):
            continue  # security or updates only
        lines = [f"Types: {' '.join(types)}", f"URIs: {entry['URIs']}",
                 f"Suites: {' '.join(suites)}", "Components: main"]
        if "Signed-By" in entry:
            lines.append(f"Signed-By: {entry['Signed-By']}")
        return "\n".join(lines) + "\n"
    raise PeerError("no Debian archive in the system's apt sources to take "
                    f"{' '.join(suites)} from (/etc/apt/sources.list.d/*.sources, "
                    "/etc/apt/sources.list)")


def system_apt_entries() -> list[dict[str, str]]:
    entries: list[dict[str, str]] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        entries += deb822(path.read_text())
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        entries += one_line_sources(legacy.read_text())
    return entries


# --- apt itself ------------------------------------------------------------------------

@attrs.frozen
class Package:
    """One binary package as apt's metadata describes it."""

    name: str
    version: str
    sha256: str
    size: int
    filename: str


class Apt:
    """apt-get and apt-cache on a private source list: the system's state stays untouched."""

    def __init__(self, root: Path, require: Require, suites: Sequence[str],
                 types: Sequence[str] = ("deb",)) -> None:
        self.root = root
        self.suites = tuple(suites)
        self.types = tuple(types)
        self.apt_get = require("apt-get")
        self.apt_cache = require("apt-cache")
        self.lists = root / "lists"

    def _options(self) -> list[str]:
        settings = {
            "Dir::Etc::SourceList": "/dev/null",
            "Dir::Etc::SourceParts": self.root / "sources",
            "Dir::State::Lists": self.lists,
            "Dir::Cache": self.root / "cache",
            "APT::Sandbox::User": "root",  # only honoured as root: the cache is not _apt's
            "Acquire::Retries": "2",
            "Acquire::http::Timeout": "30",
        }
        return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]

    def refresh(self) -> None:
        """Fetch the package lists when they are missing, a day old or the source changed."""
        source = private_source(system_apt_entries(), self.suites, self.types)
        sources = self.root / "sources"
        for directory in (sources, self.lists / "partial",
                          self.root / "cache" / "archives" / "partial"):
            directory.mkdir(parents=True, exist_ok=True)
        source_file, updated = sources / "vmstate.sources", self.root / "updated"
        changed = not source_file.exists() or source_file.read_text() != source
        if changed:
            updated.unlink(missing_ok=True)
            write_atomic(source_file, source)
        age = time.time() - updated.stat().st_mtime if updated.exists() else None
        if age is not None and age < APT_LIST_MAX_AGE:
            return
        try:
            run([self.apt_get, *self._options(), "-q", "update"], timeout=300)
        except PeerError as e:
            if age is None:
                raise
            warnings.warn(f"apt-get update failed, using package lists {age / 3600:.0f} h old: {e}",
                          PeerWarning, stacklevel=2)
            return
        write_atomic(updated, time.strftime("%Y-%m-%dT%H:%M:%S%z\n"))

    def names(self, prefix: str) -> list[str]:
        return run([self.apt_cache, *self._options(), "pkgnames", prefix]).split()

    def versions(self, names: Iterable[str]) -> dict[str, list[str]]:
        """Every available binary version of each package, newest first (apt's madison order)."""
        found: dict[str, list[str]] = {}
        for line in run([self.apt_cache, *self._options(), "madison", *names]).splitlines():
            parts = [part.strip() for part in line.split("|")]
            if len(parts) == 3 and not parts[2].endswith(" Sources"):
                found.setdefault(parts[0], []).append(parts[1])
        return found

    def package(self, name: str, version: str) -> Package:
        stanzas = deb822(run([self.apt_cache, *self._options(), "show", f"{name}={version}"]))
        fields = stanzas[0]
        return Package(name=name, version=version, sha256=fields["SHA256"],
                       size=int(fields["Size"]), filename=Path(fields["Filename"]).name)

    def fetch(self, packages: Iterable[Package], directory: Path) -> dict[str, Path]:
        """Verified .deb files: cached ones re-hashed, missing ones downloaded and hashed."""
        directory.mkdir(parents=True, exist_ok=True)
        wanted = {p.name: p for p in packages}
        missing = [p for p in wanted.values()
                   if not (directory / p.filename).exists()
                   or sha256(directory / p.filename) != p.sha256]
        if missing:
            partial = directory / "partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            run([self.apt_get, *self._options(), "-q", "download",
                 *(f"{p.name}={p.version}" for p in missing)], cwd=partial)
            for p in missing:
                got = list(partial.glob(f"{p.name}_*.deb"))
                if len(got) != 1 or got[0].stat().st_size != p.size or sha256(got[0]) != p.sha256:
                    raise PeerError(f"{p.name} {p.version}: download does not match apt's "
                                    f"size {p.size} and SHA256 {p.sha256}")
                os.replace(got[0], directory / p.filename)
            shutil.rmtree(partial)
        return {name: directory / p.filename for name, p in wanted.items()}

    def source_file(self, package: str, version: str, suffix: str, directory: Path) -> Path:
        """One file of a source package (e.g. its ``.orig.tar.xz``), checked against the
        SHA256 that the source index lists for it."""
        stanzas = deb822(run([self.apt_cache, *self._options(), "showsrc", package]))
        for stanza in stanzas:
            if stanza.get("Version") != version:
                continue
            for line in stanza.get("Checksums-Sha256", "").splitlines():
                words = line.split()
                if len(words) == 3 and words[2].endswith(suffix):
                    digest, size, name = words[0], int(words[1]), words[2]
                    target = directory / name
                    if target.exists() and sha256(target) == digest:
                        return target
                    directory.mkdir(parents=True, exist_ok=True)
                    partial = directory / "partial"
                    shutil.rmtree(partial, ignore_errors=True)
                    partial.mkdir()
                    got = partial / name
                    _download(self._source_url(stanza, name), got)
                    if got.stat().st_size != size or sha256(got) != digest:
                        raise PeerError(f"{name}: download does not match apt's size {size} "
                                        f"and SHA256 {digest}")
                    os.replace(got, target)
                    shutil.rmtree(partial)
                    return target
        raise PeerError(f"source package {package} {version} has no *{suffix} file")

    def _source_url(self, stanza: Mapping[str, str], name: str) -> str:
        source = deb822((self.root / "sources" / "vmstate.sources").read_text())[0]
        return f"{source['URIs'].rstrip('/')}/{stanza['Directory']}/{name}"


def _download(url: str, target: Path) -> None:
    """One file from the archive: `apt-get source` insists on the .dsc and the Debian
    tarball, which the archive may no longer carry for a backport; the orig tarball
    alone is what the tests need."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as f:
            shutil.copyfileobj(response, f)
    except OSError as e:
        raise PeerError(f"downloading {url} failed: {e}") from e
