"""vmstate: describe, serialise and check the state of virtual-machine devices.

The bytes are QEMU's VMState encoding, so streams written here and by QEMU agree.

The names below are imported on first use (PEP 562), so that ``import vmstate``,
and the command line's ``--help``, load none of the library.
"""

from __future__ import annotations

import importlib

#: typing.TYPE_CHECKING without importing typing (with re, 10 ms of a bare start)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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

#: public name -> the module that defines it
_LAZY = {
    "Description": "vmstate.description",
    "Hooks": "vmstate.description",
    "Subsection": "vmstate.description",
    "register_hook": "vmstate.description",
    "DecodeError": "vmstate.errors",
    "DescriptionError": "vmstate.errors",
    "EncodeError": "vmstate.errors",
    "IncompatibleError": "vmstate.errors",
    "LimitError": "vmstate.errors",
    "TruncatedError": "vmstate.errors",
    "VMStateError": "vmstate.errors",
    "Field": "vmstate.fields",
    "register_predicate": "vmstate.predicates",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vmstate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
