"""tf_keras (legacy Keras 2) optimizers: eager loops, tf.function and fit, for both the 2.11+
optimizer (``tf_keras.optimizers.*``) and ``tf_keras.optimizers.legacy.*`` (OptimizerV2)."""
import numpy as np
import pytest
import tensorflow as tf

import auditor
from audit_helpers import run_steps

tf_keras = pytest.importorskip("tf_keras")

OPTIMIZERS = {
    "v3": lambda **kw: tf_keras.optimizers.Adam(0.01, **kw),
    "legacy": lambda **kw: tf_keras.optimizers.legacy.Adam(0.01, **kw),
}


class TwoLayer(tf_keras.Model):
    """Dense(8) -> Dense(1); with ``aux`` an extra layer that never reaches the output."""

    def __init__(self, aux=False):
        super().__init__()
        self.a = tf_keras.layers.Dense(8, activation="relu", name="a")
        self.out = tf_keras.layers.Dense(1, name="out")
        self.aux = tf_keras.layers.Dense(1, name="aux") if aux else None

    def call(self, x):
        if self.aux is not None:
            self.aux(x)  # built and tracked, but its output is dropped: None gradients
        return self.out(self.a(x))


def _model(aux=False):
    tf_keras.utils.set_random_seed(3)
    model = TwoLayer(aux=aux)
    model(tf.zeros([1, 4]))
    return model


def _data():
    rng = np.random.RandomState(0)
    x = rng.randn(24, 4).astype("float32")
    return x, (x @ np.array([[1.0], [-2.0], [0.5], [0.0]], "float32")).astype("float32")


def _custom(kind, mode, watched, aux=False, steps=4, **opt_kw):
    model = _model(aux)
    opt = OPTIMIZERS[kind](**opt_kw)
    x, y = (tf.constant(a) for a in _data())

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        variables = model.trainable_variables
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))

    if mode == "function":
        step = tf.function(step)
    audit = run_steps(step, steps, watched)
    return audit, opt, [w.numpy() for w in model.weights] + [v.numpy() for v in opt.variables()]


def _short(path):
    """'two_layer_3/a/kernel:0' -> 'a/kernel:0' (tf_keras uniquifies the model's name)."""
    return path.split("/", 1)[1]


def _bitwise(a, b):
    return len(a) == len(b) and all(p.dtype == q.dtype and p.tobytes() == q.tobytes() for p, q in zip(a, b))


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
@pytest.mark.parametrize("mode", ["eager", "function"])
def test_custom_loop_planted_and_clean(kind, mode):
    planted, opt, _ = _custom(kind, mode, watched=True, aux=True)
    assert [f.code for f in planted.findings] == ["GRD101"]
    assert sorted(_short(p) for p in planted.findings[0].variables) == ["aux/bias:0", "aux/kernel:0"]
    assert all(len(r.none_vars) == 2 for r in planted.steps)

    clean, opt, _ = _custom(kind, mode, watched=True)
    assert clean.findings == []
    assert [r.step for r in clean.steps] == list(range(int(opt.iterations.numpy())))
    assert len(clean.steps) == 4
    assert all(r.global_norm > 0 and r.clip_ratio is None for r in clean.steps)
    assert all({_short(p) for p in r.changed_vars} == {"a/kernel:0", "a/bias:0", "out/kernel:0", "out/bias:0"}
               for r in clean.steps)


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
@pytest.mark.parametrize("mode", ["eager", "function"])
def test_custom_loop_weights_bitwise_identical(kind, mode):
    _, _, plain = _custom(kind, mode, watched=False)
    _, _, watched = _custom(kind, mode, watched=True)
    assert _bitwise(plain, watched)
    _, _, shorter = _custom(kind, mode, watched=False, steps=3)
    assert not _bitwise(plain, shorter)  # the comparison can fail


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_optimizer_clipping_ratio(kind):
    audit, _, _ = _custom(kind, "function", watched=True, global_clipnorm=0.01)
    ratios = [r.clip_ratio for r in audit.steps]
    assert len(ratios) == 4 and all(r is not None and 0 < r < 1 for r in ratios)
    for r in audit.steps:
        assert r.clipped_norm == pytest.approx(0.01, rel=1e-4)


def _fit(kind, watched, aux=False, **compile_kw):
    model = _model(aux)
    model.compile(OPTIMIZERS[kind](), "mse", **compile_kw)
    x, y = _data()
    audit = None
    if watched:
        with auditor.watch(model, summary=False, check_changes="every") as audit:
            model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    else:
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    return audit, model, [w.numpy() for w in model.weights]


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_fit_planted_clean_and_identical(kind):
    planted, _, _ = _fit(kind, True, aux=True)
    assert [f.code for f in planted.findings] == ["GRD101"]
    clean, model, weights = _fit(kind, True)
    assert clean.findings == []
    assert len(clean.steps) == 6 == int(model.optimizer.iterations.numpy())
    assert [r.step for r in clean.steps] == list(range(6))
    _, _, plain = _fit(kind, False)
    assert _bitwise(plain, weights)


def test_fit_steps_per_execution_and_xla():
    clean, model, weights = _fit("v3", True, steps_per_execution=3, jit_compile=True)
    assert clean.findings == []
    assert [r.step for r in clean.steps] == list(range(6)) and int(model.optimizer.iterations.numpy()) == 6
    _, _, plain = _fit("v3", False, steps_per_execution=3, jit_compile=True)
    assert _bitwise(plain, weights)
    planted, _, _ = _fit("v3", True, aux=True, steps_per_execution=3, jit_compile=True)
    assert [f.code for f in planted.findings] == ["GRD101"]


def test_patches_restored_and_hooked_only_inside():
    from tf_keras.src.optimizers import optimizer as v3
    from tf_keras.src.optimizers.legacy import optimizer_v2

    before = (v3.Optimizer.__dict__["apply_gradients"], optimizer_v2.OptimizerV2.__dict__["apply_gradients"])
    with auditor.watch(summary=False):
        inside = (v3.Optimizer.__dict__["apply_gradients"], optimizer_v2.OptimizerV2.__dict__["apply_gradients"])
        assert all(getattr(f, "__auditor_patch__", False) for f in inside)
    after = (v3.Optimizer.__dict__["apply_gradients"], optimizer_v2.OptimizerV2.__dict__["apply_gradients"])
    assert after == before and inside != before


def _lso_run(kind, mode, watched, aux=False, steps=3):
    """A custom loop with tf_keras' LossScaleOptimizer (dynamic loss scale, starts at 2**15)."""
    model = _model(aux)
    opt = tf_keras.mixed_precision.LossScaleOptimizer(OPTIMIZERS[kind]())
    x, y = (tf.constant(a) for a in _data())
    variables = model.trainable_variables
    with tf.GradientTape() as tape:  # the unscaled gradients of the first step, for reference
        loss = tf.reduce_mean(tf.square(model(x) - y))
    reference = [g for g in tape.gradient(loss, variables) if g is not None]

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
            scaled = opt.get_scaled_loss(loss)
        grads = opt.get_unscaled_gradients(tape.gradient(scaled, variables))
        opt.apply_gradients(zip(grads, variables))

    if mode == "function":
        step = tf.function(step)
    audit = run_steps(step, steps, watched)
    weights = [w.numpy() for w in model.weights] + [v.numpy() for v in opt.variables()]
    return audit, opt, reference, weights


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
@pytest.mark.parametrize("mode", ["eager", "function"])
def test_loss_scale_optimizer_unscaled_norms_planted_and_clean(kind, mode):
    clean, opt, reference, weights = _lso_run(kind, mode, watched=True)
    assert float(opt.loss_scale.numpy()) == 2.0 ** 15  # the loss really was scaled
    assert clean.findings == []
    assert len(clean.steps) == 3 == int(opt.iterations.numpy())
    assert [r.step for r in clean.steps] == [0, 1, 2]
    expected = float(np.sqrt(sum(np.sum(np.square(g.numpy().astype(np.float64))) for g in reference)))
    assert clean.steps[0].global_norm == pytest.approx(expected, rel=1e-4)  # unscaled
    assert all(r.global_norm < 1e3 and len(r.changed_vars) == 4 for r in clean.steps)
    _, _, _, plain = _lso_run(kind, mode, watched=False)
    assert _bitwise(plain, weights)

    planted, _, _, _ = _lso_run(kind, mode, watched=True, aux=True)
    assert [f.code for f in planted.findings] == ["GRD101"]
    assert sorted(_short(p) for p in planted.findings[0].variables) == ["aux/bias:0", "aux/kernel:0"]
