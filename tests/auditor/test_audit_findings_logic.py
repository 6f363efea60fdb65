"""The finding rules on synthetic step records (pure Python: no training needed)."""
import pytest

from auditor import findings as fnd
from auditor.records import StepRecord


def rec(step, var_set=("a", "b"), norm=1.0, opt="sgd", var_norms=None, clip_ratio=None, nonfinite=()):
    return StepRecord(step=step, optimizer=opt, global_norm=norm, clipped_norm=norm, clip_ratio=clip_ratio,
                      var_norms=var_norms or {v: norm for v in var_set}, none_vars=[], changed_vars=None,
                      nonfinite=list(nonfinite), applied_norm=norm, var_set=tuple(var_set))


T = fnd.merge_thresholds(None)


def codes(found):
    return [f.code for f in found]


def test_one_variable_set_is_silent():
    assert fnd.check_apply_patterns([rec(i) for i in range(20)], [], T) == []


@pytest.mark.parametrize("period", [2, 3, 6])
def test_disjoint_cycle_is_multiple_applies(period):
    sets = [(f"v{k}",) for k in range(period)]
    records = [rec(i, sets[i % period]) for i in range(4 * period)]
    (finding,) = fnd.check_apply_patterns(records, [], T)
    assert finding.code == "GRD103" and f"{period} times per training step" in finding.message


def test_cycle_order_within_a_step_may_vary():
    # TF1 runs sibling apply ops of one sess.run concurrently: each step's order is arbitrary.
    orders = [("a", "b", "c"), ("c", "a", "b"), ("b", "c", "a"), ("a", "c", "b")]
    records = [rec(3 * k + i, (name,)) for k, order in enumerate(orders) for i, name in enumerate(order)]
    (finding,) = fnd.check_apply_patterns(records, [], T)
    assert finding.code == "GRD103" and "3 times per training step" in finding.message


def test_set_repeated_inside_a_window_is_not_a_cycle():
    records = [rec(i, (n,)) for i, n in enumerate("abab" "aabb" "abab")]
    assert codes(fnd.check_apply_patterns(records, [], T)) == ["GRD108"]


def test_cycle_needs_enough_repeats():
    records = [rec(0, ("g",)), rec(1, ("d",))]  # one G/D pair only: not yet a cycle
    assert codes(fnd.check_apply_patterns(records, [], T)) == ["GRD108"]
    strict = dict(T, cycle_min_repeats=1)
    assert codes(fnd.check_apply_patterns(records, [], strict)) == ["GRD103"]


def test_overlapping_alternation_is_variable_set_changed():
    records = [rec(i, ("a", "b") if i % 2 else ("a",)) for i in range(10)]
    (finding,) = fnd.check_apply_patterns(records, [], T)
    assert finding.code == "GRD108" and finding.variables == ["b"]


def test_phase_change_to_another_set_is_variable_set_changed():
    records = [rec(i, ("a", "c") if i < 5 else ("b", "c")) for i in range(10)]
    (finding,) = fnd.check_apply_patterns(records, [], T)
    assert finding.code == "GRD108" and finding.step == 5 and finding.variables == ["a", "b"]
    assert "not a freeze or unfreeze" in finding.message


@pytest.mark.parametrize("sets", [
    [("a", "b")] * 5 + [("b",)] * 5,  # layer a frozen halfway (trainable = False, compile again)
    [("b",)] * 5 + [("a", "b")] * 5,  # unfrozen
    [("a", "b", "c")] * 4 + [("b", "c")] * 4 + [("c",)] * 4 + [("a", "b", "c")] * 4,  # gradual, then all
    [("a", "b")] + [("b",)] * 5,  # a run (or a history chunk) that starts just before the freeze
], ids=["freeze", "unfreeze", "gradual", "short-first-phase"])
def test_freeze_between_phases_is_silent(sets):
    assert fnd.check_apply_patterns([rec(i, s) for i, s in enumerate(sets)], [], T) == []


def test_nested_sets_alternating_every_step_are_variable_set_changed():
    records = [rec(i, ("a", "b") if i % 3 else ("b",)) for i in range(12)]
    assert codes(fnd.check_apply_patterns(records, [], T)) == ["GRD108"]


def test_marks_count_applies_per_step():
    records = [rec(i) for i in range(6)]
    assert fnd.check_apply_patterns(records, [{"sgd": k} for k in range(1, 7)], T) == []
    (finding,) = fnd.check_apply_patterns(records, [{"sgd": 2}, {"sgd": 4}], T)
    assert finding.code == "GRD103" and finding.step == 0


def test_marks_of_a_long_run_find_the_first_step_with_two_applies():
    """A mark after every step of a long run (marks arrive in any order, some twice, some for
    another optimizer): silent while each step applies once; a step that applies twice is found
    with its first apply and its count; applies before the first mark and after the last count."""
    steps = list(range(5000))
    marks = [{"sgd": k + 1} for k in steps] + [{"sgd": 7}, {"other": 3}]
    marks.reverse()
    assert fnd.check_apply_patterns([rec(i) for i in steps], marks, T) == []
    twice = [rec(i) for i in steps[:3000]] + [rec(3000), rec(3000)] + [rec(i) for i in steps[3001:]]
    wide = [m for m in marks if m.get("sgd") != 3001]  # steps 3000 and 3001 between two marks
    (finding,) = fnd.check_apply_patterns(twice, marks, T)
    assert (finding.code, finding.step) == ("GRD103", 3000) and "applied 2 times" in finding.message
    (finding,) = fnd.check_apply_patterns([rec(i) for i in steps], wide, T)
    assert (finding.step, "applied 2 times" in finding.message) == (3000, True)
    edges = [{"sgd": 10}, {"sgd": 20}]
    (finding,) = fnd.check_apply_patterns([rec(0), rec(5), rec(12), rec(25)], edges, T)
    assert finding.step == 0 and "applied 2 times" in finding.message
    (finding,) = fnd.check_apply_patterns([rec(3), rec(12), rec(20), rec(21), rec(30)], edges, T)
    assert finding.step == 20 and "applied 3 times" in finding.message


def test_exploding_by_running_median():
    norms = [1.0] * 12 + [150.0] + [1.0] * 3
    (finding,) = fnd.check_exploding([rec(i, norm=n) for i, n in enumerate(norms)], T)
    assert finding.code == "GRD105" and finding.step == 12 and "running median" in finding.message
    calm = [1.0] * 12 + [50.0]
    assert fnd.check_exploding([rec(i, norm=n) for i, n in enumerate(calm)], T) == []
    early = [1.0] * 5 + [500.0]  # too little history for the relative rule
    assert fnd.check_exploding([rec(i, norm=n) for i, n in enumerate(early)], T) == []


def test_exploding_needs_the_run_scale():
    """A converged run: early norms ~4, then ~1e-6 with Adam's oscillation spikes to 1e-3: far above
    the running median, far below the run's own scale (explode_scale_fraction x the peak): silent.
    A spike back to the early scale is reported."""
    norms = [4.0, 3.0, 2.0] + [1e-6] * 30 + [1e-3] + [1e-6] * 5
    assert fnd.check_exploding([rec(i, norm=n) for i, n in enumerate(norms)], T) == []
    (finding,) = fnd.check_exploding([rec(i, norm=n) for i, n in enumerate(norms + [2.0])], T)
    assert finding.step == len(norms) and "running median" in finding.message
    no_floor = dict(T, explode_scale_fraction=0.0)
    assert codes(fnd.check_exploding([rec(i, norm=n) for i, n in enumerate(norms)], no_floor)) == ["GRD105"]


def test_counts_and_maxima_cover_every_record():
    norms = [1.0] * 12 + [150.0, 1.0, 900.0, 1.0, 300.0]
    (finding,) = fnd.check_exploding([rec(i, norm=n) for i, n in enumerate(norms)], T)
    assert "(3 such step(s) in the run; max 900 at step 14)" in finding.message


def test_exploding_overflowed_norm_but_not_nan():
    records = [rec(0, norm=float("inf")), rec(1, norm=float("nan"), nonfinite=("a",))]
    (finding,) = fnd.check_exploding(records, T)
    assert finding.step == 0
    assert fnd.check_exploding([rec(0, norm=float("inf"), nonfinite=("a",))], T) == []


def test_vanishing_fraction_and_minimum_steps():
    def run(tiny_steps, total):
        return fnd.check_vanishing(
            [rec(i, var_norms={"a": 1e-9 if i < tiny_steps else 1.0, "b": 1.0}) for i in range(total)], T, set())
    assert codes(run(9, 10)) == ["GRD106"]
    assert run(8, 10) == []  # 80% < 90%
    assert run(4, 4) == []  # fewer than vanish_min_steps
    assert fnd.check_vanishing([rec(i, var_norms={"a": 0.0}) for i in range(9)], T, {"a"}) == []  # skipped


def test_clipping_fraction():
    ratios = [0.5] * 9 + [1.0]
    (finding,) = fnd.check_clipping([rec(i, clip_ratio=r) for i, r in enumerate(ratios)], T)
    assert finding.code == "GRD107"
    assert fnd.check_clipping([rec(i, clip_ratio=r) for i, r in enumerate([0.5] * 8 + [1.0] * 2)], T) == []
    assert fnd.check_clipping([rec(i, clip_ratio=0.5) for i in range(9)], T) == []  # too few steps
    assert fnd.check_clipping([rec(i) for i in range(20)], T) == []  # no clipping at all


def test_thresholds_merge_and_validate():
    merged = fnd.merge_thresholds({"vanish_norm": 1e-6})
    assert merged["vanish_norm"] == 1e-6 and merged["explode_norm"] == fnd.DEFAULT_THRESHOLDS["explode_norm"]
    with pytest.raises(ValueError, match="unknown auditor threshold"):
        fnd.merge_thresholds({"vanish": 1})


def test_every_code_has_catalogue_name_and_twins_in_message():
    from gradlint.runtime_checks import RUNTIME_BY_CODE

    for code, check in RUNTIME_BY_CODE.items():
        finding = fnd.make_finding(code, "x.", 0, {"v"})
        assert finding.name == check.name
        assert all(twin in finding.message for twin in check.static_twins)
