"""Reading source files: bytes -> text, with clear errors for what cannot be read."""
from __future__ import annotations

import io
import re
import tokenize

# PEP 263: a coding cookie on one of the first two lines
_COOKIE = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")


class SourceError(Exception):
    """The file cannot be checked; the message says why, in one line (``line``: where, 0 if nowhere)."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.line = line


def decode(data: bytes) -> str:
    """Decode source bytes using the PEP 263 cookie / BOM (default UTF-8)."""
    if b"\x00" in data:
        raise SourceError("not a Python source file (contains NUL bytes)", data[: data.index(b"\x00")].count(b"\n") + 1)
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:
        if "unknown encoding" in str(exc):
            name, line = _declared_encoding(data)
            raise SourceError(f"the file declares an unknown encoding {name!r} on line {line}", line) from None
        encoding = "utf-8"  # undecodable bytes in the first lines: reported below with their position
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SourceError(f"cannot decode the file as {exc.encoding} (line {line}): {exc.reason}; "
                          "declare its encoding with a '# -*- coding: ... -*-' line", line) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def _declared_encoding(data: bytes) -> tuple[str, int]:
    for number, line in enumerate(data.splitlines()[:2], start=1):
        match = _COOKIE.match(line)
        if match:
            return match.group(1).decode("ascii", "replace"), number
    return "?", 1


def read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise SourceError(f"cannot read the file: {exc.strerror or exc}") from None
