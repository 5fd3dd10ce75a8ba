"""An emulated PCI function that also does VFIO migration v2: the device ``vmstate save``
and ``vmstate load`` talk to, for tests, the fuzzer and users' own tests."""

from __future__ import annotations

from typing import Any

from vmstate._lowlevel import vfio
from vmstate.testing.migration import EmulatedMigrationDevice
from vmstate.testing.pci import EmulatedPciDevice, e1000e_like

CONFIG = vfio.VFIO_PCI_CONFIG_REGION_INDEX


class MigratablePci(EmulatedPciDevice):
    """*base*'s config space, masks and BARs (an e1000e-like function by default), with
    device data from an :class:`EmulatedMigrationDevice` made of *migration*."""

    def __init__(self, name: str, base: EmulatedPciDevice | None = None, **migration: Any) -> None:
        base = e1000e_like(name) if base is None else base
        bars = {r.index: base.read(r.index, 0, r.size) for r in base.regions() if r.index != CONFIG}
        config = base.read(CONFIG, 0, base.region(CONFIG).size)
        super().__init__(name, config, base._wmask, base._w1cmask, bars)
        self.migration = EmulatedMigrationDevice(name, **migration)

    def device_feature(self, flags: int, payload: bytes = b"") -> bytes:
        return self.migration.device_feature(flags, payload)

    def precopy_info(self, data_fd: int) -> Any:
        return self.migration.precopy_info(data_fd)

    def read_data(self, data_fd: int, buffer: memoryview) -> int:
        return self.migration.read_data(data_fd, buffer)

    def write_data(self, data_fd: int, data: memoryview) -> int:
        return self.migration.write_data(data_fd, data)

    def reset(self) -> None:
        super().reset()
        self.migration.reset()
