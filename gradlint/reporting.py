"""Output formats for `gradlint check` and `gradlint fix`: text (flake8/ruff style), json (stable,
versioned), sarif (SARIF 2.1.0 for code-scanning tools) and github (workflow annotations).

A finding in a notebook is located by cell (``nb.ipynb:cell 3:5:9`` in text, ``"cell": 3`` in JSON). SARIF
and GitHub point at files as stored, so there the region is the notebook's JSON line that holds the cell's
source line, and the cell, line and column are given in the message (and SARIF ``properties``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from gradlint import __version__
from gradlint.rules import ALL_RULES, RULES_BY_CODE
from gradlint.violation import FileError, Violation

JSON_FORMAT_VERSION = 1


def write_text(violations: list[Violation], errors: list[FileError], out: TextIO, files_checked: int) -> None:
    for v in violations:
        out.write(f"{v.location}: {v.code} {v.message}\n")
    if violations:
        noun = "finding" if len(violations) == 1 else "findings"
        files = len({v.path for v in violations})
        out.write(f"Found {len(violations)} {noun} in {files} file{'s' if files != 1 else ''} "
                  f"({files_checked} checked).\n")


def write_json(violations: list[Violation], errors: list[FileError], out: TextIO, files_checked: int) -> None:
    """``{"version": 1, "files_checked": N, "findings": [...], "errors": [...]}``; columns are 1-based;
    ``cell`` is the notebook cell (null outside notebooks), lines then count from the cell's first line."""
    document = {
        "version": JSON_FORMAT_VERSION,
        "files_checked": files_checked,
        "findings": [
            {
                "path": v.path,
                "line": v.line,
                "column": v.column + 1,
                "end_line": v.end_line,
                "end_column": v.end_column + 1,
                "code": v.code,
                "name": RULES_BY_CODE[v.code].NAME if v.code in RULES_BY_CODE else None,
                "message": v.message,
                "cell": v.cell or None,
            }
            for v in violations
        ],
        "errors": [{"path": e.path, "message": e.message, "line": e.line or None, "cell": e.cell or None}
                   for e in errors],
    }
    json.dump(document, out, indent=2)
    out.write("\n")


SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"


def write_sarif(violations: list[Violation], errors: list[FileError], out: TextIO, files_checked: int) -> None:
    """One SARIF run: every static rule with its docs, one result per finding, file errors as notifications."""
    from gradlint.docs import render_rule

    rules = [
        {
            "id": rule.CODE,
            "name": rule.NAME,
            "shortDescription": {"text": rule.SUMMARY},
            "fullDescription": {"text": rule.WHAT},
            "help": {"text": rule.WHY, "markdown": render_rule(rule)},
            "helpUri": f"docs/rules/{rule.CODE}.md",
            "defaultConfiguration": {"level": "warning", "enabled": not rule.OPT_IN},
            "properties": {"fix": rule.FIX or "none", "tags": ["tensorflow", "gradients"]},
        }
        for rule in ALL_RULES
    ]
    index = {rule["id"]: i for i, rule in enumerate(rules)}
    results = [
        {
            "ruleId": v.code,
            "ruleIndex": index[v.code],
            "level": "warning",
            "message": {"text": _in_cell(v) + v.message},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": Path(v.path).as_posix()},
                                                **_sarif_region(v)}}],
            **({"properties": {"cell": v.cell, "cellLine": v.line, "cellColumn": v.column + 1}} if v.cell else {}),
        }
        for v in violations
    ]
    notifications = [
        {"level": "error", "message": {"text": f"cell {e.cell}: {e.message}" if e.cell else e.message},
         "locations": [{"physicalLocation": {"artifactLocation": {"uri": Path(e.path).as_posix()},
                                             **({"region": {"startLine": e.line}} if e.line and not e.cell else {})}}]}
        for e in errors
    ]
    document = {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {"driver": {"name": "gradlint", "version": __version__, "informationUri":
                                "https://github.com/gradlint/gradlint", "rules": rules}},
            "results": results,
            "invocations": [{"executionSuccessful": not errors, "toolExecutionNotifications": notifications}],
        }],
    }
    json.dump(document, out, indent=2)
    out.write("\n")


def write_github(violations: list[Violation], errors: list[FileError], out: TextIO, files_checked: int) -> None:
    """GitHub Actions workflow commands: annotations on the pull request's diff."""
    for v in violations:
        if v.cell:
            where = f"line={v.file_line or 1}"
        else:
            where = f"line={v.line},col={v.column + 1},endLine={v.end_line or v.line},endColumn={v.end_column + 1}"
        out.write(f"::warning file={_escape_property(v.path)},{where},"
                  f"title={v.code}::{_escape_data(_in_cell(v) + v.code + ' ' + v.message)}\n")
    for e in errors:
        line = e.line if e.line and not e.cell else 1
        message = f"cell {e.cell}: {e.message}" if e.cell else e.message
        out.write(f"::error file={_escape_property(e.path)},line={line},title=gradlint::{_escape_data(message)}\n")


def _in_cell(v: Violation) -> str:
    """``cell 3, line 5, column 9: `` for a finding in a notebook, else nothing."""
    return f"cell {v.cell}, line {v.line}, column {v.column + 1}: " if v.cell else ""


def _sarif_region(v: Violation) -> dict:
    if not v.cell:
        return {"region": {"startLine": v.line, "startColumn": v.column + 1,
                           "endLine": v.end_line or v.line, "endColumn": v.end_column + 1}}
    return {"region": {"startLine": v.file_line}} if v.file_line else {}


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


FORMATTERS = {"text": write_text, "json": write_json, "sarif": write_sarif, "github": write_github}
