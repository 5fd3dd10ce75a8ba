"""Real VFIO devices for the test suite: a Debian 6.12 guest under QEMU (TCG).

The machines that build and test vmstate have no VFIO, so the vfio-marked tests run
in a guest: QEMU's edu, pci-testdev, two e1000e and ivshmem-plain bound to vfio-pci
behind a virtual Intel IOMMU, plus two mtty mediated devices (migration v2), with
the host's root shared read-only over 9p so the guest runs the host's interpreter on
this checkout.  The tests' JUnit report comes back through a second, writable share.

Kernel, headers and sources come from Debian's archive through apt on a private
source list; downloads and builds are cached outside the clone, keyed by the
resolved package versions and by this recipe's own files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import attrs
from peers.apt import Apt, Package, PeerError, Require, locked, run, sha256, tail

import vmstate
from vmstate._files import write_atomic

from .guest_plugin import function_id

HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "guest_init.sh"
SERIES = "6.12"
SUITE = "bookworm-backports"
# Loaded in this order (with their dependencies first); mtty is built here.
MODULES = ("virtio_pci", "9pnet_virtio", "9p", "vfio", "vfio_iommu_type1", "vfio-pci", "mtty")
MTTY_MEMBER = f"linux-source-{SERIES}/samples/vfio-mdev/mtty.c"
# Where guest_init.sh mounts the result share, seen from inside the chroot.
GUEST_RESULTS = "/run/vmstate/results"
GUEST_SCRATCH = "/run/vmstate/tmp"
GUEST_HOME = "/run/vmstate/home"
# Guest mounts that hide the host's directories of the same name.
HIDDEN_IN_GUEST = ("/run", "/proc", "/sys", "/dev")
DEFAULT_TIMEOUT = 600
CONSOLE_TAIL = 100

def cache_root() -> Path:
    """Outside the clone, so every checkout and CI run on the machine shares it."""
    override = os.environ.get("VMSTATE_VM_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vmstate-vm"


# --- which kernel --------------------------------------------------------------------

ABI_NAME = re.compile(r"linux-headers-(6\.12\.(\d+)\+deb12(?:\.(\d+))?)-amd64")


def kernel_names(abi: str) -> dict[str, tuple[str, ...]]:
    """Role -> acceptable package names (in order of preference) for one kernel ABI."""
    return {
        "image": (f"linux-image-{abi}-amd64", f"linux-image-{abi}-amd64-unsigned"),
        "headers": (f"linux-headers-{abi}-amd64",),
        "headers-common": (f"linux-headers-{abi}-common",),
        "kbuild": (f"linux-kbuild-{abi}",),
        "source": (f"linux-source-{SERIES}",),
    }


def choose_kernel(header_names: Iterable[str],
                  versions: Mapping[str, Sequence[str]]) -> tuple[str, dict[str, tuple[str, str]]]:
    """The newest 6.12 ABI whose image, headers, kbuild and source share one version.

    Returns the kernel release (e.g. "6.12.95+deb12-amd64") and role -> (name, version).
    The archive keeps older images after their headers are gone, so headers lead.
    """
    abis = sorted(((int(m[2]), int(m[3] or 0), m[1]) for n in header_names
                   if (m := ABI_NAME.fullmatch(n))), reverse=True)
    for *_, abi in abis:
        roles = kernel_names(abi)
        for version in versions.get(roles["headers"][0], ()):
            chosen: dict[str, tuple[str, str]] = {}
            for role, names in roles.items():
                name = next((n for n in names if version in versions.get(n, ())), None)
                if name is None:
                    break
                chosen[role] = (name, version)
            else:
                return f"{abi}-amd64", chosen
    raise PeerError(f"no complete set of Debian {SERIES} kernel packages (image, headers, "
                       f"kbuild, linux-source-{SERIES}) in {SUITE}")


@attrs.frozen
class Kernel:
    """A resolved kernel: its release string and the exact packages it is built from."""

    release: str
    packages: Mapping[str, Package]  # role -> package


def resolve_kernel(apt: Apt) -> Kernel:
    headers = apt.names(f"linux-headers-{SERIES}.")
    abis = [m[1] for n in headers if (m := ABI_NAME.fullmatch(n))]
    names = {n for abi in abis for group in kernel_names(abi).values() for n in group}
    release, chosen = choose_kernel(headers, apt.versions(sorted(names)))
    return Kernel(release, {role: apt.package(*nv) for role, nv in chosen.items()})


# --- building the kernel's companions ----------------------------------------------------

def _is_static_elf(path: Path) -> bool:
    """True when *path* is an ELF64 executable without a program interpreter."""
    with path.open("rb") as f:
        header = f.read(64)
        if header[:5] != b"\x7fELF\x02":
            return False
        phoff, = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != pt_interp for i in range(phnum))


def _static_busybox(require: Require) -> Path:
    path = Path(require("busybox")).resolve()
    if not _is_static_elf(path):
        # /init cannot load shared libraries: report the package that ships the static
        # build through require(), which skips (fails under CI) as for any missing tool.
        require("busybox-static")
    return path


def kbuild_compiler(headers: Path) -> str:
    """The compiler Debian's kbuild calls (.kernelvariables), e.g. x86_64-linux-gnu-gcc-12."""
    text = (headers / ".kernelvariables").read_text()
    cross = re.search(r"^(?:override\s+)?CROSS_COMPILE\s*:?=[ \t]*(\S*)", text, re.M)
    cc = re.search(r"^CC\s*:?=.*?(\S+)[ \t]*$", text, re.M)
    if cc is None:
        return "gcc"
    return cc[1].replace("$(CROSS_COMPILE)", cross[1] if cross else "")


def _extract_mtty(source_deb: Path, work: Path) -> bytes:
    """samples/vfio-mdev/mtty.c out of linux-source's tarball (Debian does not build it)."""
    tree = work / "source"
    run(["dpkg", "-x", source_deb, tree])
    tarball = tree / "usr" / "src" / f"linux-source-{SERIES}.tar.xz"
    with tarfile.open(tarball, mode="r|xz") as archive:
        for member in archive:
            if member.name == MTTY_MEMBER and (data := archive.extractfile(member)):
                return data.read()
    raise PeerError(f"{source_deb.name} has no {MTTY_MEMBER}")


def _build_mtty(debs: Mapping[str, Path], release: str, work: Path, require: Require) -> Path:
    """mtty.ko, built out of tree against the kernel's own headers."""
    require("make")
    headers_root = work / "headers"
    for role in ("headers", "headers-common", "kbuild"):
        run(["dpkg", "-x", debs[role], headers_root])
    kdir = headers_root / "usr" / "src" / f"linux-headers-{release}"
    # The flavour's Makefile includes the common one by absolute path: point it here.
    makefile = kdir / "Makefile"
    makefile.write_text(makefile.read_text().replace("/usr/src/", f"{headers_root}/usr/src/"))
    require(kbuild_compiler(kdir))
    if "CONFIG_DEBUG_INFO_BTF_MODULES=y" in (kdir / ".config").read_text():
        require("pahole")  # kbuild adds BTF to modules with it (package dwarves)
    module = work / "mtty"
    module.mkdir()
    (module / "mtty.c").write_bytes(_extract_mtty(debs["source"], work))
    (module / "Kbuild").write_text("obj-m := mtty.o\n")
    run(["make", "-C", kdir, f"M={module}", f"-j{os.cpu_count() or 1}", "modules"])
    return module / "mtty.ko"


def _module_order(tree: Path, release: str) -> list[Path]:
    """The .ko files of MODULES, each after its dependencies, each once."""
    order: list[Path] = []
    for name in MODULES:
        out = run(["modprobe", "-C", "/dev/null", "-d", tree, "-S", release,
                    "--show-depends", name])
        for line in out.splitlines():
            words = line.split()
            if words[:1] == ["insmod"] and Path(words[1]) not in order:
                order.append(Path(words[1]))
    return order


def _build_initramfs(tree: Path, release: str, mtty: Path, busybox: Path, work: Path) -> Path:
    """busybox, the modules (decompressed: busybox insmod cannot) and guest_init.sh as /init."""
    extra = tree / "lib" / "modules" / release / "extra"
    extra.mkdir(parents=True, exist_ok=True)
    shutil.copy2(mtty, extra / "mtty.ko")
    run(["depmod", "-b", tree, release])
    root = work / "initramfs"
    for directory in ("bin", "dev", "proc", "sys", "lib/modules"):
        (root / directory).mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    names = []
    for ko in _module_order(tree, release):
        if ko.suffix == ".xz":
            name, data = ko.stem, lzma.decompress(ko.read_bytes())
        elif ko.suffix == ".ko":
            name, data = ko.name, ko.read_bytes()
        else:
            raise PeerError(f"{ko}: unsupported module compression")
        (root / "lib" / "modules" / name).write_bytes(data)
        names.append(name)
    (root / "modules.list").write_text("".join(f"{n}\n" for n in names))
    shutil.copy2(INIT_SCRIPT, root / "init")
    (root / "init").chmod(0o755)
    members = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"], cwd=root,
                          input="\n".join(members).encode(), capture_output=True, check=False)
    if cpio.returncode != 0:
        raise PeerError(f"cpio failed: {cpio.stderr.decode(errors='replace')}")
    out = work / "initramfs.cpio.gz"
    out.write_bytes(gzip.compress(cpio.stdout, compresslevel=6, mtime=0))
    return out


@attrs.frozen
class Artifacts:
    """What QEMU boots: a cache directory holding the kernel and its initramfs."""

    directory: Path

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initramfs(self) -> Path:
        return self.directory / "initramfs.cpio.gz"

    @property
    def stamp(self) -> Path:
        return self.directory / "stamp.json"

    def verified(self, inputs: Mapping[str, object]) -> bool:
        """The stamp names these exact inputs and the built files still hash as recorded."""
        try:
            stamp = json.loads(self.stamp.read_text())
        except (OSError, ValueError):
            return False
        if stamp.get("inputs") != inputs:
            return False
        files = {"vmlinuz": self.kernel, "initramfs.cpio.gz": self.initramfs}
        return all(p.exists() and stamp.get("files", {}).get(n) == sha256(p)
                   for n, p in files.items())


def _inputs(kernel: Kernel) -> dict[str, object]:
    """What a build depends on: the packages and this recipe itself."""
    recipe = hashlib.sha256(Path(__file__).read_bytes() + INIT_SCRIPT.read_bytes()).hexdigest()
    return {
        "release": kernel.release,
        "packages": {role: {"name": p.name, "version": p.version, "sha256": p.sha256}
                     for role, p in sorted(kernel.packages.items())},
        "recipe": recipe,
    }


def _build(kernel: Kernel, apt: Apt, artifacts: Artifacts, inputs: Mapping[str, object],
           require: Require) -> None:
    for tool in ("dpkg", "depmod", "modprobe", "cpio"):
        require(tool)
    busybox = _static_busybox(require)
    fetched = apt.fetch(kernel.packages.values(), artifacts.directory / "debs")
    debs = {role: fetched[p.name] for role, p in kernel.packages.items()}
    work = artifacts.directory / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        mtty = _build_mtty(debs, kernel.release, work, require)
        tree = work / "kernel"
        run(["dpkg", "-x", debs["image"], tree])
        initramfs = _build_initramfs(tree, kernel.release, mtty, busybox, work)
        os.replace(tree / "boot" / f"vmlinuz-{kernel.release}", artifacts.kernel)
        os.replace(initramfs, artifacts.initramfs)
        files = {"vmlinuz": sha256(artifacts.kernel),
                 "initramfs.cpio.gz": sha256(artifacts.initramfs)}
        write_atomic(artifacts.stamp, json.dumps({"inputs": inputs, "files": files}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def prepare(require: Require, root: Path | None = None) -> Artifacts:
    """Kernel and initramfs for the newest Debian 6.12 kernel, from the cache when it holds them.

    A cache hit costs the version check and two hashes; a miss downloads what is not
    cached yet, builds mtty and the initramfs, and drops other kernels' directories.
    """
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / "lock"):
        apt = Apt(root / "apt", require, (SUITE,))
        apt.refresh()
        kernel = resolve_kernel(apt)
        artifacts = Artifacts(root / kernel.release)
        inputs = _inputs(kernel)
        if artifacts.verified(inputs):
            return artifacts
        artifacts.directory.mkdir(exist_ok=True)
        _build(kernel, apt, artifacts, inputs, require)
        for other in root.glob(f"{SERIES}.*"):
            if other != artifacts.directory:
                shutil.rmtree(other, ignore_errors=True)
        return artifacts


# --- running the guest ---------------------------------------------------------------

@attrs.frozen
class GuestOutcome:
    """One test's result as the guest's JUnit report states it."""

    outcome: str  # "passed", "failed", "skipped" or "xfailed"
    message: str
    details: str = ""


def _has_output(text: str | None) -> bool:
    """Captured output beyond pytest's empty "---- Captured ... ----" headers."""
    return any(line.strip() and not line.startswith("-----") for line in (text or "").splitlines())


def parse_junit(text: str) -> dict[str, GuestOutcome]:
    """Node ID -> outcome.  Node IDs come from the "nodeid" property that guest_plugin
    adds; a testcase without one (a collection error) is keyed by its JUnit name."""
    outcomes: dict[str, GuestOutcome] = {}
    for case in ET.fromstring(text).iter("testcase"):
        props = {p.get("name"): p.get("value", "") for p in case.iter("property")}
        key = props.get("nodeid") or "::".join(
            part for part in (case.get("classname"), case.get("name")) if part)
        problems = [c for c in case if c.tag in ("failure", "error")]
        skipped = case.find("skipped")
        if problems:
            message = "; ".join(c.get("message", c.tag) for c in problems)
            output = [c.text or "" for c in case
                      if c.tag in ("system-out", "system-err") and _has_output(c.text)]
            details = "\n".join([*(c.text or c.get("message", "") for c in problems), *output])
            outcome = GuestOutcome("failed", message, details)
        elif skipped is not None:
            kind = "xfailed" if skipped.get("type") == "pytest.xfail" else "skipped"
            outcome = GuestOutcome(kind, skipped.get("message", ""))
        else:
            outcome = GuestOutcome("passed", "")
        if key not in outcomes or outcome.outcome == "failed":
            outcomes[key] = outcome
    return outcomes


def outcome_for(node_id: str, outcomes: Mapping[str, GuestOutcome],
                host_ids: Iterable[str]) -> GuestOutcome | None:
    """The guest's outcome for one host test: its own, or else the combined outcome of the
    instances of its function that no host test matches (parameters that differ between
    host and guest, see guest_plugin.selected)."""
    if node_id in outcomes:
        return outcomes[node_id]
    taken = set(host_ids)
    instances = {k: o for k, o in outcomes.items()
                 if function_id(k) == function_id(node_id) and k not in taken}
    if not instances:
        return None
    failed = {k: o for k, o in instances.items() if o.outcome == "failed"}
    if failed:
        return GuestOutcome(
            "failed", f"{len(failed)} of {len(instances)} instances failed in the guest",
            "\n".join(f"--- {k}: {o.message}\n{o.details}" for k, o in failed.items()))
    if all(o.outcome in ("skipped", "xfailed") for o in instances.values()):
        return GuestOutcome("skipped", "; ".join(f"{k}: {o.message}" for k, o in instances.items()))
    return GuestOutcome("passed", f"as {', '.join(instances)}")


@attrs.frozen
class GuestRun:
    """What one boot of the guest reported."""

    outcomes: Mapping[str, GuestOutcome]
    problem: str | None  # why the run as a whole went wrong, if it did
    console: str
    seconds: float

    def console_tail(self, lines: int = CONSOLE_TAIL) -> str:
        return tail(self.console, lines)


def guest_pytest_args(junit: str) -> list[str]:
    """pytest options of the guest run (the harness' own tests use them too)."""
    # Hypothesis' plugin alone adds ~10 s of emulated start-up and the guest tests use
    # neither it nor pytest-benchmark's (hypothesis itself still works without it).
    return ["-m", "vfio", "-p", "no:cacheprovider", "-p", "vm.guest_plugin",
            "-p", "no:hypothesispytest", "-p", "no:benchmark", "--continue-on-collection-errors",
            "-v", "--color=no", f"--junitxml={junit}", "-o", "junit_family=xunit1",
            "-o", "junit_logging=all"]


def guest_command(node_ids: Sequence[str], rootdir: Path, inifile: Path | None,
                  extra_env: Mapping[str, str] | None = None) -> list[str]:
    """The guest's pytest run: this interpreter on this checkout, the selected vfio tests.

    It is given the files of *node_ids* and, through guest_plugin, the IDs themselves;
    *extra_env* is what the host prepared for them (see guest_qemu).
    """
    source = Path(vmstate.__file__).resolve().parents[1]
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": GUEST_HOME,
        "TMPDIR": GUEST_SCRATCH,
        "LANG": "C.UTF-8",
        "VMSTATE_IN_GUEST": "1",
        "VMSTATE_GUEST_SELECT": f"{GUEST_RESULTS}/selected.txt",
        "PYTHONDONTWRITEBYTECODE": "1",  # the root is read-only
        "PYTHONPATH": os.pathsep.join([str(source), str(HERE.parent)]),
    }
    if "CI" in os.environ:
        env["CI"] = os.environ["CI"]  # a missing tool fails in the guest as on the host
    env.update(extra_env or {})
    args = ["-m", "pytest", *guest_pytest_args(f"{GUEST_RESULTS}/junit.xml"),
            "--rootdir", str(rootdir)]
    if inifile is not None:
        args += ["-c", str(inifile)]
    files = dict.fromkeys(str(rootdir / node_id.split("::", 1)[0]) for node_id in node_ids)
    return ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()),
            sys.executable, *args, *files]


def _check_visible(paths: Iterable[Path]) -> None:
    for path in paths:
        for hidden in HIDDEN_IN_GUEST:
            if path == Path(hidden) or Path(hidden) in path.parents:
                raise PeerError(f"{path} is under {hidden}, which the guest mounts over: "
                                   "run the tests from a checkout and interpreter elsewhere")


def _fsdev_path(path: Path) -> str:
    return str(path).replace(",", ",,")  # QEMU option syntax


def qemu_command(qemu: str, artifacts: Artifacts, results: Path) -> list[str]:
    """q35 with a virtual Intel IOMMU, the test devices and the two 9p shares."""
    return [
        # Single-threaded TCG: with a thread per vCPU, the kernel's live code patching
        # (int3 first, then the rest) raced TCG's cross-vCPU code invalidation and
        # once took the guest down at boot ("Oops: int3" in a timer softirq).
        qemu, "-machine", "q35", "-accel", "tcg,thread=single", "-cpu", "max", "-m", "1024",
        "-smp", "2",
        "-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio",
        "-device", "intel-iommu,intremap=on",  # before the devices it translates for
        "-kernel", str(artifacts.kernel), "-initrd", str(artifacts.initramfs),
        "-append", "console=ttyS0 panic=-1 loglevel=4 intel_iommu=on",
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=results,path={_fsdev_path(results)},security_model=none",
        "-device", "virtio-9p-pci,fsdev=results,mount_tag=results",
        "-device", "edu",
        "-device", "pci-testdev",
        "-device", "e1000e,id=nic-source",
        "-device", "e1000e,id=nic-destination",
        "-object", "memory-backend-ram,id=shm0,size=1M",
        "-device", "ivshmem-plain,memdev=shm0",
    ]


def run_guest(artifacts: Artifacts, node_ids: Sequence[str], *, rootdir: Path,
              inifile: Path | None, require: Require,
              timeout: float = DEFAULT_TIMEOUT,
              extra_env: Mapping[str, str] | None = None) -> GuestRun:
    """Boot the guest once, run *node_ids* in it and read back their outcomes."""
    qemu = require("qemu-system-x86_64")
    _check_visible([rootdir, Path(sys.executable), Path(vmstate.__file__).resolve()])
    with tempfile.TemporaryDirectory(prefix="vmstate-vm-") as tmp:
        results = Path(tmp)
        command = guest_command(node_ids, rootdir, inifile, extra_env)
        (results / "run.sh").write_text(f"cd {GUEST_SCRATCH} && exec {shlex.join(command)}\n")
        (results / "selected.txt").write_text("".join(f"{n}\n" for n in node_ids))
        console_path = results / "console.log"
        problem = None
        started = time.monotonic()
        with console_path.open("wb") as console:
            try:
                proc = subprocess.run(qemu_command(qemu, artifacts, results),
                                      stdin=subprocess.DEVNULL, stdout=console,
                                      stderr=subprocess.STDOUT, timeout=timeout, check=False)
                if proc.returncode != 0:
                    problem = f"QEMU exited with status {proc.returncode}"
            except subprocess.TimeoutExpired:
                problem = f"the guest did not finish within {timeout:.0f} s; QEMU was killed"
        seconds = time.monotonic() - started
        console_text = console_path.read_text(errors="replace")
        status_file, junit = results / "exit-status", results / "junit.xml"
        outcomes: dict[str, GuestOutcome] = {}
        if junit.exists():
            try:
                outcomes = parse_junit(junit.read_text(errors="replace"))
            except ET.ParseError as e:
                problem = problem or f"the guest's JUnit report is malformed: {e}"
        if problem is None:
            if not status_file.exists():
                problem = "the guest stopped before its test run finished"
            elif (status := status_file.read_text().strip()) not in ("0", "1"):
                problem = f"pytest in the guest exited with status {status}"
            elif not junit.exists():
                problem = "the guest wrote no JUnit report"
        return GuestRun(outcomes, problem, console_text, seconds)
