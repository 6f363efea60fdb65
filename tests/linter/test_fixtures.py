"""Every fixture produces exactly the findings its ``# expect:`` markers name — no more, no fewer."""
from __future__ import annotations

from pathlib import Path

import pytest

from gradlint.engine import lint_file
from gradlint.rules import ALL_RULES

from conftest import FIXTURES, expected_findings

FIXTURE_FILES = sorted((FIXTURES / "rules").rglob("*.py")) + sorted((FIXTURES / "example").glob("train_*.py"))


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixture_findings_match_markers(path: Path) -> None:
    result = lint_file(str(path), ALL_RULES)
    assert result.errors == []
    actual = {(v.line, v.code) for v in result.violations}
    expected = expected_findings(path)
    assert actual == expected, (
        f"unexpected: {sorted(actual - expected)}; missing: {sorted(expected - actual)}"
    )


def test_every_rule_has_positive_and_negative_fixtures() -> None:
    for rule in ALL_RULES:
        folder = FIXTURES / "rules" / rule.CODE
        positives = list(folder.glob("positive_*.py"))
        negatives = list(folder.glob("negative_*.py"))
        assert positives and negatives, rule.CODE
        assert all(any(code == rule.CODE for _, code in expected_findings(p)) for p in positives), rule.CODE
        assert all(not expected_findings(n) for n in negatives), rule.CODE


def test_example_fires_all_three_foundation_rules() -> None:
    example = FIXTURES / "example" / "train_partial_update.py"
    codes = {v.code for v in lint_file(str(example), ALL_RULES).violations}
    assert {"GRD001", "GRD002", "GRD003"} <= codes
