"""Output formats for `gradlint check`: text (flake8/ruff style) and json (stable, versioned)."""
from __future__ import annotations

import json
from typing import TextIO

from gradlint.rules import RULES_BY_CODE
from gradlint.violation import FileError, Violation

JSON_FORMAT_VERSION = 1


def write_text(violations: list[Violation], errors: list[FileError], out: TextIO, files_checked: int) -> None:
    for v in violations:
        out.write(f"{v.path}:{v.line}:{v.column + 1}: {v.code} {v.message}\n")
    if violations:
        noun = "finding" if len(violations) == 1 else "findings"
        files = len({v.path for v in violations})
        out.write(f"Found {len(violations)} {noun} in {files} file{'s' if files != 1 else ''} "
                  f"({files_checked} checked).\n")


def write_json(violations: list[Violation], errors: list[FileError], out: TextIO, files_checked: int) -> None:
    """``{"version": 1, "files_checked": N, "findings": [...], "errors": [...]}``; columns are 1-based."""
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
            }
            for v in violations
        ],
        "errors": [{"path": e.path, "message": e.message} for e in errors],
    }
    json.dump(document, out, indent=2)
    out.write("\n")


FORMATTERS = {"text": write_text, "json": write_json}
