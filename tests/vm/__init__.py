"""The QEMU guest in which the vfio-marked tests meet real kernel VFIO (see README.md)."""
