"""The schedule table of a device probe (``auditor.probe.Plan``): which branch each step takes."""
from auditor.probe import PLAN_MAX, Plan


def _branch(check, histogram):
    return 1 + 2 * check + histogram


def _code(plan, step, first_checks):
    return plan.codes[step % plan.modulus + (plan.modulus if first_checks else 0)]


def test_record_check_and_histogram_steps_repeat_after_the_common_multiple():
    plan = Plan.build(every=2, period=6, hist=4, first=3, branch=_branch)
    assert plan.modulus == 12 and plan.checks_left == 3 and plan.offset() == 12
    for step in range(100):
        code = _code(plan, step, first_checks=False)
        if step % 2:
            assert code == 0
        else:
            assert code == _branch(step % 6 == 0, step % 4 == 0)
        forced = _code(plan, step, first_checks=True)
        assert forced == (0 if step % 2 else _branch(True, step % 4 == 0))


def test_never_checking_and_no_histograms():
    plan = Plan.build(every=1, period=0, hist=0, first=0, branch=_branch)
    assert plan.modulus == 1 and plan.codes[:1] == [_branch(False, False)] and plan.offset() == 0


def test_a_plan_past_its_longest_keeps_recording_exact():
    plan = Plan.build(every=7, period=50, hist=101, first=0, branch=_branch)  # lcm 35,350
    assert plan.modulus <= PLAN_MAX and plan.modulus % 7 == 0
    for step in range(0, 3 * plan.modulus, 5):
        assert (_code(plan, step, first_checks=False) != 0) == (step % 7 == 0)
