"""Each finding GRD101-GRD108: a planted bug fires it, a clean twin stays silent (no finding at all).

Every scenario runs in an eager loop, a tf.function loop, a jit_compile=True loop, and model.fit
(steps_per_execution=1, and steps_per_execution=3 with XLA).
"""
import pytest
import tensorflow as tf

import auditor
import keras

from audit_helpers import CUSTOM_MODES, FIT_MODES, codes, compile_step, data, make_net
from finding_scenarios import IDS, SCENARIOS, STEPS, run_phases, MultipleApplies, NoneGradient, NotUpdated


def _is_line_of(site, filename, text):
    """``site`` ("path:line") is a line of ``filename`` that contains ``text``."""
    import linecache
    import os

    path, line = site.rsplit(":", 1)
    return os.path.basename(path) == filename and text in linecache.getline(os.path.abspath(path), int(line))


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
    # where the user's code applied: the scenario's apply line(s), as file:line
    assert finding.sites and all(_is_line_of(site, "finding_scenarios.py", "apply_gradients") for site in finding.sites)
    assert ", ".join(finding.sites) in audit.summary()


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
    finding = next(f for f in audit.findings if f.code == scenario.code)
    # fit's built-in train_step: the user's model.fit line; a custom train_step: its apply line
    assert finding.sites and all(_is_line_of(site, "test_audit_findings.py", "model.fit(") or
                                 _is_line_of(site, "audit_helpers.py", "apply_gradients") for site in finding.sites)


@pytest.mark.parametrize("fit_kwargs", FIT_MODES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_fit_clean_twin_is_silent(scenario, fit_kwargs):
    audit, opt = run_fit(scenario, False, fit_kwargs)
    assert codes(audit) == [], audit.summary()
    assert len(audit.steps) == int(opt.iterations.numpy()) == STEPS


RAISED_WHILE_RUNNING = [s for s in SCENARIOS if s.code in ("GRD103", "GRD104", "GRD105", "GRD108")]


@pytest.mark.parametrize("scenario", RAISED_WHILE_RUNNING, ids=[s.code for s in RAISED_WHILE_RUNNING])
@pytest.mark.parametrize("planted", [True, False], ids=["planted", "clean"])
def test_raise_on_stops_the_planted_run_while_it_goes_and_lets_the_clean_twin_finish(scenario, planted):
    """``raise_on`` with a code decidable as records arrive: the planted bug's ``AuditError``
    comes from a step call (the run does not reach its end); the clean twin runs to the end."""
    model, opt = scenario.net(planted), scenario.optimizer(planted)
    opt.build(model.trainable_variables)
    x, y = (tf.constant(a) for a in scenario.data(planted))
    calls = []

    def compile_body(body):
        step = tf.function(body)

        def call(x, y):
            step(x, y)
            calls.append(1)
        return call

    total = sum(n for _, n in scenario.phases(planted))
    if not planted:
        run_phases(scenario, planted, model, opt, compile_body, (x, y), raise_on=scenario.code)
        assert len(calls) == total
        return
    with pytest.raises(auditor.AuditError) as raised:
        run_phases(scenario, planted, model, opt, compile_body, (x, y), raise_on=scenario.code)
    assert raised.value.finding.code == scenario.code
    assert len(calls) < total


def test_raise_on_counts_every_step_of_a_run_longer_than_history():
    """A NaN after the ``history`` window has turned over several times: the error comes from
    the step that had it, and its counts cover the whole run."""
    model = make_net()
    opt = keras.optimizers.SGD(1e-3)
    x, y = (tf.constant(a) for a in data())
    scale = tf.Variable(1.0)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y)) * scale
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    with pytest.raises(auditor.AuditError) as raised:
        with auditor.watch(summary=False, raise_on="GRD104", history=16):
            for k in range(200):
                if k == 150:
                    scale.assign(float("nan"))
                step()
    finding = raised.value.finding
    assert finding.step == 150 and int(opt.iterations.numpy()) == 151
    assert "on 1 step(s) of 151" in finding.message


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
    # b is scaled by 0: every gradient is exactly 0, by construction; no static twin is blamed
    assert "exactly 0 on every recorded step" in finding.message and "GRD012" not in finding.message


def test_fit_freeze_by_compiling_again_with_the_same_optimizer_is_silent():
    """Keras' documented way to freeze: fit, ``layer.trainable = False``, compile again with the
    same optimizer object, fit again. The second phase applies a subset of the first: no GRD108."""
    model = make_net()
    opt = keras.optimizers.Adam(1e-3)
    model.compile(optimizer=opt, loss="mse")
    x, y = data()
    with auditor.watch(model, summary=False) as audit:
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        model.a.trainable = False
        model.compile(optimizer=opt, loss="mse")
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert len({r.var_set for r in audit.steps}) == 2  # the set did change
    assert audit.findings == [], audit.summary()
