"""The auditor never changes training, records every step, and handles Keras' special paths."""
import numpy as np
import pytest
import tensorflow as tf
import keras

import auditor
from auditor import testing
from audit_helpers import CUSTOM_MODES, FIT_MODES, codes, compile_step, data, make_net, standard_step


def _weights(model):
    return [v.numpy() for v in model.weights]


def _train_custom(mode, watched, check_changes="every", steps=6):
    model = make_net(seed=1)
    opt = keras.optimizers.Adam(0.01, global_clipnorm=0.5)
    x, y = (tf.constant(a) for a in data())
    step = compile_step(lambda: standard_step(model, opt, x, y), mode)
    if watched:
        with auditor.watch(summary=False, check_changes=check_changes) as audit:
            for _ in range(steps):
                step()
        assert len(audit.steps) == steps
    else:
        for _ in range(steps):
            step()
    return _weights(model) + [v.numpy() for v in opt.variables]


def _train_fit(fit_kwargs, watched):
    model = make_net(seed=1)
    model.compile(keras.optimizers.Adam(0.01), "mse", **fit_kwargs)
    x, y = data()
    if watched:
        with auditor.watch(model, summary=False, check_changes="every") as audit:
            model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        assert len(audit.steps) == 8
    else:
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    return _weights(model) + [v.numpy() for v in model.optimizer.variables]


def _bitwise_equal(a, b):
    return len(a) == len(b) and all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b))


@pytest.mark.parametrize("mode", CUSTOM_MODES)
def test_weights_bitwise_identical_custom_loop(mode):
    plain = _train_custom(mode, watched=False)
    watched = _train_custom(mode, watched=True)
    assert _bitwise_equal(plain, watched)
    assert not _bitwise_equal(plain, _train_custom(mode, watched=False, steps=5))  # the check can fail


@pytest.mark.parametrize("fit_kwargs", FIT_MODES)
def test_weights_bitwise_identical_fit(fit_kwargs):
    assert _bitwise_equal(_train_fit(fit_kwargs, False), _train_fit(fit_kwargs, True))


@pytest.mark.parametrize("mode", CUSTOM_MODES)
def test_step_count_equals_optimizer_iterations(mode):
    model = make_net()
    opt = keras.optimizers.SGD(0.01)
    x, y = (tf.constant(a) for a in data())
    step = compile_step(lambda: standard_step(model, opt, x, y), mode)
    standard_step(model, opt, x, y)  # a step before the watch is not recorded
    with auditor.watch(summary=False) as audit:
        for _ in range(9):
            step()
    assert [r.step for r in audit.steps] == list(range(1, 10))
    assert int(opt.iterations.numpy()) == 10


def test_many_steps_in_one_call_are_all_drained():
    """A tf.while_loop of 700 steps in one call: more rows than fit between two host drains."""
    model = make_net()
    opt = keras.optimizers.SGD(0.001)
    x, y = (tf.constant(a) for a in data())

    @tf.function
    def loop(n):
        for _ in tf.range(n):
            standard_step(model, opt, x, y)

    with auditor.watch(summary=False) as audit:
        loop(tf.constant(10))
        loop(tf.constant(10))
        for _ in range(3):
            loop(tf.constant(40))
    assert len(audit.steps) + audit.lost_records == 140 == int(opt.iterations.numpy())
    assert audit.lost_records == 0


@pytest.mark.parametrize("fit_kwargs", FIT_MODES)
def test_fit_traced_before_watch_model_is_retraced(fit_kwargs):
    model = make_net()
    model.compile(keras.optimizers.SGD(0.01), "mse", **fit_kwargs)
    x, y = data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    with auditor.watch(summary=False) as blind:  # no model: the old trace has no hook (documented)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert blind.steps == []
    with auditor.watch(model, summary=False) as audit:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert [r.step for r in audit.steps] == [8, 9, 10, 11]
    assert model.train_function is None  # reset again at exit: no inert ops left in fit


@pytest.mark.parametrize("mode", ["function", "xla"])
def test_loss_scale_optimizer_custom_loop(mode):
    model = make_net()
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01), initial_scale=2.0 ** 10)
    x, y = (tf.constant(a) for a in data())

    def body():
        with tf.GradientTape() as tape:
            loss = opt.scale_loss(tf.reduce_mean(tf.square(model(x) - y)))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    step = compile_step(body, mode)
    with auditor.watch(summary=False) as audit:
        for _ in range(5):
            step()
    assert len(audit.steps) == int(opt.iterations.numpy()) == 5
    assert codes(audit) == []
    # the inner optimizer sees unscaled gradients: the norm matches an unscaled computation
    reference = make_net()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(reference(x) - y))
    grads = tape.gradient(loss, reference.trainable_variables)
    expected = float(tf.linalg.global_norm(grads))
    assert audit.steps[0].global_norm == pytest.approx(expected, rel=1e-4)


def test_loss_scale_optimizer_fit_skips_overflow_steps():
    model = make_net()
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01), initial_scale=1e38)
    model.compile(opt, "mse")
    x, y = data()
    with auditor.watch(model, summary=False) as audit:
        model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    # the first steps overflow (scale 1e38): LossScaleOptimizer skips them, the inner apply never runs
    assert 0 < len(audit.steps) == int(opt.iterations.numpy()) < 12
    assert "GRD104" not in codes(audit)


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_gradient_accumulation(mode):
    model = make_net()
    opt = keras.optimizers.Adam(0.01, gradient_accumulation_steps=3)
    x, y = (tf.constant(a) for a in data())
    step = compile_step(lambda: standard_step(model, opt, x, y), mode)
    with auditor.watch(summary=False) as audit:
        for _ in range(9):
            step()
    # one record per apply call; Keras' `iterations` counts accumulated steps (9 // 3)
    assert len(audit.steps) == int(opt._iterations.numpy()) == 9
    assert int(opt.iterations.numpy()) == 3
    changed = [bool(r.changed_vars) for r in audit.steps]
    assert changed == [False, False, True] * 3  # variables move on update steps only
    assert codes(audit) == []


def test_gradient_accumulation_fit():
    model = make_net()
    model.compile(keras.optimizers.SGD(0.01, gradient_accumulation_steps=2), "mse")
    x, y = data()
    with auditor.watch(model, summary=False) as audit:
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert len(audit.steps) == 8
    assert codes(audit) == []


def test_ring_overflow_inside_one_call_is_counted_not_hidden():
    model = make_net()
    opt = keras.optimizers.SGD(1e-4)
    x, y = (tf.constant(a) for a in data())

    @tf.function
    def loop(n):
        for _ in tf.range(n):
            standard_step(model, opt, x, y)

    with auditor.watch(summary=False) as audit:
        loop(tf.constant(1100))  # one call, more steps than the ring holds
    capacity = testing.probes(audit)[0].capacity
    assert capacity < 1100
    assert audit.lost_records == 1100 - capacity
    assert len(audit.steps) == capacity
    assert [r.step for r in audit.steps] == list(range(1100 - capacity, 1100))
    assert "lost" in audit.summary()


@pytest.mark.parametrize("fit_kwargs", FIT_MODES)
def test_raise_on_in_fit(fit_kwargs):
    model = make_net()
    model.compile(keras.optimizers.SGD(0.01), "mse", **fit_kwargs)
    x, y = data()
    x[5, 2] = np.nan  # in the first batch of 8
    with pytest.raises(auditor.AuditError, match="GRD104"):
        with auditor.watch(model, summary=False, raise_on=("GRD104",)):
            model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
    # raised after the first train_function call: one step, or steps_per_execution steps
    assert int(model.optimizer.iterations.numpy()) == fit_kwargs["steps_per_execution"]
