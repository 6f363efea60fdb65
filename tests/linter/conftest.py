"""Shared helpers for the linter tests."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
# The commands the tests run lint for real; tests/linter/test_cache.py turns the result cache back on.
os.environ["GRADLINT_NO_CACHE"] = "1"
EXPECT = re.compile(r"#\s*expect:\s*((?:GRD\d{3}[,\s]*)+)")


def expected_findings(path: Path) -> set[tuple[int, str]]:
    """``# expect: GRD001`` markers: (line, code) pairs a fixture must produce, and nothing else."""
    found = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = EXPECT.search(line)
        if match:
            for code in re.findall(r"GRD\d{3}", match.group(1)):
                found.add((number, code))
    return found


def run_gradlint(*args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gradlint", *args],
        cwd=cwd, capture_output=True, text=True, input=stdin, timeout=300,
    )


@pytest.fixture
def write(tmp_path: Path):
    """Write a file under tmp_path and return its path."""

    def _write(relative: str, content: str | bytes) -> Path:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return _write
