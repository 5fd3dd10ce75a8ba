"""The VFIO bindings: layouts and constants against the kernel header, the capability
chain parser on hand-made buffers, and the ioctl wrappers' protocols against a fake
kernel (the real kernel is exercised in tests/vfio, inside the test guest)."""

from __future__ import annotations

import errno
import importlib
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import IN_CI, require_tool
from hypothesis import given
from hypothesis import strategies as st

from vmstate._lowlevel import build_ffi, ioctl, vfio
from vmstate._lowlevel._vfio_ffi import ffi
from vmstate.errors import DeviceError

HEADER = Path("/usr/include/linux/vfio.h")

# Each struct is checked when the header defines the macro that came with it.
STRUCT_GUARDS = {
    "vfio_info_cap_header": "VFIO_REGION_INFO_FLAG_CAPS",
    "vfio_group_status": "VFIO_GROUP_GET_STATUS",
    "vfio_device_info": "VFIO_DEVICE_GET_INFO",
    "vfio_region_info": "VFIO_DEVICE_GET_REGION_INFO",
    "vfio_region_sparse_mmap_area": "VFIO_REGION_INFO_CAP_SPARSE_MMAP",
    "vfio_region_info_cap_sparse_mmap": "VFIO_REGION_INFO_CAP_SPARSE_MMAP",
    "vfio_region_info_cap_type": "VFIO_REGION_INFO_CAP_TYPE",
    "vfio_irq_info": "VFIO_DEVICE_GET_IRQ_INFO",
    "vfio_irq_set": "VFIO_DEVICE_SET_IRQS",
    "vfio_device_feature": "VFIO_DEVICE_FEATURE",
    "vfio_device_feature_migration": "VFIO_DEVICE_FEATURE_MIGRATION",
    "vfio_device_feature_mig_state": "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE",
    "vfio_device_feature_mig_data_size": "VFIO_DEVICE_FEATURE_MIG_DATA_SIZE",
    "vfio_precopy_info": "VFIO_MIG_GET_PRECOPY_INFO",
}
# What Debian 12's 6.1 header lacks; anything else missing from a header is a bug here.
NEWER_THAN_6_1 = {
    "vfio_device_feature_mig_data_size",
    "vfio_precopy_info",
    "VFIO_DEVICE_FEATURE_MIG_DATA_SIZE",
    "VFIO_MIG_GET_PRECOPY_INFO",
    "VFIO_MIGRATION_PRE_COPY",
    "VFIO_DEVICE_STATE_PRE_COPY",
    "VFIO_DEVICE_STATE_PRE_COPY_P2P",
}
# Linux 6.6 appended `__u32 pad` to vfio_device_info; the kernel accepts either size.
HEADER_SIZES = {"vfio_device_info": {20, 24}}


def constants() -> dict[str, int]:
    return {
        name: value
        for name, value in vars(vfio).items()
        if name.startswith("VFIO_") and isinstance(value, int)
    }


def constant_guard(name: str) -> str | None:
    """The #ifdef that tells whether the header has *name*; None: always there."""
    if name in ("VFIO_DEVICE_STATE_PRE_COPY", "VFIO_DEVICE_STATE_PRE_COPY_P2P"):
        return "VFIO_MIGRATION_PRE_COPY"  # enum members, added with that macro
    if name.startswith("VFIO_DEVICE_STATE_") or (
        name.startswith("VFIO_PCI_") and name.endswith(("_INDEX", "_REGIONS", "_IRQS"))
    ):
        return None  # enum members of every header that has the migration v2 API
    return name


def layout_program() -> str:
    lines = ["#include <stddef.h>", "#include <stdio.h>", "#include <linux/vfio.h>"]
    lines.append("int main(void) {")
    for struct_name, guard in STRUCT_GUARDS.items():
        lines.append(f"#ifdef {guard}")
        lines.append(f'printf("size {struct_name} %zu\\n", sizeof(struct {struct_name}));')
        for field, _ in ffi.typeof(f"struct {struct_name}").fields:
            lines.append(
                f'printf("offset {struct_name}.{field} %zu\\n", '
                f"offsetof(struct {struct_name}, {field}));"
            )
        lines.append("#endif")
    for name in constants():
        guard = constant_guard(name)
        # uAPI constants are u32 (1 << 31 is a negative int to C): compare them as such.
        line = f'printf("const {name} %u\\n", (unsigned int)({name}));'
        lines.extend([f"#ifdef {guard}", line, "#endif"] if guard else [line])
    lines.append("return 0; }")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def header_facts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, int]]:
    """{"size"|"offset"|"const": {name: value}} as the C compiler sees the kernel header."""
    cc = require_tool("cc")
    if not HEADER.exists():
        message = f"{HEADER} is not installed (linux-libc-dev)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    work = tmp_path_factory.mktemp("vfio-layout")
    (work / "layout.c").write_text(layout_program())
    build = subprocess.run(
        [cc, "-o", str(work / "layout"), str(work / "layout.c")], capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr
    output = subprocess.run([str(work / "layout")], capture_output=True, text=True, check=True)
    facts: dict[str, dict[str, int]] = {"size": {}, "offset": {}, "const": {}}
    for line in output.stdout.splitlines():
        kind, name, value = line.split()
        facts[kind][name] = int(value)
    return facts


def test_every_declared_struct_is_checked() -> None:
    assert set(ffi.list_types()[1]) == set(STRUCT_GUARDS)


def layout(ffi_: Any) -> dict[str, Any]:
    """Every struct and union an FFI declares: its size and each field's name, offset and
    type, nested anonymous structs included."""

    def fields(ctype: Any) -> list[Any]:
        return [
            (name, info.offset, info.type.cname, info.bitsize)
            + ((fields(info.type),) if info.type.kind in ("struct", "union") else ())
            for name, info in ctype.fields or ()
        ]

    out = {}
    for kind, names in zip(("struct", "union"), ffi_.list_types()[1:], strict=True):
        for name in names:
            ctype = ffi_.typeof(f"{kind} {name}")
            out[f"{kind} {name}"] = (ffi_.sizeof(ctype), fields(ctype))
    return out


@pytest.mark.parametrize("module", sorted(build_ffi.MODULES))
def test_generated_ffi_modules_match_their_declarations(module: str) -> None:
    """The committed out-of-line modules declare exactly what build_ffi's declarations do,
    type by type and field by field, whatever cffi release generated them (when this
    fails: ``python3 -m vmstate._lowlevel.build_ffi``)."""
    generated = importlib.import_module(f"vmstate._lowlevel.{module}").ffi
    declared = build_ffi.parsed(build_ffi.MODULES[module])
    assert generated.list_types() == declared.list_types()
    assert layout(generated) == layout(declared)


def loaded_after(modules: str, *names: str) -> list[bool]:
    """Whether each of *names* is imported after importing *modules*, in a fresh process."""
    code = f"import sys, {modules}; print(*(n in sys.modules for n in {names!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [word == "True" for word in out.stdout.split()]


def test_device_commands_parse_no_c_declarations_at_import() -> None:
    """Importing the device modules builds the FFIs from tables: pycparser stays unloaded."""
    modules = "vmstate.device_load, vmstate.device_save, vmstate.region_protocol"
    assert loaded_after(modules, "pycparser", "cffi", "_cffi_backend") == [False, False, True]


def test_commands_that_touch_no_device_load_no_vfio_bindings() -> None:
    """Reading files and streams (show, analyze, check --stream) needs no VFIO."""
    modules = "vmstate.cli.show, vmstate.cli.analyze, vmstate.stream_check, vmstate.saved_file"
    assert loaded_after(modules, "_cffi_backend", "vmstate._lowlevel.ioctl") == [False, False]


def test_struct_layouts_match_kernel_header(header_facts: dict[str, dict[str, int]]) -> None:
    sizes = header_facts["size"]
    assert set(STRUCT_GUARDS) - set(sizes) <= NEWER_THAN_6_1
    for name, size in sizes.items():
        assert size in HEADER_SIZES.get(name, {ffi.sizeof(f"struct {name}")}), name
        for field, info in ffi.typeof(f"struct {name}").fields:
            assert header_facts["offset"][f"{name}.{field}"] == info.offset, f"{name}.{field}"


def test_constants_match_kernel_header(header_facts: dict[str, dict[str, int]]) -> None:
    header = header_facts["const"]
    ours = constants()
    assert all(0 <= value < 1 << 32 for value in ours.values())
    assert set(ours) - set(header) <= NEWER_THAN_6_1
    assert {name: ours[name] for name in header} == header
    assert len(header) > 80  # the check really ran


# --- capability chains on hand-made buffers ------------------------------------------


def region_info(caps: bytes, *, first: int = 32, flags: int = 0xF, size: int = 0x4000) -> bytes:
    """A GET_REGION_INFO result for region 3: the fixed struct, then *caps*."""
    argsz = 32 + len(caps)
    return struct.pack("=IIIIQQ", argsz, flags, 3, first, size, 3 << 40) + caps


def cap(cap_id: int, next_offset: int, body: bytes = b"", version: int = 1) -> bytes:
    return struct.pack("=HHI", cap_id, version, next_offset) + body


def test_parses_a_good_chain() -> None:
    type_cap = cap(vfio.VFIO_REGION_INFO_CAP_TYPE, 48, struct.pack("=II", 3, 1))  # at 32
    sparse = cap(
        vfio.VFIO_REGION_INFO_CAP_SPARSE_MMAP,
        96,
        struct.pack("=II", 2, 0) + struct.pack("=QQQQ", 0, 0x1000, 0x3000, 0x1000),
    )  # at 48, 48 bytes
    msix = cap(vfio.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 104)  # at 96
    unknown = cap(0x99, 0, bytes(8), version=2)  # at 104
    buf = region_info(type_cap + sparse + msix + unknown)

    chain = ioctl.walk_capabilities(buf, 32, ioctl.REGION_INFO_SIZE)
    assert [(c.id, c.version, c.offset) for c in chain] == [
        (2, 1, 32),
        (1, 1, 48),
        (3, 1, 96),
        (0x99, 2, 104),
    ]
    info = ioctl.parse_region_info(buf)
    assert (info.index, info.flags, info.size, info.offset) == (3, 0xF, 0x4000, 3 << 40)
    assert info.caps == ioctl.RegionCapabilities(
        type=(3, 1),
        sparse_areas=((0, 0x1000), (0x3000, 0x1000)),
        msix_mappable=True,
        other=(0x99,),
    )


def test_sparse_cap_with_no_areas_is_kept_apart_from_no_cap() -> None:
    buf = region_info(cap(vfio.VFIO_REGION_INFO_CAP_SPARSE_MMAP, 0, bytes(8)))
    assert ioctl.parse_region_info(buf).caps.sparse_areas == ()
    assert ioctl.parse_region_info(region_info(b"", first=0)).caps.sparse_areas is None


def test_caps_are_ignored_without_the_caps_flag() -> None:
    buf = region_info(cap(0x99, 32), flags=vfio.VFIO_REGION_INFO_FLAG_READ)  # would loop
    assert ioctl.parse_region_info(buf).caps == ioctl.RegionCapabilities()


@pytest.mark.parametrize(
    ("caps", "first", "message"),
    [
        (cap(0x99, 32), 32, "loops back"),
        (cap(0x99, 40) + cap(0x99, 32), 32, "loops back"),
        (cap(0x99, 0x1000), 32, "outside the info buffer"),
        (cap(0x99, 8), 32, "outside the info buffer"),  # inside the fixed struct
        (b"", 32, "outside the info buffer"),  # caps announced, none present
        (cap(0x99, 0)[:6], 32, "outside the info buffer"),  # header cut short
        (bytes(4) + cap(0x99, 0), 36, "not aligned"),
        (cap(0x99, 44) + bytes(16), 32, "not aligned"),
    ],
    ids=[
        "self-loop",
        "two-link-loop",
        "next-past-end",
        "next-into-header",
        "first-past-end",
        "truncated-header",
        "misaligned-first",
        "misaligned-next",
    ],
)
def test_bad_chains_raise(caps: bytes, first: int, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        ioctl.parse_region_info(region_info(caps, first=first))


@pytest.mark.parametrize(
    ("caps", "message"),
    [
        (cap(vfio.VFIO_REGION_INFO_CAP_TYPE, 0, struct.pack("=I", 3)), "truncated"),
        (
            cap(vfio.VFIO_REGION_INFO_CAP_SPARSE_MMAP, 0, struct.pack("=IIQQ", 2, 0, 0, 0x1000)),
            "truncated",
        ),
        (
            cap(
                vfio.VFIO_REGION_INFO_CAP_SPARSE_MMAP, 0, struct.pack("=IIQQ", 1, 0, 0x3000, 0x2000)
            ),
            "outside the 0x4000-byte region",
        ),
        (
            cap(vfio.VFIO_REGION_INFO_CAP_TYPE, 48, struct.pack("=II", 1, 1))
            + cap(vfio.VFIO_REGION_INFO_CAP_TYPE, 0, struct.pack("=II", 2, 2)),
            "duplicate",
        ),
    ],
    ids=["type-body", "sparse-areas", "sparse-area-outside-region", "duplicate-type"],
)
def test_bad_capability_bodies_raise(caps: bytes, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        ioctl.parse_region_info(region_info(caps))


def test_short_region_info_raises() -> None:
    with pytest.raises(DeviceError, match="truncated"):
        ioctl.parse_region_info(bytes(31))


@given(st.binary(max_size=256), st.integers(0, 0xFFFFFFFF))
def test_any_chain_ends_or_raises(caps: bytes, first: int) -> None:
    buf = region_info(caps, first=first)
    try:
        chain = ioctl.walk_capabilities(buf, first, ioctl.REGION_INFO_SIZE)
    except DeviceError:
        return
    offsets = [c.offset for c in chain]
    assert len(set(offsets)) == len(offsets)
    assert all(32 <= o <= len(buf) - 8 and o % 8 == 0 for o in offsets)


# --- ioctl wrappers against a fake kernel ---------------------------------------------


FakeIoctl = Callable[[int, int, Any, bool], int]


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[FakeIoctl], list[bytes]]]:
    """Install a fake ioctl(2); returns the list of argument buffers it was handed."""

    def install(fake: FakeIoctl) -> list[bytes]:
        calls: list[bytes] = []

        def recording(fd: int, request: int, arg: Any = 0, mutate: bool = False) -> int:
            calls.append(bytes(arg[:]) if not isinstance(arg, int) else struct.pack("=q", arg))
            return fake(fd, request, arg, mutate)

        monkeypatch.setattr(ioctl.fcntl, "ioctl", recording)
        return calls

    yield install


def fake_region_kernel(caps: bytes) -> FakeIoctl:
    """GET_REGION_INFO as vfio-pci answers it: too small a buffer gets argsz raised."""

    def fake(fd: int, request: int, arg: Any, mutate: bool) -> int:
        assert request == vfio.VFIO_DEVICE_GET_REGION_INFO and mutate
        argsz, _, index = struct.unpack_from("=III", arg[:])
        needed = 32 + len(caps)
        if argsz < needed:
            arg[:32] = struct.pack("=IIIIQQ", needed, 0xF, index, 0, 0x4000, index << 40)
        else:
            arg[:needed] = (
                struct.pack("=IIIIQQ", needed, 0xF, index, 32, 0x4000, index << 40) + caps
            )
        return 0

    return fake


def test_region_info_grows_the_buffer_when_asked(kernel: Any) -> None:
    caps = cap(vfio.VFIO_REGION_INFO_CAP_TYPE, 0, struct.pack("=II", 3, 1))
    calls = kernel(fake_region_kernel(caps))
    info = ioctl.device_get_region_info(5, 9)
    assert info.caps.type == (3, 1) and info.index == 9 and info.offset == 9 << 40
    assert [len(c) for c in calls] == [32, 48]
    assert struct.unpack_from("=III", calls[1]) == (48, 0, 9)


def test_region_info_refuses_a_huge_buffer(kernel: Any) -> None:
    kernel(fake_region_kernel(bytes(ioctl.MAX_INFO_SIZE)))
    with pytest.raises(DeviceError, match="limit"):
        ioctl.device_get_region_info(5, 0)


def test_region_info_gives_up_when_argsz_keeps_growing(kernel: Any) -> None:
    def growing(fd: int, request: int, arg: Any, mutate: bool) -> int:
        arg[:4] = struct.pack("=I", len(arg) + 8)
        return 0

    calls = kernel(growing)
    with pytest.raises(DeviceError, match="still growing"):
        ioctl.device_get_region_info(5, 0)
    assert len(calls) == ioctl.MAX_INFO_ATTEMPTS


def test_interrupted_ioctls_are_retried(kernel: Any) -> None:
    interruptions = [InterruptedError(errno.EINTR, "Interrupted"), None]

    def fake(fd: int, request: int, arg: Any, mutate: bool) -> int:
        if interruptions.pop(0):
            raise InterruptedError(errno.EINTR, "Interrupted system call")
        arg[:16] = struct.pack("=IIII", 16, 0x7, 2, 11)
        return 0

    calls = kernel(fake)
    assert ioctl.device_get_irq_info(5, 2) == ioctl.IrqInfo(index=2, count=11, flags=0x7)
    assert len(calls) == 2


def test_failures_name_the_ioctl_and_keep_errno() -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(ioctl.IoctlError) as caught:
            ioctl.device_get_region_info(read_end, 7)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert isinstance(caught.value, DeviceError)
    assert caught.value.errno == errno.ENOTTY
    assert caught.value.request == "VFIO_DEVICE_GET_REGION_INFO(index 7)"
    assert "ENOTTY" in str(caught.value)


def test_device_feature_sends_header_and_payload(kernel: Any) -> None:
    def fake(fd: int, request: int, arg: Any, mutate: bool) -> int:
        assert request == vfio.VFIO_DEVICE_FEATURE
        arg[8:16] = struct.pack("=Q", 0x7)
        return 0

    calls = kernel(fake)
    flags = vfio.VFIO_DEVICE_FEATURE_GET | vfio.VFIO_DEVICE_FEATURE_MIGRATION
    assert ioctl.device_feature(5, flags, bytes(8)) == struct.pack("=Q", 7)
    assert calls == [struct.pack("=IIQ", 16, flags, 0)]
    assert ioctl.migration_flags(5) == 7


def test_mig_state_wrappers(kernel: Any) -> None:
    def fake(fd: int, request: int, arg: Any, mutate: bool) -> int:
        _, flags, state, _ = struct.unpack("=IIIi", arg[:])
        if flags & vfio.VFIO_DEVICE_FEATURE_SET:
            arg[8:16] = struct.pack("=Ii", state, 42)
        else:
            arg[8:16] = struct.pack("=Ii", vfio.VFIO_DEVICE_STATE_RUNNING, -1)
        return 0

    calls = kernel(fake)
    assert ioctl.get_mig_state(5) == ioctl.MigState(vfio.VFIO_DEVICE_STATE_RUNNING, -1)
    assert ioctl.set_mig_state(5, vfio.VFIO_DEVICE_STATE_PRE_COPY) == ioctl.MigState(6, 42)
    set_flags = vfio.VFIO_DEVICE_FEATURE_SET | vfio.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE
    assert calls[1] == struct.pack("=IIIi", 16, set_flags, 6, -1)


def test_group_and_irq_buffers(kernel: Any) -> None:
    def fake(fd: int, request: int, arg: Any, mutate: bool) -> int:
        if request == vfio.VFIO_GROUP_GET_DEVICE_FD:
            return 42
        if request == vfio.VFIO_GROUP_GET_STATUS:
            arg[4:8] = struct.pack("=I", vfio.VFIO_GROUP_FLAGS_VIABLE)
        return 0

    calls = kernel(fake)
    assert ioctl.group_get_device_fd(5, "0000:00:03.0") == 42
    assert calls[-1] == b"0000:00:03.0\0"
    status = ioctl.group_get_status(5)
    assert status.viable and not status.container_set
    ioctl.group_set_container(5, 9)
    assert calls[-1] == struct.pack("=i", 9)
    flags = vfio.VFIO_IRQ_SET_DATA_EVENTFD | vfio.VFIO_IRQ_SET_ACTION_TRIGGER
    ioctl.device_set_irqs(5, flags, vfio.VFIO_PCI_MSIX_IRQ_INDEX, 0, 2, struct.pack("=ii", 7, -1))
    assert calls[-1] == struct.pack("=IIIIIii", 28, flags, 2, 0, 2, 7, -1)
