"""PCI configuration space: decode it, print it as ``lspci -vvv`` does, rebuild QEMU's
masks, and check one space against another.

Everything but ``inputs`` (which reads config spaces from where they are) is a pure
function over bytes.  Modules, lowest first: ``registers`` (layout constants),
``names`` and ``ids`` (names), ``problems``, ``flags``, the capability bodies
(``express``, ``capabilities``, ``extended``, ``extended_link``), ``model`` (the
decoded space), ``decode``, ``masks`` (QEMU's cmask/wmask/w1cmask), ``compat`` (the
compatibility check), ``render`` with ``render_caps``, ``render_express``,
``render_ht`` and ``render_extended`` (lspci's text), ``inputs``.
"""
