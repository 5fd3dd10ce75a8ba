"""The QEMU builds the tests compare against: Debian's 7.2 and bookworm-backports' 10.0.

QEMU 7.2 is the system's (``apt-get install qemu-system-x86``, which ``.ci/run``
does).  QEMU 10.0 is what current distributions ship; it is fetched from
bookworm-backports and unpacked into a cache beside 7.2, never installed.  Both
come with their own ``scripts/`` (``analyze-migration.py``,
``vmstate-static-checker.py``) taken from the source package's orig tarball.

QEMU 10.0 loads modules from its compiled-in ``/usr/lib/x86_64-linux-gnu/qemu``,
where 7.2's live, and aborts on ``-dump-vmstate`` when it picks one of those up;
it therefore runs in a private mount namespace with its own module folder bound
there (``unshare -m``; the tests run as root, as CI does).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import attrs

from .apt import Apt, PeerError, Require, cache_root, locked, run, sha256

MODULE_DIR = "/usr/lib/x86_64-linux-gnu/qemu"
PACKAGES = ("qemu-system-x86", "qemu-system-common", "qemu-system-data")
#: what the tests take from QEMU's source tree
SOURCE_MEMBERS = ("scripts/analyze-migration.py", "scripts/vmstate-static-checker.py")
SOURCE_DIRS = ("tests/vmstate-static-checker-data/",)
_UPSTREAM = re.compile(r"^(?:\d+:)?(\d+\.\d+(?:\.\d+)?)")


@attrs.frozen
class Qemu:
    """One QEMU build: how to start it and where its scripts are."""

    #: "7.2" or "10.0"
    series: str
    #: the Debian package version
    version: str
    #: the command up to and including the binary (and -L for an unpacked build)
    prefix: tuple[str, ...]
    #: the source tree's files the tests use (scripts/, tests/vmstate-static-checker-data/)
    source: Path

    def command(self, *args: str) -> list[str]:
        return [*self.prefix, *args]

    @property
    def analyzer(self) -> Path:
        return self.source / "scripts" / "analyze-migration.py"

    @property
    def static_checker(self) -> Path:
        return self.source / "scripts" / "vmstate-static-checker.py"

    def dump_vmstate(self, machine: str, out: Path) -> None:
        """``-dump-vmstate`` of *machine* into *out*."""
        run(self.command("-M", machine, "-nodefaults", "-accel", "tcg", "-dump-vmstate",
                         str(out)), timeout=120)


def series_of(version: str) -> str:
    """``1:10.0.2+ds-2`` -> ``10.0``."""
    m = _UPSTREAM.match(version)
    if m is None:
        raise PeerError(f"cannot read an upstream version in {version!r}")
    return ".".join(m[1].split(".")[:2])


def _apt(require: Require, root: Path) -> Apt:
    apt = Apt(root / "apt", require, ("bookworm", "bookworm-backports"), ("deb", "deb-src"))
    apt.refresh()
    return apt


def _source_tree(apt: Apt, source_version: str, directory: Path) -> Path:
    """The scripts and checker data of QEMU's source at *source_version*, from the orig
    tarball (cached, checked against the source index's SHA256)."""
    upstream = source_version.split(":", 1)[-1].rsplit("-", 1)[0]
    tree = directory / f"source-{upstream}"
    stamp = tree / "stamp.json"
    tarball = apt.source_file("qemu", source_version, ".orig.tar.xz", directory / "orig")
    digest = sha256(tarball)
    if stamp.exists() and json.loads(stamp.read_text()).get("orig") == digest:
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    work = directory / f".source-{upstream}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with tarfile.open(tarball, mode="r|xz") as archive:
        for member in archive:
            inner = member.name.split("/", 1)[-1]
            wanted = inner in SOURCE_MEMBERS or any(inner.startswith(d) for d in SOURCE_DIRS)
            if wanted and member.isfile() and (data := archive.extractfile(member)):
                target = work / inner
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data.read())
    missing = [m for m in SOURCE_MEMBERS if not (work / m).exists()]
    if missing:
        raise PeerError(f"{tarball.name} lacks {', '.join(missing)}")
    (work / "stamp.json").write_text(json.dumps({"orig": digest}))
    os.replace(work, tree)
    return tree


def system_qemu(require: Require, root: Path | None = None) -> Qemu:
    """The installed QEMU (Debian bookworm's 7.2) and its scripts."""
    binary = require("qemu-system-x86_64")
    root = root or cache_root("vmstate-qemu")
    root.mkdir(parents=True, exist_ok=True)
    query = subprocess.run(["dpkg-query", "-W", "-f", "${Version} ${source:Version}",
                            "qemu-system-x86"], capture_output=True, text=True, check=False)
    if query.returncode != 0:
        raise PeerError("qemu-system-x86_64 is not from Debian's qemu-system-x86 package")
    version, source_version = query.stdout.split()
    with locked(root / "lock"):
        source = _source_tree(_apt(require, root), source_version, root)
    return Qemu(series_of(version), version, (binary,), source)


def backports_qemu(require: Require, series: str = "10.0", root: Path | None = None) -> Qemu:
    """The newest QEMU *series* in bookworm-backports, unpacked into the cache."""
    for tool in ("dpkg", "unshare", "mount"):
        require(tool)
    root = root or cache_root("vmstate-qemu")
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / "lock"):
        apt = _apt(require, root)
        versions = apt.versions(PACKAGES)
        candidates = [v for v in versions.get(PACKAGES[0], []) if series_of(v) == series
                      and all(v in versions.get(p, []) for p in PACKAGES)]
        if not candidates:
            raise PeerError(f"no QEMU {series} with all of {', '.join(PACKAGES)} in the archive")
        version = candidates[0]
        packages = [apt.package(name, version) for name in PACKAGES]
        unpacked = root / f"qemu-{version.replace(':', '_')}"
        stamp = unpacked / "stamp.json"
        expected = {p.name: p.sha256 for p in packages}
        if not (stamp.exists() and json.loads(stamp.read_text()).get("debs") == expected):
            debs = apt.fetch(packages, root / "debs")
            work = root / f".{unpacked.name}.partial"
            shutil.rmtree(work, ignore_errors=True)
            (work / "root").mkdir(parents=True)
            for deb in debs.values():
                run(["dpkg", "-x", deb, work / "root"])
            (work / "stamp.json").write_text(json.dumps({"debs": expected}))
            shutil.rmtree(unpacked, ignore_errors=True)
            os.replace(work, unpacked)
            for other in root.glob("qemu-*"):
                if other != unpacked and other.is_dir():
                    shutil.rmtree(other, ignore_errors=True)
        source_version = version  # backports build from a source of the same version
        source = _source_tree(apt, source_version, root)
    tree = unpacked / "root"
    binary = tree / "usr" / "bin" / "qemu-system-x86_64"
    bind = 'mount --bind "$0" ' + MODULE_DIR + ' && exec "$@"'
    prefix = ("unshare", "-m", "--propagation", "private", "sh", "-c", bind,
              str(tree / MODULE_DIR.lstrip("/")), str(binary), "-L",
              str(tree / "usr" / "share" / "qemu"))
    return Qemu(series, version, prefix, source)
