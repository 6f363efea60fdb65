"""Broken runs that used to pass in silence: one optimizer applied twice in a step without
``mark_step()`` (two apply lines in one traced call, or the very same gradients applied again),
and a ``tf.function`` traced before the watch (calls seen, no apply recorded). Each with its clean
twin, on the engines where it differs."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import auditor
from audit_helpers import CUSTOM_MODES, compile_step, data


def _gan():
    keras.utils.set_random_seed(0)
    generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4)], name="generator")
    critic = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="critic")
    z = tf.constant(np.random.RandomState(0).randn(8, 2).astype("float32"))
    return generator, critic, z


@pytest.mark.parametrize("mode", CUSTOM_MODES)
@pytest.mark.parametrize("planted", [True, False], ids=["planted", "clean"])
def test_generator_optimizer_applied_twice_in_one_step(mode, planted):
    """The GAN step of the report: G's optimizer applied twice (two lines), D's once."""
    generator, critic, z = _gan()
    g_opt, d_opt = keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3)

    def step():
        with tf.GradientTape(persistent=True) as tape:
            score = tf.reduce_mean(critic(generator(z)))
            fooled = -score
        d_vars, g_vars = critic.trainable_variables, generator.trainable_variables
        d_opt.apply_gradients(zip(tape.gradient(score, d_vars), d_vars))
        g_grads = tape.gradient(fooled, g_vars)
        g_opt.apply_gradients(zip(g_grads, g_vars))
        if planted:
            g_grads = tape.gradient(fooled, g_vars) if mode != "eager" else g_grads
            g_opt.apply_gradients(zip(g_grads, g_vars))  # BUG: a second generator update

    fn = compile_step(step, mode)
    with auditor.watch(summary=False) as audit:
        for _ in range(4):
            fn()
    if not planted:
        assert audit.findings == [], audit.summary()
        return
    (finding,) = audit.findings
    assert finding.code == "GRD103" and "generator/Adam" in finding.message, audit.summary()
    assert "2 times in one step" in finding.message
    lines = sorted(int(site.rsplit(":", 1)[1]) for site in finding.sites)
    if mode == "eager":  # the very same gradients applied twice (from the same two lines)
        assert len(lines) == 2
    else:  # two apply lines in one traced call
        assert len(lines) == 2 and lines[0] != lines[1]
    assert all(site.rsplit(":", 1)[0].endswith("test_audit_silent_cases.py") for site in finding.sites)


def test_sonnet_optimizer_applied_twice_in_one_function_call():
    snt = pytest.importorskip("sonnet")
    model, opt = snt.Linear(1, name="lin"), snt.optimizers.SGD(0.01)
    x, y = (tf.constant(a) for a in data())

    def grads():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def twice():
        opt.apply(grads(), model.trainable_variables)
        opt.apply(grads(), model.trainable_variables)

    @tf.function
    def once():
        opt.apply(grads(), model.trainable_variables)

    with auditor.watch(summary=False) as planted:
        for _ in range(3):
            twice()
    assert [f.code for f in planted.findings] == ["GRD103"]
    with auditor.watch(summary=False) as clean:
        for _ in range(3):
            once()
    assert clean.findings == []


@pytest.mark.parametrize("planted", [True, False], ids=["traced-before", "traced-inside"])
def test_function_traced_before_the_watch_is_reported(planted):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(0.01)
    x, y = (tf.constant(a) for a in data())

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    if planted:
        step()  # warm-up call: traced outside any watch
    with auditor.watch(summary=False) as audit:
        for _ in range(5):
            step()
    if planted:
        assert audit.steps == [] and len(audit.notes) == 1
        assert "5 tf.function call(s)" in audit.notes[0] and "traced before the watch" in audit.notes[0]
        assert "note: 5 tf.function call(s)" in audit.summary()
    else:
        assert len(audit.steps) == 5 and audit.notes == []
