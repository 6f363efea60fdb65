"""Planted bugs for GRD101-GRD108 and their clean twins, shared by the engine-specific finding tests."""
import numpy as np
import tensorflow as tf
import keras

import auditor
from audit_helpers import Net, data, make_net, mse, per_variable_train_step

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
        return per_variable_train_step(self, data)


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
    """Planted: one optimizer switches from layers a+out to b+out halfway (not a freeze: neither
    set holds the other). Clean twin: layer a frozen halfway with the same optimizer, the Keras way
    (a subset of the variables, one phase after the other), which must stay silent."""

    code = "GRD108"

    def phases(self, planted):
        if planted:
            return [("without_b", STEPS // 2), ("without_a", STEPS // 2)]
        return [("all", STEPS // 2), ("without_a", STEPS // 2)]

    def step(self, model, opt, x, y, planted, variant):
        variables = model.trainable_variables
        if variant != "all":
            dropped = model.a.path if variant == "without_a" else model.b.path
            variables = [v for v in variables if not v.path.startswith(dropped + "/")]
        with tf.GradientTape() as tape:
            loss = mse(model, x, y)
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))

    def fit_callbacks(self, planted):
        class Freeze(keras.callbacks.Callback):
            """Clean: freeze a after the first epoch. Planted: then, after the second, unfreeze a and
            freeze b instead (the set switches sideways)."""

            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    self.model.a.trainable = False
                elif epoch == 1 and planted:
                    self.model.a.trainable = True
                    self.model.b.trainable = False
                self.model.make_train_function(force=True)

        return [Freeze()]


SCENARIOS = [NoneGradient(), NotUpdated(), MultipleApplies(), NonFinite(), Exploding(), Vanishing(),
             ClipSaturated(), VariableSetChanged()]
IDS = [s.code for s in SCENARIOS]


def run_phases(scenario, planted, model, opt, compile_body, args, **watch_kwargs):
    """Run the scenario's phases under a watch (of ``watch_kwargs``): ``compile_body(body)``
    makes one variant's step callable from ``body(x, y)``; every step is called with ``args``."""
    fns = {}
    with auditor.watch(summary=False, **watch_kwargs) as audit:
        for variant, n in scenario.phases(planted):
            if variant not in fns:
                def body(x, y, variant=variant):
                    scenario.step(model, opt, x, y, planted, variant)

                fns[variant] = compile_body(body)
            for _ in range(n):
                fns[variant](*args)
    return audit
