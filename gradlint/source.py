"""Reading source files: bytes -> text, with clear errors for what cannot be read."""
from __future__ import annotations

import io
import tokenize


class SourceError(Exception):
    """The file cannot be checked; the message says why, in one line."""


def decode(data: bytes) -> str:
    """Decode source bytes using the PEP 263 cookie / BOM (default UTF-8)."""
    if b"\x00" in data:
        raise SourceError("not a Python source file (contains NUL bytes)")
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:
        if "unknown encoding" in str(exc):
            raise SourceError(f"unknown encoding declared: {exc}") from None
        encoding = "utf-8"  # undecodable bytes in the first lines: reported below with their position
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SourceError(f"cannot decode the file as {exc.encoding} (line {line}): {exc.reason}; "
                          "declare its encoding with a '# -*- coding: ... -*-' line") from None
    except LookupError as exc:
        raise SourceError(f"unknown encoding declared: {exc}") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise SourceError(f"cannot read the file: {exc.strerror or exc}") from None
