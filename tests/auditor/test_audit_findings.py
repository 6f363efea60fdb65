"""Each finding GRD101-GRD108: a planted bug fires it, a clean twin stays silent (no finding at all).

Every scenario runs in an eager loop, a tf.function loop, a jit_compile=True loop, and model.fit
(steps_per_execution=1, and steps_per_execution=3 with XLA).
"""
import numpy as np
import pytest
import tensorflow as tf
import keras

import auditor
from audit_helpers import CUSTOM_MODES, FIT_MODES, Net, codes, compile_step, data, make_net, mse

STEPS = 12  # custom-loop steps; fit: 32 samples / batch 8 * 3 epochs = 12 steps


class Scenario:
    """A training setup with a planted bug (planted=True) and its clean twin."""

    code = None

    def net(self, planted):
        return make_net()

    def optimizer(self, planted):
        return keras.optimizers.SGD(0.01)

    def data(self, planted):
        return data()

    def phases(self, planted):
        """[(variant, steps)]: custom loops run one compiled step function per variant."""
        return [("main", STEPS)]

    def step(self, model, opt, x, y, planted, variant):
        with tf.GradientTape() as tape:
            loss = mse(model, x, y)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    def fit_model(self, planted):
        return self.net(planted)

    def fit_callbacks(self, planted):
        return []


class NoneGradient(Scenario):
    code = "GRD101"

    def net(self, planted):
        return make_net(use_b=not planted)  # planted: layer b is built but never used


class NotUpdated(Scenario):
    code = "GRD102"

    def net(self, planted):
        return make_net(b_scale=0.0 if planted else 1.0)  # planted: b's gradients are exactly 0


class MultipleApplies(Scenario):
    code = "GRD103"

    def optimizer(self, planted):
        opt = keras.optimizers.SGD(0.01)
        return opt

    def step(self, model, opt, x, y, planted, variant):
        with tf.GradientTape() as tape:
            loss = mse(model, x, y)
        grads = tape.gradient(loss, model.trainable_variables)
        if planted:  # per-variable apply loop
            for g, v in zip(grads, model.trainable_variables):
                opt.apply_gradients([(g, v)])
        else:
            opt.apply_gradients(zip(grads, model.trainable_variables))

    def fit_model(self, planted):
        keras.utils.set_random_seed(0)
        model = PerVariableNet() if planted else Net()
        model.build((None, 4))
        return model


class PerVariableNet(Net):
    """A model whose custom train_step applies each variable separately (the GRD103 bug)."""

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self(x, training=True) - y))
        grads = tape.gradient(loss, self.trainable_variables)
        for g, v in zip(grads, self.trainable_variables):
            self.optimizer.apply_gradients([(g, v)])
        return {"loss": loss}


class NonFinite(Scenario):
    code = "GRD104"

    def data(self, planted):
        x, y = data()
        if planted:
            x = x.copy()
            x[3, 1] = np.nan
        return x, y


class Exploding(Scenario):
    code = "GRD105"

    def optimizer(self, planted):
        return keras.optimizers.SGD(1e-9 if planted else 0.01)

    def data(self, planted):
        x, y = data()
        return x, (y * 1e6 if planted else y)


class Vanishing(Scenario):
    code = "GRD106"

    def net(self, planted):
        # planted: branch b is scaled by 1e-12 (its weights start tiny, so updates still show)
        return make_net(b_scale=1e-12, b_init=1e-12) if planted else make_net()


class ClipSaturated(Scenario):
    code = "GRD107"

    def optimizer(self, planted):
        return keras.optimizers.Adam(1e-3, global_clipnorm=1e-3 if planted else 1e3)


class VariableSetChanged(Scenario):
    code = "GRD108"

    def phases(self, planted):
        return [("all", STEPS // 2), ("subset" if planted else "all", STEPS // 2)]

    def step(self, model, opt, x, y, planted, variant):
        variables = model.trainable_variables
        if variant == "subset":  # planted: freeze layer a halfway, same optimizer
            variables = [v for v in variables if not v.path.startswith(model.a.path)]
        with tf.GradientTape() as tape:
            loss = mse(model, x, y)
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))

    def fit_callbacks(self, planted):
        class Freeze(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    if planted:
                        self.model.a.trainable = False
                    self.model.make_train_function(force=True)

        return [Freeze()]


SCENARIOS = [NoneGradient(), NotUpdated(), MultipleApplies(), NonFinite(), Exploding(), Vanishing(),
             ClipSaturated(), VariableSetChanged()]
IDS = [s.code for s in SCENARIOS]


def run_custom(scenario, planted, mode):
    model = scenario.net(planted)
    opt = scenario.optimizer(planted)
    opt.build(model.trainable_variables)
    x, y = scenario.data(planted)
    x, y = tf.constant(x), tf.constant(y)
    fns = {}
    with auditor.watch(summary=False) as audit:
        for variant, n in scenario.phases(planted):
            if variant not in fns:
                def body(x, y, variant=variant):
                    scenario.step(model, opt, x, y, planted, variant)
                fns[variant] = compile_step(body, mode)
            for _ in range(n):
                fns[variant](x, y)
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
