"""One exception hierarchy for everything vmstate rejects.

Errors are data (frozen attrs classes): callers read ``path``, ``offset``,
``expected`` and ``found`` instead of parsing messages.  Decoding any input
raises only :class:`VMStateError` subclasses.
"""

from __future__ import annotations

import attrs


def _excerpt(data: bytes | memoryview, offset: int, width: int = 8) -> str:
    """Hex of the bytes around *offset*, the byte at *offset* in brackets."""
    lo = max(0, offset - width)
    hi = min(len(data), offset + width)
    parts = []
    for i in range(lo, hi):
        text = f"{data[i]:02x}"
        parts.append(f"[{text}]" if i == offset else text)
    if offset >= len(data):
        parts.append("[<end>]")
    return " ".join(parts)


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def printable(text: object) -> str:
    """*text* on one line: control characters (from names in the input) escaped."""
    return str(text).translate(_CONTROL)


def format_path(path: tuple[str | int, ...]) -> str:
    """Render ``("pci", "config", 3)`` as ``pci.config[3]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return printable(out) or "<top>"


@attrs.frozen(auto_exc=True)
class VMStateError(Exception):
    """Base of every error the library raises on purpose.

    A subclass that adds no field is a plain subclass: it inherits the attrs methods
    (and building an attrs class costs every command about a millisecond)."""

    message: str

    def __str__(self) -> str:
        return printable(self.message)


class UsageError(VMStateError):
    """The command line or API was called wrongly, whatever the files and devices it names
    hold (CLI exit status 2)."""


@attrs.frozen(auto_exc=True)
class InputError(VMStateError):
    """A file or device the caller named is not what was asked for, as a whole (no such
    function in a dump, a stream without the vmdesc to read it, an output that exists):
    rejected input (CLI exit status 1), where no single byte is to blame."""

    source: str = ""

    def __str__(self) -> str:
        return printable(f"{self.source}: {self.message}" if self.source else self.message)


@attrs.frozen(auto_exc=True)
class DescriptionError(VMStateError):
    """A description is malformed; ``location`` says where (file:line:col or path)."""

    location: str = ""

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}" if self.location else self.message
        return printable(text)


@attrs.frozen(auto_exc=True)
class EncodeError(VMStateError):
    """State given to save does not fit its description."""

    path: tuple[str | int, ...] = ()
    expected: str = ""
    found: str = ""

    def __str__(self) -> str:
        text = f"{format_path(self.path)}: {self.message}"
        if self.expected or self.found:
            text += f" (expected {self.expected}, found {self.found})"
        return printable(text)

    def within(self, *outer: str | int) -> EncodeError:
        return attrs.evolve(self, path=(*outer, *self.path))


@attrs.frozen(auto_exc=True)
class DecodeError(VMStateError):
    """Input bytes rejected while loading.

    ``path`` is the field path from the top description, ``offset`` the byte
    offset in the whole input, ``excerpt`` hex around that offset.
    """

    offset: int = 0
    expected: str = ""
    found: str = ""
    path: tuple[str | int, ...] = ()
    excerpt: str = ""

    def __str__(self) -> str:
        text = f"{format_path(self.path)} at offset {self.offset:#x}: {self.message}"
        if self.expected or self.found:
            text += f" (expected {self.expected}, found {self.found})"
        if self.excerpt:
            text += f" [{self.excerpt}]"
        return printable(text)

    def within(self, *outer: str | int) -> DecodeError:
        """The same error seen from an enclosing field."""
        return attrs.evolve(self, path=(*outer, *self.path))

    def with_excerpt(self, data: bytes | memoryview) -> DecodeError:
        return attrs.evolve(self, excerpt=_excerpt(data, self.offset))


class TruncatedError(DecodeError):
    """The input ended before the description did."""


class IncompatibleError(DecodeError):
    """Well-formed input the local side cannot take (version, identity, equal-check)."""


class LimitError(DecodeError):
    """Input asks for more than an explicit limit allows."""


class DeviceError(VMStateError):
    """A device could not be opened, read or written."""
