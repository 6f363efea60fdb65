"""flake8 entry point (``flake8 --select=GRD``): the same engine, lint-only, flake8 handles noqa."""
from __future__ import annotations

import sys
from functools import lru_cache
from typing import Iterator

from gradlint import __version__
from gradlint.codes import flake8_warnings
from gradlint.config import default_target_keras
from gradlint.engine import lint_source
from gradlint.rules import ALL_RULES


@lru_cache(maxsize=1)
def _target_keras() -> int:
    return default_target_keras()


class GradlintChecker:
    """flake8 plugin. flake8 classifies plugins by their parameters: ``tree`` makes this a once-per-file
    plugin (flake8 builds that AST anyway); gradlint parses with libcst only files that pass its prefilter."""

    name = "gradlint"
    version = __version__
    explicitly_selected: frozenset[str] = frozenset()

    def __init__(self, tree, lines: list[str], filename: str) -> None:
        self.tree = tree
        self.lines = lines
        self.filename = filename

    @classmethod
    def parse_options(cls, options) -> None:
        codes = list(getattr(options, "select", None) or []) + list(getattr(options, "extend_select", None) or [])
        cls.explicitly_selected = frozenset(code.strip().upper() for code in codes)
        ignored = list(getattr(options, "ignore", None) or []) + list(getattr(options, "extend_ignore", None) or [])
        for warning in flake8_warnings(codes + ignored):  # flake8 owns selection: warn, never fail
            print(f"gradlint: warning: {warning}", file=sys.stderr)

    def run(self) -> Iterator[tuple[int, int, str, type]]:
        rules = [r for r in ALL_RULES if not r.OPT_IN or r.CODE in self.explicitly_selected]
        result = lint_source("".join(self.lines), self.filename, rules,
                             target_keras=_target_keras(), apply_noqa=False, tree=self.tree)
        for violation in result.violations:
            yield violation.line, violation.column, violation.text, type(self)
        for error in result.errors:
            if not error.message.startswith("syntax error"):  # flake8 reports E999 for those itself
                yield 1, 0, f"GRD000 gradlint could not check this file: {error.message}", type(self)
