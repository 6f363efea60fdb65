"""flake8 entry point (``flake8 --select=GRD``): the same engine, settings and ``# noqa`` as `gradlint check`.

Selection stays flake8's (``--select`` / ``--extend-select``; opt-in rules need their full code). The
Keras version the code targets comes from ``--gradlint-target-keras``, else from the nearest
``pyproject.toml`` with a ``[tool.gradlint]`` table (``target-keras``), else from the installed ``keras``
distribution, as in `gradlint check`. ``# noqa`` is applied with gradlint's meaning (codes compared
case-insensitively, ``# gradlint: noqa`` for a whole file) before flake8 applies its own.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Optional

from gradlint import __version__
from gradlint.codes import flake8_warnings
from gradlint.config import ConfigError, default_target_keras, find_config, load_settings
from gradlint.engine import lint_source
from gradlint.rules import ALL_RULES

_OPTION = "--gradlint-target-keras"


@lru_cache(maxsize=256)
def _configured_target_keras(directory: str) -> tuple[int, Optional[str]]:
    """(target-keras, error message) from the nearest ``[tool.gradlint]`` above ``directory``."""
    try:
        config = find_config(Path(directory))  # a malformed pyproject.toml on the way is a ConfigError too
        if config is None:
            return default_target_keras(), None
        return load_settings(config).target_keras, None
    except ConfigError as exc:
        return default_target_keras(), str(exc)


class GradlintChecker:
    """flake8 plugin. flake8 classifies plugins by their parameters: ``tree`` makes this a once-per-file
    plugin (flake8 builds that AST anyway); gradlint parses with libcst only files that pass its prefilter."""

    name = "gradlint"
    version = __version__
    explicitly_selected: frozenset[str] = frozenset()
    target_keras: Optional[int] = None
    disable_noqa = False

    def __init__(self, tree, lines: list[str], filename: str) -> None:
        self.tree = tree
        self.lines = lines
        self.filename = filename

    @classmethod
    def add_options(cls, manager) -> None:
        manager.add_option(
            _OPTION, type=int, choices=(2, 3), default=None, parse_from_config=True,
            help="Keras major version the code is written for (default: [tool.gradlint] target-keras in "
                 "pyproject.toml, else the installed keras)",
        )

    @classmethod
    def parse_options(cls, options) -> None:
        codes = list(getattr(options, "select", None) or []) + list(getattr(options, "extend_select", None) or [])
        cls.explicitly_selected = frozenset(code.strip().upper() for code in codes)
        ignored = list(getattr(options, "ignore", None) or []) + list(getattr(options, "extend_ignore", None) or [])
        for warning in flake8_warnings(codes + ignored):  # flake8 owns selection: warn, never fail
            print(f"gradlint: warning: {warning}", file=sys.stderr)
        cls.target_keras = getattr(options, "gradlint_target_keras", None)
        cls.disable_noqa = bool(getattr(options, "disable_noqa", False))

    def run(self) -> Iterator[tuple[int, int, str, type]]:
        target, config_error = self._target_keras()
        if config_error is not None:
            yield 1, 0, f"GRD000 gradlint could not read its configuration: {config_error}", type(self)
        rules = [r for r in ALL_RULES if not r.OPT_IN or r.CODE in self.explicitly_selected]
        result = lint_source("".join(self.lines), self.filename, rules, target_keras=target,
                             apply_noqa=not self.disable_noqa, tree=self.tree)
        for violation in result.violations:
            yield violation.line, violation.column, violation.text, type(self)
        for error in result.errors:
            if not error.message.startswith("syntax error"):  # flake8 reports E999 for those itself
                yield 1, 0, f"GRD000 gradlint could not check this file: {error.message}", type(self)

    def _target_keras(self) -> tuple[int, Optional[str]]:
        if self.target_keras is not None:
            return self.target_keras, None
        if self.filename in ("stdin", "-", None):
            directory = os.getcwd()
        else:
            directory = os.path.dirname(os.path.abspath(self.filename))
        return _configured_target_keras(directory)
