"""Each rule's own VALID / INVALID examples (Fixit-style) and documentation sections."""
from __future__ import annotations

import pytest

from gradlint.engine import lint_source
from gradlint.rules import ALL_RULES
from gradlint.runtime_checks import RUNTIME_CHECKS

CASES = [(rule, i, code, True) for rule in ALL_RULES for i, code in enumerate(rule.INVALID)] + \
        [(rule, i, code, False) for rule in ALL_RULES for i, code in enumerate(rule.VALID)]


@pytest.mark.parametrize("rule,index,code,should_fire", CASES,
                         ids=[f"{r.CODE}-{'invalid' if f else 'valid'}-{i}" for r, i, _, f in CASES])
def test_example(rule, index, code, should_fire) -> None:
    # Runs through the whole engine, prefilter included: a rule whose trigger the prefilter misses fails here.
    result = lint_source(code, "example.py", [rule])
    assert result.errors == []
    if should_fire:
        assert result.violations, f"{rule.CODE} INVALID example {index} was not reported"
        assert all(v.code == rule.CODE for v in result.violations)
    else:
        assert result.violations == [], f"{rule.CODE} VALID example {index} reported: {result.violations}"


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.CODE)
def test_rule_is_documented(rule) -> None:
    assert rule.CODE.startswith("GRD") and len(rule.CODE) == 6
    assert rule.NAME and rule.NAME == rule.NAME.lower() and " " not in rule.NAME
    for section in ("SUMMARY", "WHAT", "WHY", "EXAMPLE", "USE_INSTEAD", "FIX_SAFETY"):
        assert getattr(rule, section, "").strip(), f"{rule.CODE} lacks {section}"
    assert rule.FIX in (None, "safe", "unsafe")
    assert rule.INVALID and rule.VALID, f"{rule.CODE} needs positive and negative examples"
    # the docs' own example must trigger the rule, and the 'use instead' must not
    example = "import tensorflow as tf\nimport keras\n" + rule.EXAMPLE
    assert lint_source(example, "doc.py", [rule]).violations, f"{rule.CODE} docs example is not reported"
    fixed = "import tensorflow as tf\nimport keras\n" + rule.USE_INSTEAD
    assert not lint_source(fixed, "doc.py", [rule]).violations, f"{rule.CODE} 'use instead' is reported"


def test_codes_are_unique_across_static_and_runtime() -> None:
    codes = [r.CODE for r in ALL_RULES] + [c.code for c in RUNTIME_CHECKS]
    names = [r.NAME for r in ALL_RULES] + [c.name for c in RUNTIME_CHECKS]
    assert len(codes) == len(set(codes))
    assert len(names) == len(set(names))


def test_runtime_checks_are_documented() -> None:
    static = {r.CODE for r in ALL_RULES}
    for check in RUNTIME_CHECKS:
        assert check.code.startswith("GRD1")
        for text in (check.what, check.why, check.example, check.use_instead):
            assert text.strip()
        # twins that exist today must be real static codes (later rules land with the catalogue issue)
        assert all(t.startswith("GRD0") for t in check.static_twins)
    assert static
