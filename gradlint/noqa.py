"""``# noqa`` comments, with one meaning in `gradlint check`, `gradlint fix` and the flake8 plugin.

- ``# noqa`` on the reported line suppresses every finding there; ``# noqa: GRD001,GRD003`` only those codes
  (or prefixes). Codes are compared case-insensitively (``# NOQA: grd001``).
- A line that is only ``# flake8: noqa`` (flake8's own whole-file form) or ``# gradlint: noqa`` turns the
  whole file off. As in flake8, the comment must stand on its own line: after code it is ignored.
- With codes, ``# gradlint: noqa: GRD001`` (or ``# flake8: noqa: F401``) suppresses only those codes in the
  whole file, as ruff reads it. flake8 itself skips such a file entirely, before any plugin runs.
"""
from __future__ import annotations

import re
from typing import Optional

_NOQA = re.compile(r"#\s*noqa(?::[\s]?(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?", re.IGNORECASE)
_SEPARATOR = re.compile(r"[,\s]+")
_FILE_NOQA = re.compile(r"^[ \t]*#[ \t]*(?:flake8|gradlint)[:=][ \t]*noqa(?P<rest>[^\r\n]*)",
                        re.IGNORECASE | re.MULTILINE)
_CODES = re.compile(r"^[:\s]\s*(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*)", re.IGNORECASE)


def suppressed_codes(line: str) -> Optional[frozenset[str]]:
    """None: no noqa. Empty set: a bare ``# noqa`` (suppress all). Otherwise the listed codes, upper-cased."""
    if "#" not in line:
        return None
    match = _NOQA.search(line)
    if match is None:
        return None
    return _codes(match.group("codes"))


def is_suppressed(line: str, code: str) -> bool:
    return _matches(suppressed_codes(line), code)


def file_suppressed_codes(text: str) -> Optional[frozenset[str]]:
    """The codes a file-level ``# flake8: noqa`` / ``# gradlint: noqa`` line suppresses: None for no such
    line, an empty set for every code."""
    found: Optional[set[str]] = None
    for match in _FILE_NOQA.finditer(text):
        listed = _CODES.match(match.group("rest"))
        if listed is None:
            return frozenset()
        found = (found or set()) | _codes(listed.group("codes"))
    return frozenset(found) if found is not None else None


class Suppressions:
    """The ``# noqa`` comments of one file."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.file_codes = file_suppressed_codes(text)
        self._lines: Optional[list[str]] = None

    @property
    def whole_file(self) -> bool:
        return self.file_codes is not None and not self.file_codes

    def suppresses(self, line: int, code: str) -> bool:
        if _matches(self.file_codes, code):
            return True
        if self._lines is None:
            self._lines = self.text.splitlines()
        return 0 < line <= len(self._lines) and is_suppressed(self._lines[line - 1], code)


def _codes(text: Optional[str]) -> frozenset[str]:
    if not text:
        return frozenset()
    return frozenset(code.upper() for code in _SEPARATOR.split(text.strip()) if code)


def _matches(codes: Optional[frozenset[str]], code: str) -> bool:
    if codes is None:
        return False
    code = code.upper()
    return not codes or any(code.startswith(c) for c in codes)
