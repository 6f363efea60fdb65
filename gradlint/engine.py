"""Lint one file: prefilter -> parse once -> semantic model once -> every selected rule -> noqa."""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Optional, Sequence

import libcst as cst

from gradlint import source as sources
from gradlint.prefilter import might_have_gradient_code
from gradlint.noqa import Suppressions
from gradlint.rules import Report, Rule
from gradlint.semantic import build_model
from gradlint.violation import FileError, Violation



@dataclass
class LintResult:
    path: str
    violations: list[Violation] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)


def lint_file(path: str, rules: Sequence[type[Rule]], *, target_keras: int = 3) -> LintResult:
    try:
        data = sources.read(path)
    except sources.SourceError as exc:
        return LintResult(path, errors=[FileError(path, str(exc), exc.line)])
    return lint_source(data, path, rules, target_keras=target_keras)


def lint_source(
    data: bytes | str,
    path: str,
    rules: Sequence[type[Rule]],
    *,
    target_keras: int = 3,
    apply_noqa: bool = True,
    tree: Optional[ast.AST] = None,
    force: bool = False,
) -> LintResult:
    """Check one file's contents. Never raises for bad input: problems become ``errors``.

    ``tree`` is an already-parsed stdlib AST of the same text (flake8 passes one), used by the prefilter;
    ``force`` analyses the file even when the prefilter finds nothing gradient-related (for robustness tests).
    """
    result = LintResult(path)
    if not rules:
        return result
    if isinstance(data, bytes):
        # Decoding is cheap (about 1 ms per MB) and done for every file, so binary and undecodable files
        # are always reported; parsing is not, so syntax errors are reported for gradient code only.
        try:
            text = sources.decode(data)
        except sources.SourceError as exc:
            result.errors.append(FileError(path, str(exc), exc.line))
            return result
    else:
        text = data
    if not (force or might_have_gradient_code(data, tree, rules)):
        return result
    if apply_noqa and Suppressions(text).whole_file:
        return result
    module = _parse(text, path, result)
    if module is None:
        return result
    for reported in check_module(module, text, path, rules, result.errors,
                                 target_keras=target_keras, apply_noqa=apply_noqa):
        result.violations.append(reported.violation)
    result.violations.sort()
    return result


@dataclass(frozen=True)
class Reported:
    """One rule's report with its resolved location (the fix engine also needs the report itself)."""

    rule: type[Rule]
    report: Report
    violation: Violation


def check_module(
    module: cst.Module,
    text: str,
    path: str,
    rules: Sequence[type[Rule]],
    errors: list[FileError],
    *,
    target_keras: int = 3,
    apply_noqa: bool = True,
) -> list[Reported]:
    """Build the semantic model once, run every rule on it, drop ``# noqa``-suppressed reports.

    An analyser bug or one rule's bug is appended to ``errors``; the other rules still run.
    """
    suppressions = Suppressions(text) if apply_noqa else None
    if suppressions is not None and suppressions.whole_file:
        return []
    try:
        model = build_model(module, target_keras=target_keras, source=text)
    except RecursionError:
        errors.append(FileError(path, "code nested too deeply to analyse"))
        return []
    except Exception as exc:  # an analyzer bug must not stop the other files
        errors.append(FileError(path, f"internal error while analysing: {type(exc).__name__}: {exc}"))
        return []
    found: list[Reported] = []
    for rule in rules:
        try:
            reports = list(rule().check(model))
        except Exception as exc:  # one rule's bug must not stop the other rules
            errors.append(FileError(path, f"internal error in rule {rule.CODE}: {type(exc).__name__}: {exc}"))
            continue
        for report in reports:
            position = model.position(report.node)
            line = position.start.line
            if suppressions is not None and suppressions.suppresses(line, rule.CODE):
                continue
            found.append(Reported(rule, report, Violation(
                path, line, position.start.column, rule.CODE, report.message,
                position.end.line, position.end.column,
            )))
    return found


def parse(text: str, path: str) -> tuple[Optional[cst.Module], list[FileError]]:
    """Parse with libcst; a failure becomes one clear error (CPython's wording for syntax errors)."""
    result = LintResult(path)
    return _parse(text, path, result), result.errors


def _parse(text: str, path: str, result: LintResult) -> Optional[cst.Module]:
    try:
        return cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        result.errors.append(FileError(path, *_syntax_error(text, exc)))
    except RecursionError:
        result.errors.append(FileError(path, "code nested too deeply to parse"))
    except Exception as exc:  # libcst raises other errors on some inputs
        result.errors.append(FileError(path, f"cannot parse: {type(exc).__name__}: {exc}"))
    return None


def _syntax_error(text: str, exc: cst.ParserSyntaxError) -> tuple[str, int]:
    """(message, line): CPython's own location and wording when it agrees the code is invalid (it is usually
    more precise)."""
    try:
        ast.parse(text)
    except SyntaxError as syntax:
        return f"syntax error at line {syntax.lineno}, column {syntax.offset or 1}: {syntax.msg}", syntax.lineno or 0
    except Exception:
        pass
    else:
        return (f"libcst cannot parse this file although Python accepts it (line {exc.raw_line}); "
                "it was not checked"), exc.raw_line
    first = str(exc.message).strip().splitlines()[0] if exc.message else "invalid syntax"
    return f"syntax error at line {exc.raw_line}, column {exc.raw_column + 1}: {first}", exc.raw_line
