"""Lint a file's contents whatever its kind: Python source as it is, a notebook through its code cells.

The engine sees one Python module either way; for a notebook, :mod:`gradlint.notebook` builds that module
and maps what the engine reports back to cells.
"""
from __future__ import annotations

from typing import Sequence

from gradlint.engine import LintResult, lint_source
from gradlint.notebook import Notebook, NotebookError, is_notebook
from gradlint.prefilter import passes_text
from gradlint.rules import Rule
from gradlint.violation import FileError


def lint_data(data: bytes, path: str, rules: Sequence[type[Rule]], *, target_keras: int = 3) -> LintResult:
    """Check one file's bytes (``path`` names it in messages and says whether it is a notebook)."""
    if not is_notebook(path):
        return lint_source(data, path, rules, target_keras=target_keras)
    if not rules:
        return LintResult(path)
    try:
        notebook = Notebook.read(data)
    except NotebookError as exc:
        return LintResult(path, errors=[FileError(path, str(exc))])
    result = lint_source(notebook.python, path, rules, target_keras=target_keras)
    located = LintResult(path, [notebook.locate(v) for v in result.violations],
                         [notebook.locate_error(e) for e in result.errors])
    # as for .py files, syntax errors are reported only where gradient code may be (gradlint is no syntax checker)
    broken = notebook.broken_cells
    if broken and passes_text("".join(cell.python for cell in broken) + notebook.python, rules):
        located.errors.extend(notebook.syntax_errors(path))
    located.violations.sort()
    return located


__all__ = ["lint_data"]
