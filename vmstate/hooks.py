"""Named hooks: Python functions a description calls by name around loads and saves
(QEMU's pre_save, post_save, pre_load and post_load callbacks).

Description files name hooks as text, so the functions are registered here
under those names rather than referenced directly.

Signatures: ``pre_save(state) -> state``, ``post_save(state)``,
``pre_load(held)``, ``post_load(state, version_id) -> state``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from vmstate.errors import DescriptionError

_HOOKS: dict[str, Callable[..., Any]] = {}


def register_hook(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make a Python function usable as a named hook in descriptions."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _HOOKS and _HOOKS[name] is not fn:
            raise DescriptionError(f"hook {name!r} is already registered")
        _HOOKS[name] = fn
        return fn

    return deco


def registered_hooks() -> frozenset[str]:
    """Names usable as hooks now (description files are checked against them)."""
    return frozenset(_HOOKS)


def hook(name: str) -> Callable[..., Any]:
    try:
        return _HOOKS[name]
    except KeyError:
        raise DescriptionError(f"no hook named {name!r} is registered") from None


@attrs.frozen
class Hooks:
    """Names of registered hook functions (QEMU's pre/post save/load callbacks)."""

    pre_save: str | None = None
    post_save: str | None = None
    pre_load: str | None = None
    post_load: str | None = None

    def __bool__(self) -> bool:
        return any((self.pre_save, self.post_save, self.pre_load, self.post_load))
