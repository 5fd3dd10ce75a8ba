"""Generates the cffi modules with the VFIO struct declarations already parsed.

cffi's out-of-line ABI mode: the declarations below are parsed here, once, and
written out as ``_vfio_ffi.py`` and ``_state_ctl_ffi.py``, which only build their
``ffi`` from precomputed type tables (no C compiler, no pycparser at run time).
The generated files are committed rather than made by a build hook, so a source
checkout runs as it is (the test guest runs this very tree) and building the
package needs nothing beyond hatchling; tests/test_lowlevel.py checks that they
match these declarations.  After changing a declaration, regenerate them:

    python3 -m vmstate._lowlevel.build_ffi
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cffi

HERE = Path(__file__).resolve().parent

#: include/uapi/linux/vfio.h, the structs this library uses
VFIO_CDEF = """
    struct vfio_info_cap_header {
        uint16_t id;
        uint16_t version;
        uint32_t next;
    };
    struct vfio_group_status {
        uint32_t argsz;
        uint32_t flags;
    };
    struct vfio_device_info {
        uint32_t argsz;
        uint32_t flags;
        uint32_t num_regions;
        uint32_t num_irqs;
        uint32_t cap_offset;
    };
    struct vfio_region_info {
        uint32_t argsz;
        uint32_t flags;
        uint32_t index;
        uint32_t cap_offset;
        uint64_t size;
        uint64_t offset;
    };
    struct vfio_region_sparse_mmap_area {
        uint64_t offset;
        uint64_t size;
    };
    struct vfio_region_info_cap_sparse_mmap {
        struct vfio_info_cap_header header;
        uint32_t nr_areas;
        uint32_t reserved;
        struct vfio_region_sparse_mmap_area areas[];
    };
    struct vfio_region_info_cap_type {
        struct vfio_info_cap_header header;
        uint32_t type;
        uint32_t subtype;
    };
    struct vfio_irq_info {
        uint32_t argsz;
        uint32_t flags;
        uint32_t index;
        uint32_t count;
    };
    struct vfio_irq_set {
        uint32_t argsz;
        uint32_t flags;
        uint32_t index;
        uint32_t start;
        uint32_t count;
        uint8_t data[];
    };
    struct vfio_device_feature {
        uint32_t argsz;
        uint32_t flags;
        uint8_t data[];
    };
    struct vfio_device_feature_migration {
        uint64_t flags;
    };
    struct vfio_device_feature_mig_state {
        uint32_t device_state;
        int32_t data_fd;
    };
    struct vfio_device_feature_mig_data_size {
        uint64_t stop_copy_length;
    };
    struct vfio_precopy_info {
        uint32_t argsz;
        uint32_t flags;
        uint64_t initial_bytes;
        uint64_t dirty_bytes;
    };
"""

#: struct vfio_device_state_ctl of the 2019 device-state region proposal (never merged)
STATE_CTL_CDEF = """
    struct vfio_device_state_ctl {
        uint32_t version;
        uint32_t device_state;
        uint32_t caps;
        struct {
            uint32_t action;
            uint64_t size;
        } device_config;
        struct {
            uint32_t action;
            uint64_t size;
            uint64_t pos;
        } device_memory;
        struct {
            uint64_t start_addr;
            uint64_t page_nr;
        } system_memory;
    };
"""

#: generated module name -> its declarations
MODULES = {"_vfio_ffi": VFIO_CDEF, "_state_ctl_ffi": STATE_CTL_CDEF}


def parsed(cdef: str) -> cffi.FFI:
    """The declarations parsed in line, as the generated modules were built from."""
    ffi = cffi.FFI()
    ffi.cdef(cdef)
    return ffi


def generate(name: str, target: Path) -> None:
    """Write the out-of-line ABI module *name* to *target*."""
    builder = parsed(MODULES[name])
    builder.set_source(f"vmstate._lowlevel.{name}", None)
    builder.emit_python_code(str(target))


def main() -> int:
    for name in MODULES:
        with tempfile.TemporaryDirectory() as tmp:
            generated = Path(tmp) / f"{name}.py"
            generate(name, generated)
            (HERE / f"{name}.py").write_bytes(generated.read_bytes())
        print(f"wrote {HERE / name}.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
