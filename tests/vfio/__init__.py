"""Tests that need real kernel VFIO devices; on the host they run inside the QEMU guest."""
