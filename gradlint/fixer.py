"""Apply fixes to one file's text: lint -> pick fixes -> apply non-overlapping edits -> re-parse -> repeat.

Each pass parses the current text, builds the semantic model, runs the selected rules and collects the
fixes of findings that are not suppressed by ``# noqa`` and whose safety class is allowed. Fixes are
taken in source order; a fix whose edits overlap an already taken fix waits for the next pass (it is
re-computed on the new tree, where it may no longer be needed). The pass's result must parse with
CPython's parser; otherwise the file is left unchanged and reported. Passes stop when nothing more is
fixable, or after ``max_passes``.
"""
from __future__ import annotations

import ast
import codecs
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import libcst as cst

from gradlint import source as sources
from gradlint.engine import check_module, lint_source, parse
from gradlint.fixes.edits import EditError, Fix, apply_edits, subtree_ids
from gradlint.noqa import Suppressions
from gradlint.notebook import Notebook, NotebookError, is_notebook
from gradlint.prefilter import might_have_gradient_code, passes_text
from gradlint.rules import Rule
from gradlint.violation import FileError, Violation
from gradlint.writer import WriteError, encode_like, write_atomically, write_fixed

DEFAULT_MAX_PASSES = 10


@dataclass
class FixResult:
    """What fixing one file did. ``fixed`` equals ``original`` when nothing changed or on error.

    ``original`` and ``fixed`` are the Python text the fixes worked on (for a notebook: its cells as one
    module); ``sections`` are the changed parts as a reader sees them, ``(label, before, after)``: the file,
    or each changed notebook cell; ``output`` is the whole new file as bytes (None when nothing changed).
    """

    path: str
    original: str
    fixed: str
    applied: Counter = field(default_factory=Counter)          # code -> number of fixes applied
    remaining: list[Violation] = field(default_factory=list)   # findings left in ``fixed``
    unsafe_available: Counter = field(default_factory=Counter)  # code -> fixes left that need --unsafe-fixes
    errors: list[FileError] = field(default_factory=list)
    passes: int = 0
    sections: list[tuple[str, str, str]] = field(default_factory=list)
    output: Optional[bytes] = None
    _before: list[Violation] = field(default_factory=list, repr=False)  # findings in ``original``

    @property
    def changed(self) -> bool:
        return self.fixed != self.original

    @property
    def fixed_count(self) -> int:
        return sum(self.fixed_findings.values())

    @property
    def fixed_findings(self) -> Counter:
        """code -> findings that are gone (one fix can remove several, e.g. two applies in one loop)."""
        if not self.changed:
            return Counter()
        gone = Counter(v.code for v in self._before) - Counter(v.code for v in self.remaining)
        for code, fixes in self.applied.items():
            gone[code] = max(gone[code], fixes if not gone[code] else 0)
        return +gone

    def undo(self, error: FileError) -> None:
        """Record that the fixed file could not be written: nothing changed, the original findings remain."""
        self.errors.append(error)
        self.fixed, self.remaining, self.applied = self.original, list(self._before), Counter()
        self.sections, self.output = [], None


def fix_file(
    path: str,
    rules: Sequence[type[Rule]],
    *,
    unsafe: bool = False,
    target_keras: int = 3,
    write: bool = True,
    max_passes: int = DEFAULT_MAX_PASSES,
) -> FixResult:
    """Fix one file (Python or notebook); with ``write`` the file is rewritten (atomically) when something
    changed. A file that cannot be read, decoded, parsed or written is reported in ``errors`` and left untouched.
    """
    try:
        data = sources.read(path)
    except sources.SourceError as exc:
        return FixResult(path, "", "", errors=[FileError(path, str(exc))])
    result = fix_data(data, path, rules, unsafe=unsafe, target_keras=target_keras, max_passes=max_passes)
    if write and result.output is not None and not result.errors:
        try:
            if is_notebook(path):
                write_atomically(path, result.output, data)
            else:
                write_fixed(path, result.fixed, data)  # parses the text once more before writing
        except WriteError as exc:
            result.undo(FileError(path, str(exc)))
    return result


def fix_data(
    data: bytes,
    path: str,
    rules: Sequence[type[Rule]],
    *,
    unsafe: bool = False,
    target_keras: int = 3,
    max_passes: int = DEFAULT_MAX_PASSES,
) -> FixResult:
    """Fix a file's contents (``path`` names it and says whether it is a notebook); writes nothing."""
    if is_notebook(path):
        return _fix_notebook(data, path, rules, unsafe=unsafe, target_keras=target_keras, max_passes=max_passes)
    try:
        text = sources.decode(data)
    except sources.SourceError as exc:
        return FixResult(path, "", "", errors=[FileError(path, str(exc), exc.line)])
    result = fix_text(text, path, rules, unsafe=unsafe, target_keras=target_keras, max_passes=max_passes)
    if result.changed and not result.errors:
        try:
            result.output = encode_like(result.fixed, data)
        except WriteError as exc:
            result.undo(FileError(path, str(exc)))
            return result
        result.sections = [(path, result.original, result.fixed)]
    return result


def _fix_notebook(data: bytes, path: str, rules: Sequence[type[Rule]], *, unsafe: bool, target_keras: int,
                  max_passes: int) -> FixResult:
    """Fix the code cells of a notebook as one module; only changed cells' sources are rewritten."""
    try:
        notebook = Notebook.read(data)
    except NotebookError as exc:
        return FixResult(path, "", "", errors=[FileError(path, str(exc))])
    if notebook.broken_cells and passes_text("".join(c.python for c in notebook.cells), rules):
        # like a .py file with a syntax error: reported, left untouched
        found = lint_source(notebook.python, path, rules, target_keras=target_keras)
        return FixResult(path, notebook.python, notebook.python, remaining=[notebook.locate(v) for v in found.violations],
                         errors=notebook.syntax_errors(path))
    result = fix_text(notebook.python, path, rules, unsafe=unsafe, target_keras=target_keras, max_passes=max_passes)
    result.remaining = sorted(notebook.locate(v) for v in result.remaining)
    result._before = [notebook.locate(v) for v in result._before]
    result.errors = [notebook.locate_error(e) for e in result.errors]
    if not result.changed or result.errors:
        return result
    try:
        sources_now = notebook.split(result.fixed)
        text = notebook.with_sources(sources_now)
    except NotebookError as exc:
        result.undo(FileError(path, str(exc)))
        return result
    checked = [cell for cell in notebook.cells if cell.syntax_error is None]
    result.sections = [(f"{path}:cell {cell.number}", cell.source, new)
                       for cell, new in zip(checked, sources_now) if new != cell.source]
    result.output = (codecs.BOM_UTF8 if data.startswith(codecs.BOM_UTF8) else b"") + text.encode("utf-8")
    return result


@dataclass
class _Candidate:
    code: str
    line: int
    column: int
    fix: Fix


def fix_text(
    text: str,
    path: str,
    rules: Sequence[type[Rule]],
    *,
    unsafe: bool = False,
    target_keras: int = 3,
    max_passes: int = DEFAULT_MAX_PASSES,
    transform: Optional[Callable[[list[Fix]], list[Fix]]] = None,
) -> FixResult:
    """Fix ``text`` (decoded source of ``path``) and return the result; never raises for bad input.

    ``transform`` (for tests and tools) may rewrite the list of fixes chosen in a pass before they are
    applied, e.g. to inject a broken edit and check that it is refused.
    """
    result = FixResult(path, text, text)
    if not rules:
        return result
    current = text
    applied: Counter = Counter()
    for number in range(max_passes):
        analysis = _analyse(current, path, rules, target_keras, unsafe)
        if analysis.errors:
            if current is text:
                result.errors = analysis.errors
            else:  # cannot happen unless a fix produced code libcst rejects but CPython accepts
                result.errors = [FileError(path, "fixed code could not be re-analysed ("
                                           + "; ".join(e.message for e in analysis.errors)
                                           + "); file left unchanged")]
            return result
        result.passes = number + 1
        if number == 0:
            result.remaining = analysis.violations  # what is left if this file cannot be fixed
            result._before = analysis.violations
        chosen = _choose(analysis.candidates)
        if not chosen:
            result.remaining = analysis.violations
            result.unsafe_available = analysis.unsafe_available
            break
        fixes = [c.fix for c in chosen]
        if transform is not None:
            fixes = transform(fixes)
        new_text, error = _apply(analysis.module, fixes, chosen, path)
        if error is not None:
            result.errors = [error]
            return result
        current = _keep_newline_style(text, new_text)
        for candidate in chosen:
            applied[candidate.code] += 1
    else:  # bound reached: report what is left in the last text
        final = lint_source(current, path, rules, target_keras=target_keras)
        result.remaining = final.violations
        result.errors = final.errors
    result.fixed = current
    result.applied = applied
    return result


@dataclass
class _Analysis:
    module: Optional[cst.Module] = None
    violations: list[Violation] = field(default_factory=list)
    candidates: list[_Candidate] = field(default_factory=list)
    unsafe_available: Counter = field(default_factory=Counter)
    errors: list[FileError] = field(default_factory=list)


def _analyse(text: str, path: str, rules: Sequence[type[Rule]], target_keras: int, unsafe: bool) -> _Analysis:
    """The engine's lint (same prefilter, parse, model, noqa), keeping each report's fix."""
    analysis = _Analysis()
    if not might_have_gradient_code(text, rules=rules) or Suppressions(text).whole_file:
        return analysis
    module, analysis.errors = parse(text, path)
    if module is None:
        return analysis
    analysis.module = module
    for reported in check_module(module, text, path, rules, analysis.errors, target_keras=target_keras):
        rule, violation = reported.rule, reported.violation
        analysis.violations.append(violation)
        try:
            fix = reported.report.resolve_fix()
        except Exception as exc:  # a fix builder's bug: keep the finding, report the bug
            analysis.errors.append(FileError(
                path, f"internal error building the {rule.CODE} fix at line {violation.line}: "
                      f"{type(exc).__name__}: {exc}"))
            continue
        if fix is None:
            continue
        if fix.safety == "unsafe" and not unsafe:
            analysis.unsafe_available[rule.CODE] += 1
            continue
        analysis.candidates.append(_Candidate(rule.CODE, violation.line, violation.column, fix))
    analysis.violations.sort()
    return analysis


def _choose(candidates: list[_Candidate]) -> list[_Candidate]:
    """Fixes in source order whose edits do not overlap each other (nor themselves)."""
    chosen: list[_Candidate] = []
    covered: set[int] = set()   # every node inside a taken edit
    targets: set[int] = set()   # the nodes taken edits replace
    for candidate in sorted(candidates, key=lambda c: (c.line, c.column, c.code)):
        own_targets = [id(edit.node) for edit in candidate.fix.edits]
        own_covered: set[int] = set()
        overlapping = len(set(own_targets)) != len(own_targets)
        for edit in candidate.fix.edits:
            inside = subtree_ids(edit.node)
            if own_covered & inside:
                overlapping = True
            own_covered |= inside
        if overlapping:
            continue  # a malformed fix: never applied
        if targets & own_covered or covered & set(own_targets):
            continue  # overlaps a fix taken in this pass: try again next pass
        chosen.append(candidate)
        covered |= own_covered
        targets.update(own_targets)
    return chosen


def _apply(module: cst.Module, fixes: list[Fix], chosen: list[_Candidate], path: str):
    """Apply the fixes of one pass; (new text, None) or (None, FileError) when the result is refused."""
    edits = [edit for fix in fixes for edit in fix.edits]
    try:
        new_module = apply_edits(module, edits)
        new_text = new_module.code
    except EditError as exc:
        return None, FileError(path, f"a fix could not be applied ({_codes(chosen)}): {exc}; file left unchanged")
    problem = _syntax_problem(new_text)
    if problem is None:
        return new_text, None
    culprits = []
    for fix, candidate in zip(fixes, chosen):
        try:
            alone = apply_edits(module, fix.edits).code
        except EditError:
            alone = None
        if alone is None or _syntax_problem(alone) is not None:
            culprits.append(f"{candidate.code} at line {candidate.line}")
    which = ", ".join(culprits) or _codes(chosen)
    return None, FileError(path, f"refused a fix that produces code that does not parse ({which}: {problem}); "
                                 "file left unchanged")


def _syntax_problem(text: str) -> Optional[str]:
    try:
        ast.parse(text)
    except SyntaxError as exc:
        return f"{exc.msg} at line {exc.lineno}"
    except (ValueError, RecursionError, MemoryError) as exc:
        return str(exc) or type(exc).__name__
    return None


def _codes(chosen: list[_Candidate]) -> str:
    return ", ".join(sorted({c.code for c in chosen}))


_LONE_LF = re.compile(r"(?<!\r)\n")


def _keep_newline_style(original: str, fixed: str) -> str:
    """libcst writes new lines with the module's newline; if anything still added a bare ``\\n`` to a
    file that uses only ``\\r\\n``, convert it."""
    if "\r\n" in original and not _LONE_LF.search(original) and _LONE_LF.search(fixed):
        return _LONE_LF.sub("\r\n", fixed)
    return fixed


__all__ = ["DEFAULT_MAX_PASSES", "FixResult", "fix_data", "fix_file", "fix_text"]
