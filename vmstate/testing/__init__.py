"""Emulated devices for tests, ours and users': PCI functions with real config-space
write semantics (:mod:`vmstate.testing.pci`) and a VFIO migration-v2 device whose
data fds are real pipes (:mod:`vmstate.testing.migration`), and the two in one
function (:mod:`vmstate.testing.migratable`).

Core modules never import this package.
"""
