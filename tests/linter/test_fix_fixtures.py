"""Every fix fixture: ``fixtures/fix/GRDnnn/NAME.in.py`` fixed by rule GRDnnn (unsafe fixes included)
is exactly ``NAME.out.py`` (TorchFix's codemod layout), and fixing the result changes nothing."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gradlint.fixer import fix_text
from gradlint.rules import RULES_BY_CODE

from conftest import FIXTURES

INPUTS = sorted((FIXTURES / "fix").glob("GRD*/*.in.py"))


def _expected(path: Path) -> Path:
    return path.with_name(path.name[: -len(".in.py")] + ".out.py")


def _fix(text: str, path: Path) -> str:
    rule = RULES_BY_CODE[path.parent.name]
    result = fix_text(text, str(path), [rule], unsafe=True)
    assert result.errors == []
    return result.fixed


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: str(p.relative_to(FIXTURES / "fix")))
def test_fix_fixture(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    expected = _expected(path).read_text(encoding="utf-8")
    fixed = _fix(text, path)
    assert fixed == expected
    assert fixed != text, "a fixture must change something"
    ast.parse(fixed)
    assert _fix(fixed, path) == fixed, "fixing the fixed file changes it again"


def test_every_fixable_rule_has_fix_fixtures() -> None:
    for code, rule in RULES_BY_CODE.items():
        if rule.FIX is not None and code in ("GRD001", "GRD003", "GRD004", "GRD005", "GRD007", "GRD009",
                                             "GRD014", "GRD015"):
            assert list((FIXTURES / "fix" / code).glob("*.in.py")), code
    for path in INPUTS:
        assert _expected(path).exists(), f"{path.name} has no .out.py"
        assert path.parent.name in RULES_BY_CODE, path.parent.name
