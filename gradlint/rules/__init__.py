"""The rule registry: every static rule, and code selection (`--select` / `--ignore`)."""
from __future__ import annotations

from typing import Iterable, Sequence

from gradlint.rules.base import Report, Rule
from gradlint.rules.grd001_unchecked_none_gradient import UncheckedNoneGradient
from gradlint.rules.grd002_optimizer_var_list_overwritten import OptimizerVarListOverwritten
from gradlint.rules.grd003_apply_gradients_per_variable import ApplyGradientsPerVariable

ALL_RULES: tuple[type[Rule], ...] = (
    UncheckedNoneGradient,
    OptimizerVarListOverwritten,
    ApplyGradientsPerVariable,
)
RULES_BY_CODE: dict[str, type[Rule]] = {rule.CODE: rule for rule in ALL_RULES}


def _matches(code: str, patterns: Iterable[str]) -> int:
    """Length of the longest pattern that is a prefix of ``code`` (0: none). ``ALL`` matches everything."""
    best = 0
    for pattern in patterns:
        pattern = pattern.strip().upper()
        if pattern == "ALL":
            best = max(best, 1)
        elif pattern and code.startswith(pattern):
            best = max(best, len(pattern))
    return best


def select_rules(select: Sequence[str] | None = None, ignore: Sequence[str] = ()) -> list[type[Rule]]:
    """Rules enabled by ``select`` / ``ignore`` prefixes (the more specific pattern wins, as in ruff).

    Opt-in rules run only when selected by their full code.
    """
    chosen = []
    for rule in ALL_RULES:
        selected = _matches(rule.CODE, select if select else ["GRD"])
        ignored = _matches(rule.CODE, ignore)
        if not selected or ignored >= selected:
            continue
        if rule.OPT_IN and not any(p.strip().upper() == rule.CODE for p in (select or ())):
            continue
        chosen.append(rule)
    return chosen


__all__ = ["ALL_RULES", "RULES_BY_CODE", "Report", "Rule", "select_rules"]
