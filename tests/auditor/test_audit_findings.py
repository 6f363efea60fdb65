"""Each finding GRD101-GRD108: a planted bug fires it, a clean twin stays silent (no finding at all).

Every scenario runs in an eager loop, a tf.function loop, a jit_compile=True loop, and model.fit
(steps_per_execution=1, and steps_per_execution=3 with XLA).
"""
import pytest
import tensorflow as tf

import auditor
from audit_helpers import CUSTOM_MODES, FIT_MODES, codes, compile_step
from finding_scenarios import IDS, SCENARIOS, STEPS, run_phases, MultipleApplies, NoneGradient, NotUpdated


def run_custom(scenario, planted, mode):
    model = scenario.net(planted)
    opt = scenario.optimizer(planted)
    opt.build(model.trainable_variables)
    x, y = scenario.data(planted)
    x, y = tf.constant(x), tf.constant(y)
    audit = run_phases(scenario, planted, model, opt, lambda body: compile_step(body, mode), (x, y))
    return audit, opt


def run_fit(scenario, planted, fit_kwargs):
    model = scenario.fit_model(planted)
    model.compile(optimizer=scenario.optimizer(planted), loss="mse", **fit_kwargs)
    model.optimizer.build(model.trainable_variables)
    x, y = scenario.data(planted)
    with auditor.watch(model, summary=False) as audit:
        model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                  callbacks=scenario.fit_callbacks(planted))
    return audit, model.optimizer


@pytest.mark.parametrize("mode", CUSTOM_MODES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_custom_loop_planted_fires(scenario, mode):
    audit, opt = run_custom(scenario, True, mode)
    assert scenario.code in codes(audit), audit.summary()
    finding = next(f for f in audit.findings if f.code == scenario.code)
    assert finding.name == auditor.findings.RUNTIME_BY_CODE[scenario.code].name


@pytest.mark.parametrize("mode", CUSTOM_MODES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_custom_loop_clean_twin_is_silent(scenario, mode):
    audit, opt = run_custom(scenario, False, mode)
    assert codes(audit) == [], audit.summary()
    assert len(audit.steps) == int(opt.iterations.numpy()) == STEPS


@pytest.mark.parametrize("fit_kwargs", FIT_MODES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_fit_planted_fires(scenario, fit_kwargs):
    audit, opt = run_fit(scenario, True, fit_kwargs)
    assert scenario.code in codes(audit), audit.summary()


@pytest.mark.parametrize("fit_kwargs", FIT_MODES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_fit_clean_twin_is_silent(scenario, fit_kwargs):
    audit, opt = run_fit(scenario, False, fit_kwargs)
    assert codes(audit) == [], audit.summary()
    assert len(audit.steps) == int(opt.iterations.numpy()) == STEPS


def test_planted_findings_name_the_variables_and_static_twins():
    audit, _ = run_custom(NoneGradient(), True, "function")
    (finding,) = [f for f in audit.findings if f.code == "GRD101"]
    assert [v.split("/", 1)[1] for v in finding.variables] == ["b/bias", "b/kernel"]
    assert "GRD001" in finding.message and "GRD010" in finding.message
    assert finding.step == 0
    audit, _ = run_custom(MultipleApplies(), True, "eager")
    (finding,) = [f for f in audit.findings if f.code == "GRD103"]
    assert "GRD002" in finding.message and "6 times per training step" in finding.message


def test_not_updated_is_not_also_reported_as_vanishing():
    audit, _ = run_custom(NotUpdated(), True, "function")
    assert "GRD106" not in codes(audit)
    (finding,) = [f for f in audit.findings if f.code == "GRD102"]
    assert [v.split("/", 1)[1] for v in finding.variables] == ["b/bias", "b/kernel"]
