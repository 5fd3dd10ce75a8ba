"""vmstate: describe, serialise and check the state of virtual-machine devices.

The bytes are QEMU's VMState encoding, so streams written here and by QEMU agree.
"""

from vmstate.description import Description, Hooks, Subsection, register_hook
from vmstate.errors import (
    DecodeError,
    DescriptionError,
    EncodeError,
    IncompatibleError,
    LimitError,
    TruncatedError,
    VMStateError,
)
from vmstate.fields import Field
from vmstate.predicates import register_predicate

__all__ = [
    "DecodeError",
    "Description",
    "DescriptionError",
    "EncodeError",
    "Field",
    "Hooks",
    "IncompatibleError",
    "LimitError",
    "Subsection",
    "TruncatedError",
    "VMStateError",
    "register_hook",
    "register_predicate",
]
