"""tf_keras (legacy Keras 2) optimizers under tf.distribute.MirroredStrategy on two logical CPU
devices, for both the 2.11+ optimizer and ``tf_keras.optimizers.legacy`` (OptimizerV2): one
record per optimizer step, the all-reduced norm (checked against numpy), each replica's own
norm, and no GRD109: tf_keras sums the replicas' gradients before it clips them.
``strategy`` is conftest's session-wide MirroredStrategy."""
import numpy as np
import pytest
import tensorflow as tf

import auditor

tf_keras = pytest.importorskip("tf_keras")

GLOBAL_BATCH = 16
LR = 0.05
OPTIMIZERS = {
    "v3": lambda **kw: tf_keras.optimizers.SGD(LR, **kw),
    "legacy": lambda **kw: tf_keras.optimizers.legacy.SGD(LR, **kw),
}
ADAM = {
    "v3": lambda **kw: tf_keras.optimizers.Adam(0.01, **kw),
    "legacy": lambda **kw: tf_keras.optimizers.legacy.Adam(0.01, **kw),
}


def _data():
    rng = np.random.RandomState(0)
    x = rng.randn(64, 4).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")).astype("float32")
    return x, y


class Linear2(tf_keras.Model):
    """Dense(3) -> Dense(1), no activation (gradients computable in numpy); with ``aux`` an
    extra layer whose output is dropped (None gradients)."""

    def __init__(self, aux=False):
        super().__init__()
        self.h = tf_keras.layers.Dense(3, name="h")
        self.o = tf_keras.layers.Dense(1, name="o")
        self.aux = tf_keras.layers.Dense(1, name="aux") if aux else None

    def call(self, x):
        if self.aux is not None:
            self.aux(x)
        return self.o(self.h(x))


def _model(strategy, make_opt, aux=False, **opt_kw):
    with strategy.scope():
        tf_keras.utils.set_random_seed(0)
        model = Linear2(aux)
        model(tf.zeros([1, 4]))
        opt = make_opt(**opt_kw)
    return model, opt


def _custom_loop(strategy, model, opt, epochs=2, x=None, y=None):
    if x is None:
        x, y = _data()
    ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH))

    @tf.function
    def step(xb, yb):
        def replica_step(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(model(xb) - yb)) / GLOBAL_BATCH
            variables = model.trainable_variables
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        strategy.run(replica_step, args=(xb, yb))

    for _ in range(epochs):
        for xb, yb in ds:
            step(xb, yb)


def _numpy_grads(weights, x, y):
    """Gradients of sum((x W1 + b1) W2 + b2 - y)^2 / GLOBAL_BATCH (the replica loss)."""
    w1, b1, w2, b2 = (np.asarray(w, np.float64) for w in weights)
    h = x @ w1 + b1
    d = 2.0 * (h @ w2 + b2 - y) / GLOBAL_BATCH
    dh = d @ w2.T
    return [x.T @ dh, dh.sum(0), h.T @ d, d.sum(0)]


def _norm(grads):
    return float(np.sqrt(sum(np.sum(np.square(g)) for g in grads)))


def _weights(model):
    return [w.numpy() for w in (model.h.kernel, model.h.bias, model.o.kernel, model.o.bias)]


def _short(path):
    """'linear2_3/h/kernel:0' -> 'h/kernel:0' (tf_keras uniquifies the model's name)."""
    return path.split("/", 1)[1]


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_custom_loop_records_all_reduced_and_replica_norms(strategy, kind):
    model, opt = _model(strategy, OPTIMIZERS[kind])
    x, y = _data()
    start = _weights(model)
    with auditor.watch(summary=False, check_changes="every") as audit:
        _custom_loop(strategy, model, opt, epochs=1)
    steps = audit.steps
    assert audit.findings == []
    assert len(steps) == int(opt.iterations.numpy()) == 4  # one record per step, not per replica
    assert [r.step for r in steps] == [0, 1, 2, 3]
    # first step, from the starting weights: the all-reduced gradient is the full batch's,
    # each replica's own gradient is its half batch's (MirroredStrategy splits in order)
    xb, yb = x[:GLOBAL_BATCH].astype(np.float64), y[:GLOBAL_BATCH].astype(np.float64)
    full = _numpy_grads(start, xb, yb)
    halves = [_numpy_grads(start, xb[:8], yb[:8]), _numpy_grads(start, xb[8:], yb[8:])]
    first = steps[0]
    assert first.global_norm == pytest.approx(_norm(full), rel=1e-4)
    assert first.applied_norm == pytest.approx(_norm(full), rel=1e-4)
    assert first.clip_ratio is None
    assert first.replica_norms == pytest.approx([_norm(h) for h in halves], rel=1e-4)
    by_var = {_short(p): n for p, n in first.var_norms.items()}
    for name, g in zip(["h/kernel:0", "h/bias:0", "o/kernel:0", "o/bias:0"], full):
        assert by_var[name] == pytest.approx(float(np.linalg.norm(g)), rel=1e-4)
    assert all(len(r.changed_vars) == 4 for r in steps)


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
@pytest.mark.parametrize("clip", ["global_clipnorm", "clipnorm"])
def test_clipping_after_the_all_reduce_is_not_grd109(strategy, kind, clip):
    bound = 0.01  # far below every gradient norm: every step clips
    model, opt = _model(strategy, OPTIMIZERS[kind], **{clip: bound})
    x, y = _data()
    start = _weights(model)
    with auditor.watch(summary=False) as audit:
        _custom_loop(strategy, model, opt)
    steps = audit.steps
    assert audit.findings == []  # tf_keras clips the summed gradient: the bound holds
    assert len(steps) == int(opt.iterations.numpy()) == 8
    assert [r.step for r in steps] == list(range(8))
    full = _numpy_grads(start, x[:GLOBAL_BATCH].astype(np.float64), y[:GLOBAL_BATCH].astype(np.float64))
    assert steps[0].global_norm == pytest.approx(_norm(full), rel=1e-4)  # before clipping
    for r in steps:
        assert len(r.replica_norms) == 2 and all(n > bound for n in r.replica_norms)
        assert r.clip_bound == bound and r.clip_kind == clip
        if clip == "global_clipnorm":
            assert r.clipped_norm == pytest.approx(bound, rel=1e-4)
        else:
            assert all(n == pytest.approx(bound, rel=1e-4) for n in r.var_norms.values())
            assert r.clipped_norm == pytest.approx(bound * 2, rel=1e-4)  # four variables
        assert r.clip_ratio == pytest.approx(r.clipped_norm / r.global_norm, rel=1e-6)
        assert r.clip_ratio < 0.01


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_planted_none_gradient_under_distribute(strategy, kind):
    model, opt = _model(strategy, OPTIMIZERS[kind], aux=True)
    with auditor.watch(summary=False) as audit:
        _custom_loop(strategy, model, opt, epochs=1)
    assert [f.code for f in audit.findings] == ["GRD101"]
    assert sorted(_short(p) for p in audit.findings[0].variables) == ["aux/bias:0", "aux/kernel:0"]
    assert len(audit.steps) == int(opt.iterations.numpy()) == 4
    assert all(sorted(_short(p) for p in r.none_vars) == ["aux/bias:0", "aux/kernel:0"] for r in audit.steps)


@pytest.mark.parametrize("kind", sorted(ADAM))
def test_weights_bitwise_identical_with_and_without_watch(strategy, kind):
    runs = []
    for watched in (False, True, False):
        model, opt = _model(strategy, ADAM[kind], global_clipnorm=0.5)
        if watched:
            with auditor.watch(summary=False, check_changes="every") as audit:
                _custom_loop(strategy, model, opt)
            assert len(audit.steps) == 8 and audit.findings == []
        else:
            _custom_loop(strategy, model, opt, epochs=2 if not runs else 1)
        opt_vars = opt.variables() if callable(opt.variables) else opt.variables
        runs.append([w.numpy() for w in model.weights] + [v.numpy() for v in opt_vars])
    plain, watched, shorter = runs
    assert len(plain) == len(watched)
    for a, b in zip(plain, watched):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert any(a.tobytes() != b.tobytes() for a, b in zip(plain, shorter))  # the comparison can fail


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_fit_under_strategy_scope(strategy, kind):
    model, opt = _model(strategy, OPTIMIZERS[kind], global_clipnorm=0.01)
    with strategy.scope():
        model.compile(optimizer=opt, loss="mse")
    x, y = _data()
    with auditor.watch(model, summary=False) as audit:
        model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=2, verbose=0, shuffle=False)
    assert audit.findings == []
    assert len(audit.steps) == int(opt.iterations.numpy()) == 8
    assert [r.step for r in audit.steps] == list(range(8))
    assert all(len(r.replica_norms) == 2 and r.clipped_norm == pytest.approx(0.01, rel=1e-4)
               for r in audit.steps)
