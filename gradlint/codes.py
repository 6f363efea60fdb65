"""Rule codes written by users (``--select``, ``[tool.gradlint]``, flake8's options): which name a rule.

A pattern is a code or a prefix of codes (``GRD001``, ``GRD00``, ``GRD``) or ``ALL``. One that names no
static rule is an error: a typo must not silently select nothing.
"""
from __future__ import annotations

from typing import Iterable

from gradlint.rules import ALL_RULES
from gradlint.runtime_checks import RUNTIME_CHECKS

STATIC_CODES: tuple[str, ...] = tuple(rule.CODE for rule in ALL_RULES)
RUNTIME_CODES: tuple[str, ...] = tuple(check.code for check in RUNTIME_CHECKS)
FLAKE8_ONLY_CODES = ("GRD000",)  # the flake8 plugin's "could not check this file"


class CodeError(ValueError):
    """A pattern that names no static rule; the message says what it is instead."""


def check_pattern(pattern: str) -> str:
    """The pattern, upper-cased, when it names at least one static rule; otherwise CodeError."""
    normal = pattern.strip().upper()
    if normal == "ALL" or (normal and any(code.startswith(normal) for code in STATIC_CODES)):
        return normal
    runtime = [code for code in RUNTIME_CODES if normal and code.startswith(normal)]
    if runtime:
        what = (f"{pattern} is a runtime finding" if normal in runtime else
                f"{pattern} selects only runtime findings ({runtime[0]}–{runtime[-1]})")
        raise CodeError(f"{what}, reported by the auditor while a watched training runs "
                        f"(`with auditor.watch():`); the linter checks only the static rules "
                        f"{STATIC_CODES[0]}–{STATIC_CODES[-1]}")
    raise CodeError(f"unknown rule code {pattern}; `gradlint rules` lists them")


def check_patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    return tuple(check_pattern(pattern) for pattern in patterns)


def flake8_warnings(patterns: Iterable[str]) -> list[str]:
    """Warnings for ``GRD`` patterns in flake8's selection options that match no code flake8 can report.

    flake8 owns selection there (and accepts any code), so these are warnings, never errors.
    """
    warnings = []
    for pattern in patterns:
        normal = pattern.strip().upper()
        if not normal.startswith("GRD") or any(code.startswith(normal) for code in FLAKE8_ONLY_CODES):
            continue
        try:
            check_pattern(normal)
        except CodeError as exc:
            warnings.append(str(exc))
    return warnings


__all__ = ["CodeError", "RUNTIME_CODES", "STATIC_CODES", "check_pattern", "check_patterns", "flake8_warnings"]
