"""tf_keras (legacy Keras 2) optimizers, both families: each runtime finding GRD102-GRD108 fires on
a planted bug and its clean twin stays silent, in eager and tf.function loops and in ``fit`` (GRD101
and the bitwise cases are in test_audit_tf_keras.py)."""
import pytest
import tensorflow as tf

import auditor
from audit_helpers import codes, data_tensors, per_variable_train_step

tf_keras = pytest.importorskip("tf_keras")

STEPS = 12
FAMILIES = {"v3": tf_keras.optimizers, "legacy": tf_keras.optimizers.legacy}


class Branchy(tf_keras.Model):
    """out(a(x)) + b_scale * b(x)."""

    def __init__(self, b_scale=1.0, b_init=None):
        super().__init__()
        self.a = tf_keras.layers.Dense(8, activation="relu", name="a")
        self.out = tf_keras.layers.Dense(1, name="out")
        init = tf_keras.initializers.Constant(b_init) if b_init is not None else "glorot_uniform"
        self.b = tf_keras.layers.Dense(1, kernel_initializer=init, bias_initializer="zeros", name="b")
        self.b_scale = b_scale

    def call(self, x):
        return self.out(self.a(x)) + self.b_scale * self.b(x)


class PerVariableBranchy(Branchy):
    """A custom ``train_step`` that applies each variable separately (the GRD103 bug)."""

    def train_step(self, data):
        return per_variable_train_step(self, data)


class FreezeA(tf_keras.callbacks.Callback):
    """After the first epoch: freeze layer a (the clean twin of GRD108: the Keras way to freeze);
    planted: after the second, unfreeze a and freeze b instead (the set switches sideways)."""

    def __init__(self, planted):
        super().__init__()
        self.planted = planted

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.model.a.trainable = False
        elif epoch == 1 and self.planted:
            self.model.a.trainable = True
            self.model.b.trainable = False
        self.model.make_train_function(force=True)


# code -> planted -> (model kwargs, optimizer name and kwargs, data kwargs, apply style)
SCENARIOS = {
    "GRD102": lambda p: ({"b_scale": 0.0 if p else 1.0}, ("SGD", {"learning_rate": 0.01}), {}, "all"),
    "GRD103": lambda p: ({}, ("SGD", {"learning_rate": 0.01}), {}, "per_variable" if p else "all"),
    "GRD104": lambda p: ({}, ("SGD", {"learning_rate": 0.01}), {"nan": p}, "all"),
    "GRD105": lambda p: ({}, ("SGD", {"learning_rate": 1e-9 if p else 0.01}), {"scale": 1e6 if p else 1.0}, "all"),
    "GRD106": lambda p: ({"b_scale": 1e-12, "b_init": 1e-12} if p else {}, ("SGD", {"learning_rate": 0.01}), {}, "all"),
    "GRD107": lambda p: ({}, ("Adam", {"learning_rate": 1e-3, "global_clipnorm": 1e-3 if p else 1e3}), {}, "all"),
    "GRD108": lambda p: ({}, ("SGD", {"learning_rate": 0.01}), {}, "switch" if p else "freeze_a"),
}


def _run(code, planted, family, mode):
    model_kw, (opt_name, opt_kw), data_kw, style = SCENARIOS[code](planted)
    tf_keras.utils.set_random_seed(0)
    model = Branchy(**model_kw)
    x, y = data_tensors(**data_kw)
    model(x[:1])
    opt = getattr(FAMILIES[family], opt_name)(**opt_kw)
    if hasattr(opt, "build") and style in ("per_variable", "switch"):
        opt.build(model.trainable_variables)  # tf_keras v3 optimizers refuse unknown variables

    def step(variables, per_variable):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        grads = tape.gradient(loss, variables)
        if per_variable:
            for g, v in zip(grads, variables):
                opt.apply_gradients([(g, v)])
        else:
            opt.apply_gradients(zip(grads, variables))

    everything = model.trainable_variables
    without_a = [v for v in everything if "/a/" not in v.name]
    without_b = [v for v in everything if "/b/" not in v.name]
    phases = {"freeze_a": [(everything, STEPS // 2), (without_a, STEPS // 2)],
              "switch": [(without_b, STEPS // 2), (without_a, STEPS // 2)]}.get(style, [(everything, STEPS)])
    fns = {}
    with auditor.watch(summary=False) as audit:
        for variables, n in phases:
            key = tuple(id(v) for v in variables)
            if key not in fns:
                def body(variables=variables):
                    step(variables, style == "per_variable")
                fns[key] = tf.function(body) if mode == "function" else body
            for _ in range(n):
                fns[key]()
    return audit, opt


@pytest.mark.parametrize("mode", ["eager", "function"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("code", sorted(SCENARIOS))
def test_planted_fires(code, family, mode):
    audit, _ = _run(code, True, family, mode)
    assert code in codes(audit), audit.summary()


@pytest.mark.parametrize("mode", ["eager", "function"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("code", sorted(SCENARIOS))
def test_clean_twin_is_silent(code, family, mode):
    audit, opt = _run(code, False, family, mode)
    assert codes(audit) == [], audit.summary()
    assert len(audit.steps) == int(opt.iterations.numpy()) == STEPS


def _fit(code, planted, family):
    """``model.fit``: 32 samples, batch 8, 3 epochs = 12 optimizer steps."""
    model_kw, (opt_name, opt_kw), data_kw, style = SCENARIOS[code](planted)
    tf_keras.utils.set_random_seed(0)
    model = (PerVariableBranchy if style == "per_variable" else Branchy)(**model_kw)
    x, y = data_tensors(**data_kw)
    model(x[:1])
    opt = getattr(FAMILIES[family], opt_name)(**opt_kw)
    if hasattr(opt, "build"):
        opt.build(model.trainable_variables)
    model.compile(optimizer=opt, loss="mse")
    callbacks = [FreezeA(style == "switch")] if code == "GRD108" else []
    with auditor.watch(model, summary=False) as audit:
        model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False, callbacks=callbacks)
    return audit, opt


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("code", sorted(SCENARIOS))
def test_fit_planted_fires(code, family):
    audit, _ = _fit(code, True, family)
    assert code in codes(audit), audit.summary()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("code", sorted(SCENARIOS))
def test_fit_clean_twin_is_silent(code, family):
    audit, opt = _fit(code, False, family)
    assert codes(audit) == [], audit.summary()
    assert len(audit.steps) == int(opt.iterations.numpy()) == STEPS
