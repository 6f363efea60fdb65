"""tf.distribute.MirroredStrategy on two logical CPU devices: one record per optimizer step,
per-replica and all-reduced norms, GRD109 (clipping per replica) and clean twins."""
import numpy as np
import pytest
import tensorflow as tf
import keras

import auditor
from audit_helpers import codes

GLOBAL_BATCH = 16


def _data():
    rng = np.random.RandomState(0)
    x = rng.randn(64, 4).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")).astype("float32")
    return x, y


def _model(strategy, **opt_kwargs):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"), keras.layers.Dense(1, name="o")])
        opt = keras.optimizers.SGD(0.05, **opt_kwargs)
    return model, opt


def _custom_loop(strategy, model, opt, epochs=2):
    x, y = _data()
    ds = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH))

    @tf.function
    def step(xb, yb):
        def replica_step(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(model(xb) - yb)) / GLOBAL_BATCH
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        return strategy.run(replica_step, args=(xb, yb))

    for _ in range(epochs):
        for xb, yb in ds:
            step(xb, yb)


def test_custom_loop_planted_per_replica_clipping(strategy):
    model, opt = _model(strategy, global_clipnorm=0.01)
    with auditor.watch(summary=False) as audit:  # no model: replica threads count as this thread
        _custom_loop(strategy, model, opt)
    steps = audit.steps
    assert len(steps) == int(opt.iterations.numpy()) == 8  # one record per optimizer step
    assert [r.step for r in steps] == list(range(8))
    for r in steps:
        assert len(r.replica_norms) == 2
        assert all(n > 0.01 for n in r.replica_norms)
        assert r.clipped_norm > 0.0101  # each replica clipped to 0.01, then summed
        assert r.clip_bound == 0.01 and r.clip_kind == "global_clipnorm"
    grd109 = [f for f in audit.findings if f.code == "GRD109"]
    assert len(grd109) == 1
    assert "global_clipnorm=0.01" in grd109[0].message and "2 replicas" in grd109[0].message
    assert grd109[0].step == 0


def test_custom_loop_clean_twin_and_reduced_norm_is_applied(strategy):
    model, opt = _model(strategy)
    before = [v.numpy().copy() for v in model.trainable_variables]
    x, y = _data()
    with auditor.watch(summary=False) as audit:
        _custom_loop(strategy, model, opt, epochs=1)
        first = audit.steps[0]
    assert audit.findings == []
    assert len(audit.steps) == int(opt.iterations.numpy()) == 4
    assert all(r.changed_vars is not None and len(r.changed_vars) == 4 for r in audit.steps)
    # The all-reduced norm is what SGD applied on the first step: |w0 - w1| / lr.
    # Re-run one step by hand to get w1.
    model2, opt2 = _model(strategy)
    _custom_loop_one(strategy, model2, opt2, x[:GLOBAL_BATCH], y[:GLOBAL_BATCH])
    delta = np.sqrt(sum(np.sum((b - v.numpy()) ** 2) for b, v in zip(before, model2.trainable_variables)))
    assert first.global_norm == pytest.approx(delta / 0.05, rel=1e-3)
    assert first.clip_ratio is None
    # the sum of the replicas' gradients is no larger than the sum of their norms
    assert first.global_norm <= sum(first.replica_norms) * (1 + 1e-5)


def _step_function(strategy, model, opt):
    """One training step on a distributed batch: ``strategy.run`` in a ``tf.function``."""
    @tf.function
    def step(xb, yb):
        def replica_step(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(model(xb) - yb)) / GLOBAL_BATCH
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
        strategy.run(replica_step, args=(xb, yb))

    return step


def _custom_loop_one(strategy, model, opt, x, y):
    ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH))
    step = _step_function(strategy, model, opt)
    for xb, yb in ds:
        step(xb, yb)


def test_clean_twin_with_a_bound_that_holds(strategy):
    model, opt = _model(strategy, global_clipnorm=1e6)
    with auditor.watch(summary=False) as audit:
        _custom_loop(strategy, model, opt)
    assert audit.findings == []
    assert all(r.clip_ratio == pytest.approx(1.0, rel=1e-4) for r in audit.steps)


def test_weights_bitwise_identical_with_and_without_watch(strategy):
    runs = []
    for watched in (False, True):
        model, opt = _model(strategy, global_clipnorm=0.5)
        if watched:
            with auditor.watch(summary=False) as audit:
                _custom_loop(strategy, model, opt)
            assert len(audit.steps) == 8
        else:
            _custom_loop(strategy, model, opt)
        runs.append([v.numpy() for v in model.trainable_variables] + [v.numpy() for v in opt.variables])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("clip", [None, 0.5])
def test_fit_weights_bitwise_identical_with_and_without_watch(strategy, clip):
    kwargs = {} if clip is None else {"global_clipnorm": clip}
    x, y = _data()
    runs = []
    for watched in (False, True):
        model, opt = _model(strategy, **kwargs)
        with strategy.scope():
            model.compile(optimizer=opt, loss="mse")
        if watched:
            with auditor.watch(model, summary=False) as audit:
                model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=2, verbose=0, shuffle=False)
            assert len(audit.steps) == 8
        else:
            model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=2, verbose=0, shuffle=False)
        runs.append([v.numpy() for v in model.trainable_variables] + [v.numpy() for v in opt.variables])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("clip", [None, 0.01])
def test_fit_under_strategy_scope(strategy, clip):
    kwargs = {} if clip is None else {"global_clipnorm": clip}
    model, opt = _model(strategy, **kwargs)
    with strategy.scope():
        model.compile(optimizer=opt, loss="mse")
    x, y = _data()
    with auditor.watch(model, summary=False) as audit:
        model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=2, verbose=0)
    assert len(audit.steps) == int(opt.iterations.numpy()) == 8
    assert all(len(r.replica_norms) == 2 for r in audit.steps)
    if clip is None:
        assert audit.findings == []
    else:
        assert codes(audit) == ["GRD109"]


def test_hook_ops_outside_the_recording_cond_do_not_touch_the_gradients(strategy):
    """A strategy.run function traced inside a watch keeps the hook's ops after exit: every op that
    reads the gradients (norms of the per-replica and all-reduced gradients) must sit inside the
    probe's conditional ops (``Case``), so the function is inert once the watch is gone."""
    model, opt = _model(strategy)
    x, y = _data()
    ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH))
    xb, yb = next(iter(ds))
    step = _step_function(strategy, model, opt)
    with auditor.watch(summary=False) as audit:
        step(xb, yb)
    assert len(audit.steps) == 1
    top_level = [op.type for op in step.get_concrete_function(xb, yb).graph.get_operations()]
    assert "L2Loss" not in top_level and "Sqrt" not in top_level
    assert any(t in ("Case", "StatelessCase") for t in top_level)  # the hook's ops are there, in conds
