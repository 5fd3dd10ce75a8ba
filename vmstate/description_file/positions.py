"""Where each key and value of a TOML document is, by path.

``tomllib`` returns plain data without positions, yet an error in a
description file must name its line and column.  :func:`index_positions`
scans the source once (after ``tomllib`` accepted it, so the scanner can
trust the syntax) and maps every path — ``("description", "fields", 3,
"size")`` — to the 1-based line and column where it is written.
"""

from __future__ import annotations

import bisect
import re

import attrs

Path = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_SCALAR_END = re.compile(r"[,\]}\n#]|\r\n")


@attrs.frozen
class Positions:
    """Line and column of each path; a path not written (a missing key) maps
    to its nearest written ancestor, the table where it would go."""

    _at: dict[Path, tuple[int, int]]

    def of(self, path: Path) -> tuple[int, int]:
        while path not in self._at and path:
            path = path[:-1]
        return self._at.get(path, (1, 1))


def index_positions(text: str) -> Positions:
    """Scan *text*, a document ``tomllib`` accepted, and index its paths."""
    scanner = _Scanner(text)
    scanner.document()
    return Positions(scanner.at)


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.at: dict[Path, tuple[int, int]] = {}
        self.aot_length: dict[Path, int] = {}
        self._line_starts = [0] + [m.end() for m in re.finditer(r"\n", text)]

    def mark(self, path: Path, offset: int) -> None:
        if path not in self.at:
            line = bisect.bisect_right(self._line_starts, offset)
            self.at[path] = (line, offset - self._line_starts[line - 1] + 1)

    def peek(self, n: int = 1) -> str:
        return self.text[self.i : self.i + n]

    def skip_blank(self, newlines: bool) -> None:
        """Skip spaces, tabs, comments and (when *newlines*) line ends."""
        while self.i < len(self.text):
            c = self.text[self.i]
            if c in " \t" or (newlines and c in "\r\n"):
                self.i += 1
            elif c == "#":
                end = self.text.find("\n", self.i)
                self.i = len(self.text) if end < 0 else end
            else:
                return

    def document(self) -> None:
        table: Path = ()
        while True:
            self.skip_blank(newlines=True)
            if self.i >= len(self.text):
                return
            if self.peek() == "[":
                table = self.header()
            else:
                self.keyval(table)

    def header(self) -> Path:
        start = self.i
        array = self.peek(2) == "[["
        self.i += 2 if array else 1
        parts = self.key()
        self.i += 2 if array else 1
        path: Path = ()
        for k, part in enumerate(parts):
            path = (*path, part)
            last = k == len(parts) - 1
            if last and array:
                self.aot_length[path] = self.aot_length.get(path, 0) + 1
                path = (*path, self.aot_length[path] - 1)
            elif path in self.aot_length:
                path = (*path, self.aot_length[path] - 1)
            self.mark(path, start)
        return path

    def keyval(self, table: Path) -> None:
        start = self.i
        parts = self.key()
        for k in range(1, len(parts) + 1):  # a dotted key also writes its tables
            self.mark((*table, *parts[:k]), start)
        path = (*table, *parts)
        self.skip_blank(newlines=False)
        self.i += 1  # "="
        self.skip_blank(newlines=False)
        self.value(path)

    def key(self) -> list[str]:
        """A dotted key; the scanner stops after its last part."""
        parts = []
        while True:
            self.skip_blank(newlines=False)
            c = self.peek()
            if c == '"':
                parts.append(self.basic_string())
            elif c == "'":
                end = self.text.index("'", self.i + 1)
                parts.append(self.text[self.i + 1 : end])
                self.i = end + 1
            else:
                m = _BARE_KEY.match(self.text, self.i)
                assert m is not None, "tomllib accepted the document"
                parts.append(m.group())
                self.i = m.end()
            self.skip_blank(newlines=False)
            if self.peek() != ".":
                return parts
            self.i += 1

    def basic_string(self) -> str:
        """A one-line basic string, decoded (keys must match tomllib's)."""
        out = []
        self.i += 1
        while (c := self.text[self.i]) != '"':
            if c == "\\":
                esc = self.text[self.i + 1]
                if esc in "uU":
                    width = 4 if esc == "u" else 8
                    out.append(chr(int(self.text[self.i + 2 : self.i + 2 + width], 16)))
                    self.i += 2 + width
                    continue
                out.append(_ESCAPES[esc])
                self.i += 2
                continue
            out.append(c)
            self.i += 1
        self.i += 1
        return "".join(out)

    def multiline_string(self, quote: str) -> None:
        """Skip a multi-line string; up to two quotes may precede the closing ones."""
        self.i += 3
        while self.peek(3) != quote:
            self.i += 2 if quote == '"""' and self.peek() == "\\" else 1
        while self.text[self.i + 3 : self.i + 4] == quote[0]:
            self.i += 1
        self.i += 3

    def value(self, path: Path) -> None:
        self.mark(path, self.i)
        c = self.peek()
        if self.peek(3) in ('"""', "'''"):
            self.multiline_string(self.peek(3))
        elif c == '"':
            self.basic_string()
        elif c == "'":
            self.i = self.text.index("'", self.i + 1) + 1
        elif c == "[":
            self.i += 1
            index = 0
            while True:
                self.skip_blank(newlines=True)
                if self.peek() == "]":
                    self.i += 1
                    return
                self.value((*path, index))
                index += 1
                self.skip_blank(newlines=True)
                if self.peek() == ",":
                    self.i += 1
        elif c == "{":
            self.i += 1
            while True:
                self.skip_blank(newlines=False)
                if self.peek() == "}":
                    self.i += 1
                    return
                self.keyval(path)
                self.skip_blank(newlines=False)
                if self.peek() == ",":
                    self.i += 1
        else:
            m = _SCALAR_END.search(self.text, self.i)
            self.i = len(self.text) if m is None else m.start()
