"""A finding, where it is, and how it is printed."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Violation:
    """One finding in one file. ``line`` is 1-based, ``column`` 0-based (as flake8 expects).

    In a notebook, ``cell`` is the 1-based position of the cell among all the notebook's cells, ``line`` and
    ``end_line`` count from the cell's first line, and ``json_line`` is the line of the notebook's JSON text
    that holds the source line (0 when unknown); outside notebooks ``cell`` and ``json_line`` are 0.
    """

    path: str
    line: int
    column: int
    code: str
    message: str
    end_line: int = 0
    end_column: int = 0
    cell: int = 0
    json_line: int = 0

    @property
    def text(self) -> str:
        return f"{self.code} {self.message}"

    @property
    def location(self) -> str:
        """``path:line:column`` (1-based column), ``path:cell N:line:column`` in a notebook."""
        cell = f"cell {self.cell}:" if self.cell else ""
        return f"{self.path}:{cell}{self.line}:{self.column + 1}"

    @property
    def file_line(self) -> int:
        """The line in the file as stored (the JSON line in a notebook; 0 when unknown)."""
        return self.json_line if self.cell else self.line

    def sort_key(self) -> tuple:
        return (self.path, self.cell, self.line, self.column, self.code, self.message)

    def __lt__(self, other: "Violation") -> bool:
        return self.sort_key() < other.sort_key()


@dataclass(frozen=True)
class FileError:
    """A file that could not be checked (syntax error, undecodable, unreadable, internal error).

    ``line`` is where the problem is when known (0 otherwise); ``cell`` the notebook cell it is in (0: none).
    """

    path: str
    message: str
    line: int = 0
    cell: int = 0

    def __str__(self) -> str:
        cell = f":cell {self.cell}" if self.cell else ""
        return f"{self.path}{cell}: error: {self.message}"
