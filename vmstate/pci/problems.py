"""What is wrong with a config space, as data: decoders collect, never raise."""

from __future__ import annotations

import attrs


@attrs.frozen
class ConfigProblem:
    """One thing wrong with a config space, or between two; ``code`` is stable for programs."""

    code: str
    offset: int
    message: str

    def __str__(self) -> str:
        return f"[{self.offset:03x}] {self.message}"


@attrs.frozen
class Difference(ConfigProblem):
    """A problem between two spaces: what differs, as data (each side's value as text).

    ``width`` is how many config bytes from ``offset`` the differing register spans, so
    that a byte-level report of the same bytes can be recognised as the same fact."""

    source: str = ""
    destination: str = ""
    width: int = 1

    def covers(self, offset: int) -> bool:
        return self.offset <= offset < self.offset + self.width


class ConfigProblems:
    """Collects problems while decoding; the decoders append, never raise."""

    def __init__(self) -> None:
        self.items: list[ConfigProblem] = []

    def add(self, code: str, offset: int, message: str) -> None:
        self.items.append(ConfigProblem(code, offset, message))
