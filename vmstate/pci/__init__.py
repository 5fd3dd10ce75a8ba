"""PCI configuration space: decode it, print it as lspci does, rebuild QEMU's masks,
and check one space against another.

Everything here is a pure function over bytes, no device I/O.  Modules, lowest first:
``registers`` (layout constants), ``names`` and ``ids`` (names), ``problems``,
``capabilities`` and ``extended`` (capability bodies), ``model`` (the decoded space),
``decode``, ``masks`` (QEMU's cmask/wmask/w1cmask), ``compat`` (the compatibility check)
and ``render`` (lspci-style text).
"""
