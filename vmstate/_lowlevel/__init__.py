"""Bindings for the Linux VFIO user API: struct layouts and constants (``vfio``) and
thin ioctl wrappers returning parsed values (``ioctl``).  Everything here is uAPI;
device logic lives in ``vmstate.device_regions`` and ``vmstate.pci``.
"""
