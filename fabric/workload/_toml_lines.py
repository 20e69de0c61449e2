"""Line numbers for the keys of a TOML document.

``tomllib`` returns plain dicts without positions, so manifest errors locate
their field path with this small scanner.  It runs only on text that
``tomllib`` already accepted, so it trusts the syntax and merely tracks
structure: table headers (``[a.b]``, ``[[a.b]]`` with array-of-tables
indices), dotted keys, inline tables, arrays (multi-line, with comments) and
the four string forms.  The result maps a path such as
``("workloads", 1, "services", 0, "restart", "max_backoff")`` to the 1-based
line where that key (or array element, or table header) first appears.
"""

from __future__ import annotations

import bisect

__all__ = ["Path", "SourceMap", "scan_lines"]

Path = tuple[str | int, ...]

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


class SourceMap:
    """Field path → line number, with a fallback to the nearest enclosing path."""

    __slots__ = ("_lines",)

    def __init__(self, lines: dict[Path, int] | None = None) -> None:
        self._lines: dict[Path, int] = dict(lines or {})

    def line(self, path: Path) -> int | None:
        """The line of ``path``, or of its closest ancestor that appears in the text.

        The document root is line 1 for maps built from text; a map built from
        no text (data decoded from a dict) knows no lines and answers None.
        """
        for end in range(len(path), -1, -1):
            line = self._lines.get(path[:end])
            if line is not None:
                return line
        return None

    def exact(self, path: Path) -> int | None:
        return self._lines.get(path)

    def __len__(self) -> int:
        return len(self._lines)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SourceMap) and self._lines == other._lines

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._lines.items(), key=repr)))

    def __repr__(self) -> str:
        return f"<SourceMap paths={len(self._lines)}>"


def scan_lines(text: str) -> SourceMap:
    """Scan ``text`` (valid TOML) and return the line of every key path it defines."""
    scanner = _Scanner(text)
    scanner.lines[()] = 1
    try:
        scanner.document()
    except (IndexError, ValueError):  # pragma: no cover - tomllib accepted the text first
        pass
    return SourceMap(scanner.lines)


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.lines: dict[Path, int] = {}
        self.arrays: dict[Path, int] = {}  # array-of-tables path -> element count
        self._starts = [0] + [n + 1 for n, ch in enumerate(text) if ch == "\n"]

    # -- helpers -----------------------------------------------------------

    def line_at(self, pos: int) -> int:
        return bisect.bisect_right(self._starts, pos)

    def record(self, path: Path, pos: int) -> None:
        line = self.line_at(pos)
        for end in range(1, len(path) + 1):
            self.lines.setdefault(path[:end], line)

    def peek(self, n: int = 0) -> str:
        j = self.i + n
        return self.s[j] if j < len(self.s) else ""

    def skip_ws(self) -> None:
        while self.peek() in (" ", "\t"):
            self.i += 1

    def skip_blank(self) -> None:
        """Whitespace, newlines and comments."""
        while True:
            ch = self.peek()
            if ch in (" ", "\t", "\r", "\n"):
                self.i += 1
            elif ch == "#":
                end = self.s.find("\n", self.i)
                self.i = len(self.s) if end < 0 else end
            else:
                return

    # -- grammar -----------------------------------------------------------

    def document(self) -> None:
        table: Path = ()
        while True:
            self.skip_blank()
            if self.i >= len(self.s):
                return
            start = self.i
            if self.s.startswith("[[", self.i):
                self.i += 2
                keys = self.key()
                self.skip_ws()
                self.i += 2  # "]]"
                parent = self.resolve(keys[:-1])
                array = (*parent, keys[-1])
                index = self.arrays.get(array, 0)
                self.arrays[array] = index + 1
                table = (*array, index)
                self.record(table, start)
            elif self.peek() == "[":
                self.i += 1
                keys = self.key()
                self.skip_ws()
                self.i += 1  # "]"
                table = self.resolve(keys)
                self.record(table, start)
            else:
                keys = self.key()
                path = (*table, *keys)
                self.record(path, start)
                self.skip_ws()
                self.i += 1  # "="
                self.skip_ws()
                self.value(path)

    def resolve(self, keys: list[str]) -> Path:
        """A header's keys, with the current index inserted after each array of tables."""
        path: Path = ()
        for key in keys:
            path = (*path, key)
            count = self.arrays.get(path)
            if count:
                path = (*path, count - 1)
        return path

    def key(self) -> list[str]:
        parts: list[str] = []
        while True:
            self.skip_ws()
            ch = self.peek()
            if ch == '"':
                parts.append(self.basic_string())
            elif ch == "'":
                end = self.s.index("'", self.i + 1)
                parts.append(self.s[self.i + 1 : end])
                self.i = end + 1
            else:
                start = self.i
                while self.peek() in _BARE and self.peek():
                    self.i += 1
                if self.i == start:
                    raise ValueError("expected a key")
                parts.append(self.s[start : self.i])
            self.skip_ws()
            if self.peek() != ".":
                return parts
            self.i += 1

    def basic_string(self) -> str:
        """A single-line basic string at ``self.i`` (the opening quote); returns its value."""
        self.i += 1
        out: list[str] = []
        while True:
            ch = self.s[self.i]
            if ch == '"':
                self.i += 1
                return "".join(out)
            if ch == "\\":
                esc = self.s[self.i + 1]
                if esc in ("u", "U"):
                    width = 4 if esc == "u" else 8
                    out.append(chr(int(self.s[self.i + 2 : self.i + 2 + width], 16)))
                    self.i += 2 + width
                else:
                    out.append(_ESCAPES.get(esc, esc))
                    self.i += 2
            else:
                out.append(ch)
                self.i += 1

    def multiline(self, quote: str) -> None:
        """Skip a multi-line string opened by three ``quote`` characters at ``self.i``."""
        self.i += 3
        while True:
            ch = self.s[self.i]
            if ch == "\\" and quote == '"':
                self.i += 2
            elif self.s.startswith(quote * 3, self.i):
                run = 3
                while self.peek(run) == quote and run < 5:
                    run += 1
                self.i += run
                return
            else:
                self.i += 1

    def value(self, path: Path) -> None:
        ch = self.peek()
        if ch == '"':
            if self.s.startswith('"""', self.i):
                self.multiline('"')
            else:
                self.basic_string()
        elif ch == "'":
            if self.s.startswith("'''", self.i):
                self.multiline("'")
            else:
                self.i = self.s.index("'", self.i + 1) + 1
        elif ch == "[":
            self.i += 1
            index = 0
            while True:
                self.skip_blank()
                if self.peek() == "]":
                    self.i += 1
                    return
                self.record((*path, index), self.i)
                self.value((*path, index))
                index += 1
                self.skip_blank()
                if self.peek() == ",":
                    self.i += 1
        elif ch == "{":
            self.i += 1
            while True:
                self.skip_blank()
                if self.peek() == "}":
                    self.i += 1
                    return
                start = self.i
                keys = self.key()
                self.record((*path, *keys), start)
                self.skip_ws()
                self.i += 1  # "="
                self.skip_ws()
                self.value((*path, *keys))
                self.skip_blank()
                if self.peek() == ",":
                    self.i += 1
        else:
            while self.peek() not in (",", "]", "}", "#", "\n", "\r", ""):
                self.i += 1
