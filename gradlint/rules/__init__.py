"""The rule registry: every static rule, and code selection (`--select` / `--ignore`)."""
from __future__ import annotations

from typing import Iterable, Sequence

from gradlint.rules.base import Report, Rule
from gradlint.rules.grd001_unchecked_none_gradient import UncheckedNoneGradient
from gradlint.rules.grd002_optimizer_var_list_overwritten import OptimizerVarListOverwritten
from gradlint.rules.grd003_apply_gradients_per_variable import ApplyGradientsPerVariable
from gradlint.rules.grd004_clip_global_norm_not_unpacked import ClipGlobalNormNotUnpacked
from gradlint.rules.grd005_clipped_gradients_unused import ClippedGradientsUnused
from gradlint.rules.grd006_gradients_variables_mismatch import GradientsVariablesMismatch
from gradlint.rules.grd007_zip_consumed_before_apply import ZipConsumedBeforeApply
from gradlint.rules.grd008_non_persistent_tape_reused import NonPersistentTapeReused
from gradlint.rules.grd009_gradient_inside_tape_context import GradientInsideTapeContext
from gradlint.rules.grd010_target_outside_tape import TargetOutsideTape
from gradlint.rules.grd011_gradient_path_broken import GradientPathBroken
from gradlint.rules.grd012_tf1_variable_name import Tf1VariableName
from gradlint.rules.grd013_read_only_trainable_assignment import ReadOnlyTrainableAssignment
from gradlint.rules.grd014_loss_scale_misuse import LossScaleMisuse
from gradlint.rules.grd015_removed_optimizer_api import RemovedOptimizerApi
from gradlint.rules.grd016_clipping_before_allreduce import ClippingBeforeAllreduce
from gradlint.rules.grd017_regularization_losses_dropped import RegularizationLossesDropped
from gradlint.rules.grd018_distributed_mean_loss import DistributedMeanLoss

ALL_RULES: tuple[type[Rule], ...] = (
    UncheckedNoneGradient,
    OptimizerVarListOverwritten,
    ApplyGradientsPerVariable,
    ClipGlobalNormNotUnpacked,
    ClippedGradientsUnused,
    GradientsVariablesMismatch,
    ZipConsumedBeforeApply,
    NonPersistentTapeReused,
    GradientInsideTapeContext,
    TargetOutsideTape,
    GradientPathBroken,
    Tf1VariableName,
    ReadOnlyTrainableAssignment,
    LossScaleMisuse,
    RemovedOptimizerApi,
    ClippingBeforeAllreduce,
    RegularizationLossesDropped,
    DistributedMeanLoss,
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
