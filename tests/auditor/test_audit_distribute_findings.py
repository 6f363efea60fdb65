"""GRD101-GRD108 under MirroredStrategy (Keras 3, two logical CPUs): each planted bug fires in a
custom ``strategy.run`` loop and in ``model.fit`` under ``strategy.scope()``; each clean twin has no
finding at all (not even GRD109) and one record per optimizer step."""
import numpy as np
import pytest
import tensorflow as tf

import auditor
from audit_helpers import codes
from finding_scenarios import IDS, SCENARIOS, STEPS, run_phases


def run_custom(strategy, scenario, planted):
    with strategy.scope():
        model = scenario.net(planted)
        opt = scenario.optimizer(planted)
        opt.build(model.trainable_variables)
    x, y = scenario.data(planted)
    batch = next(iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x)))))
    def distributed(replica_step):
        return tf.function(lambda xb, yb: strategy.run(replica_step, args=(xb, yb)))

    audit = run_phases(scenario, planted, model, opt, distributed, batch)
    return audit, opt


def run_fit(strategy, scenario, planted):
    with strategy.scope():
        model = scenario.fit_model(planted)
        model.compile(optimizer=scenario.optimizer(planted), loss="mse")
        model.optimizer.build(model.trainable_variables)
    x, y = scenario.data(planted)
    with auditor.watch(model, summary=False) as audit:
        model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                  callbacks=scenario.fit_callbacks(planted))
    return audit, model.optimizer


RUNNERS = {"custom_loop": run_custom, "fit": run_fit}


@pytest.mark.parametrize("loop", sorted(RUNNERS))
@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_planted_fires(strategy, scenario, loop):
    audit, _ = RUNNERS[loop](strategy, scenario, True)
    assert scenario.code in codes(audit), audit.summary()
    assert {s.replicas_in_sync for s in audit.steps} == {2}


@pytest.mark.parametrize("loop", sorted(RUNNERS))
@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_clean_twin_is_silent(strategy, scenario, loop):
    audit, opt = RUNNERS[loop](strategy, scenario, False)
    assert codes(audit) == [], audit.summary()
    assert len(audit.steps) == int(opt.iterations.numpy()) == STEPS


def test_none_gradient_keeps_all_reduced_norms_aligned_with_variables(strategy):
    """Keras drops ``None`` gradients before its all-reduce: the reduced norms must still land on
    the right variables (regression: the row came out two values short and the trace failed)."""
    audit, opt = run_custom(strategy, SCENARIOS[0], True)
    assert SCENARIOS[0].code == "GRD101" and len(audit.steps) == int(opt.iterations.numpy()) == STEPS
    first = audit.steps[0]
    assert sorted(v.split("/", 1)[1] for v in first.none_vars) == ["b/bias", "b/kernel"]
    applied = {p: n for p, n in first.var_norms.items() if p not in first.none_vars}
    assert len(applied) == 4 and all(np.isfinite(n) and n > 0 for n in applied.values())
    # The all-reduced global norm is the root of the per-variable squares (the Nones left out).
    assert first.global_norm == pytest.approx(float(np.sqrt(sum(n * n for n in applied.values()))), rel=1e-5)
    assert first.global_norm <= sum(first.replica_norms) * (1 + 1e-5)
