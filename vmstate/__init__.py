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
    from collections.abc import Callable, Mapping
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


def lazy_getattr(
    module: str, names: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562), here and in :mod:`vmstate.fields`: *names* maps
    each name to the module that defines it, imported on first use; the value is then
    kept in *namespace* (the module's globals)."""

    def __getattr__(name: str) -> Any:
        where = names.get(name)
        if where is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = namespace[name] = getattr(importlib.import_module(where), name)
        return value

    return __getattr__


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


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
