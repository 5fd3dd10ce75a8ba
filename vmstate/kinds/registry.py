"""Every field kind under its description-file ``type``: adding a kind is one line here.

Scalar types are named by their QEMU type name (``"uint16"``, ``"int32 equal"``);
every other kind by the ``type_name`` its class declares.
"""

from __future__ import annotations

from vmstate.kinds.arrays import Array, Seq, VArray
from vmstate.kinds.base import Kind
from vmstate.kinds.bitmap import Bitmap
from vmstate.kinds.buffer import Buffer, VBuffer
from vmstate.kinds.nullptr import NullPointer
from vmstate.kinds.padding import Unused, Validate
from vmstate.kinds.qtailq import QTailQ
from vmstate.kinds.scalar import SCALAR_TYPES, Scalar
from vmstate.kinds.struct import Struct
from vmstate.kinds.vbuffer64 import VBufferUint64

#: description-file ``type`` -> kind class, for every kind that is not a scalar
KINDS: dict[str, type[Kind]] = {
    cls.type_name: cls
    for cls in (Buffer, VBuffer, Bitmap, Unused, Validate, Struct, Array, VArray, QTailQ, Seq,
                VBufferUint64, NullPointer)
}


def kind_class(type_name: str) -> type[Kind] | None:
    """The kind class of a description file's ``type``, or None."""
    if type_name in SCALAR_TYPES:
        return Scalar
    return KINDS.get(type_name)
