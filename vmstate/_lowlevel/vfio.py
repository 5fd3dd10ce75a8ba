"""Constants of the Linux VFIO user API (include/uapi/linux/vfio.h).

The struct layouts are cffi declarations in :mod:`vmstate._lowlevel.build_ffi`
(imported by :mod:`vmstate._lowlevel.ioctl` only, already parsed).  The constants are
written out rather than read from the system header because Debian 12's 6.1 header
lacks the PRE_COPY, MIG_DATA_SIZE and PRECOPY_INFO additions; tests/test_lowlevel.py
checks both against the header wherever it has them.
"""

from __future__ import annotations

from typing import Final

VFIO_API_VERSION: Final = 0
VFIO_TYPE: Final = ord(";")
VFIO_BASE: Final = 100


def _io(nr: int) -> int:
    """``_IO(VFIO_TYPE, VFIO_BASE + nr)``: VFIO ioctls carry no size bits, structs carry argsz."""
    return (VFIO_TYPE << 8) | (VFIO_BASE + nr)


# Container (/dev/vfio/vfio) ioctls and IOMMU models.
VFIO_GET_API_VERSION: Final = _io(0)
VFIO_CHECK_EXTENSION: Final = _io(1)
VFIO_SET_IOMMU: Final = _io(2)
VFIO_TYPE1_IOMMU: Final = 1
VFIO_TYPE1v2_IOMMU: Final = 3
VFIO_NOIOMMU_IOMMU: Final = 8

# Group (/dev/vfio/N) ioctls.
VFIO_GROUP_GET_STATUS: Final = _io(3)
VFIO_GROUP_SET_CONTAINER: Final = _io(4)
VFIO_GROUP_UNSET_CONTAINER: Final = _io(5)
VFIO_GROUP_GET_DEVICE_FD: Final = _io(6)
VFIO_GROUP_FLAGS_VIABLE: Final = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET: Final = 1 << 1

# Device ioctls.
VFIO_DEVICE_GET_INFO: Final = _io(7)
VFIO_DEVICE_GET_REGION_INFO: Final = _io(8)
VFIO_DEVICE_GET_IRQ_INFO: Final = _io(9)
VFIO_DEVICE_SET_IRQS: Final = _io(10)
VFIO_DEVICE_RESET: Final = _io(11)
VFIO_DEVICE_FEATURE: Final = _io(17)
VFIO_MIG_GET_PRECOPY_INFO: Final = _io(21)  # on the migration data fd

VFIO_DEVICE_FLAGS_RESET: Final = 1 << 0
VFIO_DEVICE_FLAGS_PCI: Final = 1 << 1
VFIO_DEVICE_FLAGS_PLATFORM: Final = 1 << 2
VFIO_DEVICE_FLAGS_AMBA: Final = 1 << 3
VFIO_DEVICE_FLAGS_CCW: Final = 1 << 4
VFIO_DEVICE_FLAGS_AP: Final = 1 << 5
VFIO_DEVICE_FLAGS_FSL_MC: Final = 1 << 6
VFIO_DEVICE_FLAGS_CAPS: Final = 1 << 7

# Region info flags, capability ids and region types.
VFIO_REGION_INFO_FLAG_READ: Final = 1 << 0
VFIO_REGION_INFO_FLAG_WRITE: Final = 1 << 1
VFIO_REGION_INFO_FLAG_MMAP: Final = 1 << 2
VFIO_REGION_INFO_FLAG_CAPS: Final = 1 << 3
VFIO_REGION_INFO_CAP_SPARSE_MMAP: Final = 1
VFIO_REGION_INFO_CAP_TYPE: Final = 2
VFIO_REGION_INFO_CAP_MSIX_MAPPABLE: Final = 3
VFIO_REGION_TYPE_PCI_VENDOR_TYPE: Final = 1 << 31
VFIO_REGION_TYPE_PCI_VENDOR_MASK: Final = 0xFFFF
VFIO_REGION_TYPE_GFX: Final = 1
VFIO_REGION_TYPE_CCW: Final = 2
VFIO_REGION_TYPE_MIGRATION_DEPRECATED: Final = 3

# IRQ info and SET_IRQS flags.
VFIO_IRQ_INFO_EVENTFD: Final = 1 << 0
VFIO_IRQ_INFO_MASKABLE: Final = 1 << 1
VFIO_IRQ_INFO_AUTOMASKED: Final = 1 << 2
VFIO_IRQ_INFO_NORESIZE: Final = 1 << 3
VFIO_IRQ_SET_DATA_NONE: Final = 1 << 0
VFIO_IRQ_SET_DATA_BOOL: Final = 1 << 1
VFIO_IRQ_SET_DATA_EVENTFD: Final = 1 << 2
VFIO_IRQ_SET_ACTION_MASK: Final = 1 << 3
VFIO_IRQ_SET_ACTION_UNMASK: Final = 1 << 4
VFIO_IRQ_SET_ACTION_TRIGGER: Final = 1 << 5

# vfio-pci's fixed region and IRQ indexes (uAPI; higher region indexes carry a TYPE cap).
VFIO_PCI_BAR0_REGION_INDEX: Final = 0
VFIO_PCI_BAR1_REGION_INDEX: Final = 1
VFIO_PCI_BAR2_REGION_INDEX: Final = 2
VFIO_PCI_BAR3_REGION_INDEX: Final = 3
VFIO_PCI_BAR4_REGION_INDEX: Final = 4
VFIO_PCI_BAR5_REGION_INDEX: Final = 5
VFIO_PCI_ROM_REGION_INDEX: Final = 6
VFIO_PCI_CONFIG_REGION_INDEX: Final = 7
VFIO_PCI_VGA_REGION_INDEX: Final = 8
VFIO_PCI_NUM_REGIONS: Final = 9
VFIO_PCI_INTX_IRQ_INDEX: Final = 0
VFIO_PCI_MSI_IRQ_INDEX: Final = 1
VFIO_PCI_MSIX_IRQ_INDEX: Final = 2
VFIO_PCI_ERR_IRQ_INDEX: Final = 3
VFIO_PCI_REQ_IRQ_INDEX: Final = 4
VFIO_PCI_NUM_IRQS: Final = 5

# DEVICE_FEATURE: flags = feature index | GET/SET/PROBE.
VFIO_DEVICE_FEATURE_MASK: Final = 0xFFFF
VFIO_DEVICE_FEATURE_GET: Final = 1 << 16
VFIO_DEVICE_FEATURE_SET: Final = 1 << 17
VFIO_DEVICE_FEATURE_PROBE: Final = 1 << 18
VFIO_DEVICE_FEATURE_PCI_VF_TOKEN: Final = 0
VFIO_DEVICE_FEATURE_MIGRATION: Final = 1
VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE: Final = 2
VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY: Final = 3
VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP: Final = 4
VFIO_DEVICE_FEATURE_LOW_POWER_EXIT: Final = 5
VFIO_DEVICE_FEATURE_DMA_LOGGING_START: Final = 6
VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP: Final = 7
VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT: Final = 8
VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: Final = 9

# Migration v2: capability flags (feature MIGRATION) and device states (MIG_DEVICE_STATE).
VFIO_MIGRATION_STOP_COPY: Final = 1 << 0
VFIO_MIGRATION_P2P: Final = 1 << 1
VFIO_MIGRATION_PRE_COPY: Final = 1 << 2
VFIO_DEVICE_STATE_ERROR: Final = 0
VFIO_DEVICE_STATE_STOP: Final = 1
VFIO_DEVICE_STATE_RUNNING: Final = 2
VFIO_DEVICE_STATE_STOP_COPY: Final = 3
VFIO_DEVICE_STATE_RESUMING: Final = 4
VFIO_DEVICE_STATE_RUNNING_P2P: Final = 5
VFIO_DEVICE_STATE_PRE_COPY: Final = 6
VFIO_DEVICE_STATE_PRE_COPY_P2P: Final = 7
