"""Bytes sized by an earlier uint64 field (VMSTATE_VBUFFER_UINT64, QEMU 2026).

QEMU added it for vhost-user-blk's inflight region, whose size is a ``uint64_t``:
the wire is a variable buffer's (the bytes alone), but the size field is 64 bits
wide, so ``vmstate lint`` wants a uint64 there and the bound is what keeps a
64-bit size read from untrusted input in check.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from vmstate.kinds.buffer import VBuffer


@attrs.frozen
class VBufferUint64(VBuffer):
    """Bytes whose length is an earlier uint64 field times ``multiply``, at most ``max_size``."""

    type_name: ClassVar[str] = "vbuffer_uint64"
    size_type: ClassVar[str | None] = "uint64"
