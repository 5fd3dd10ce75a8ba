"""Indented JSON exactly as Python's ``json`` writes it, faster.

QEMU's ``scripts/analyze-migration.py`` prints with ``json.JSONEncoder(indent=4,
separators=(',', ': '))``; ``vmstate analyze --format qemu`` prints the same bytes.
The json module writes indented output with its pure-Python encoder (its C
encoder takes no indent), which is slow on streams of many sections; this writes
the same text with the C string escaper, one pass, no generators.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Protocol


def dumps(obj: Any, indent: int = 4) -> str:
    """``json.dumps(obj, indent=indent, separators=(',', ': '))``."""
    out: list[str] = []
    _value(obj, out, "\n", " " * indent)
    return "".join(out)


def dump_items(items: Iterable[tuple[Any, Any]], write: Callable[[str], object], indent: int = 4) -> None:
    """The text of ``dumps(dict(items), indent)`` through *write*, one item at a time and
    each piece of its text as it is made (a long array a chunk at a time): no item's text
    is ever held whole, and the pieces cost no more to write than to join."""
    inner, step = "\n" + " " * indent, " " * indent
    opening = "{" + inner
    out = _Writer(write)
    for key, value in items:
        _entry(opening, key, value, out, inner, step)
        opening = "," + inner
    write("{}" if opening[0] == "{" else "\n}")


class _Out(Protocol):
    """Where :func:`_value` puts its pieces: a list, or a :class:`_Writer`."""

    def append(self, text: str, /) -> object: ...


class _Writer:
    """What :func:`_value` appends its pieces to, writing each at once."""

    __slots__ = ("append",)

    def __init__(self, write: Callable[[str], object]) -> None:
        self.append = write


def _value(obj: Any, out: _Out, newline: str, step: str) -> None:
    if isinstance(obj, str):
        out.append(encode_basestring_ascii(obj))
    elif obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        out.append(int.__repr__(obj))
    elif isinstance(obj, float):
        out.append(_float(obj))
    elif isinstance(obj, dict):
        if not obj:
            out.append("{}")
            return
        inner = newline + step
        opening, comma = "{" + inner, "," + inner
        for key, value in obj.items():
            _entry(opening, key, value, out, inner, step)
            opening = comma
        out.append(newline + "}")
    elif isinstance(obj, list | tuple):
        if not obj:
            out.append("[]")
            return
        inner = newline + step
        if _plain_strings(obj):  # QEMU's arrays of hex strings: written as they are
            out.append("[" + inner + '"')
            _joined(obj, '",' + inner + '"', out)
            out.append('"' + newline + "]")
            return
        types = set(map(type, obj))
        if len(types) == 1 and (leaf := _LEAVES.get(types.pop())) is not None:
            # a list of one plain type: joined, not one call of _value each
            out.append("[" + inner)
            _joined(list(map(leaf, obj)), "," + inner, out)
            out.append(newline + "]")
            return
        out.append("[" + inner)
        for i, value in enumerate(obj):
            if i:
                out.append("," + inner)
            _value(value, out, inner, step)
        out.append(newline + "]")
    else:
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _entry(opening: str, key: Any, value: Any, out: _Out, inner: str, step: str) -> None:
    """One member of an object, after *opening* (its brace or comma, and its indent)."""
    head = opening + encode_basestring_ascii(key if type(key) is str else _key(key)) + ": "
    if type(value) is str:  # most values (QEMU's hex strings): no call of _value each
        out.append(head + encode_basestring_ascii(value))
    else:
        out.append(head)
        _value(value, out, inner, step)


#: elements of a long list joined into one piece of text
_CHUNK = 4096


def _joined(texts: Sequence[str], separator: str, out: _Out) -> None:
    """``separator.join(texts)`` into *out*, _CHUNK texts a piece."""
    for start in range(0, len(texts), _CHUNK):
        if start:
            out.append(separator)
        out.append(separator.join(texts[start : start + _CHUNK]))


#: how each element of a list of one of these exact types is written (bool, a
#: subclass of int, and float with its special values, go the general way)
_LEAVES = {str: encode_basestring_ascii, int: int.__repr__}


def _plain_strings(items: list[Any] | tuple[Any, ...]) -> bool:
    """Whether every item is a string written as it is inside JSON quotes: printable
    ASCII without quote or backslash (hex strings), so none needs escaping."""
    if type(items[0]) is not str:
        return False
    try:
        text = "".join(items)  # refuses anything but strings
    except TypeError:
        return False
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def _float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, float):
        return _float(key)
    if key is True or key is False or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    if isinstance(key, int):
        return int.__repr__(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


__all__ = ["dump_items", "dumps"]
