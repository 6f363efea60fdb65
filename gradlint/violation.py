"""A finding, where it is, and how it is printed."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Violation:
    """One finding in one file. ``line`` is 1-based, ``column`` 0-based (as flake8 expects)."""

    path: str
    line: int
    column: int
    code: str
    message: str
    end_line: int = 0
    end_column: int = 0

    @property
    def text(self) -> str:
        return f"{self.code} {self.message}"


@dataclass(frozen=True)
class FileError:
    """A file that could not be checked (syntax error, undecodable, unreadable, internal error)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: error: {self.message}"
