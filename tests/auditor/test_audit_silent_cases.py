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
        # the two optimizers are labelled by what they train, and the table says which is which
        assert {r.optimizer for r in audit.steps} == {"generator/Adam", "critic/Adam"}
        table = audit.variables
        assert len(table) == 4 and all(s["optimizer"] == p.split("/")[0] + "/Adam" for p, s in table.items())
        assert audit.summary().splitlines()[1].split()[:2] == ["variable", "optimizer"]
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


@pytest.mark.parametrize("mode", CUSTOM_MODES)
@pytest.mark.parametrize("planted", [True, False], ids=["planted", "clean"])
def test_clip_by_value_is_seen(mode, planted):
    """Your own ``tf.clip_by_value`` to +-1e-3 (planted) clips every step: GRD107, and
    ``global_norm`` is the norm before the clip (numpy on the raw gradients); +-1e3 (clean) is silent."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(0.01)
    x, y = (tf.constant(a) for a in data())
    bound = 1e-3 if planted else 1e3
    raw = []

    def body():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        clipped = [tf.clip_by_value(g, -bound, bound) for g in grads]
        opt.apply_gradients(zip(clipped, model.trainable_variables))
        return grads

    fn = compile_step(body, mode)
    with auditor.watch(summary=False) as audit:
        for _ in range(12):
            raw.append([g.numpy() for g in fn()])
    norms = [float(np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in step))) for step in raw]
    assert [r.global_norm for r in audit.steps] == pytest.approx(norms, rel=1e-4)
    if planted:
        assert [f.code for f in audit.findings] == ["GRD107"], audit.summary()
        assert all(r.clip_ratio < 0.01 for r in audit.steps)
    else:
        assert audit.findings == [] and all(r.clip_ratio == pytest.approx(1.0) for r in audit.steps)


@pytest.mark.parametrize("planted", [True, False], ids=["planted", "clean"])
def test_keras_clipvalue_saturated(planted):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01, clipvalue=1e-3 if planted else 1e3), "mse")
    x, y = data()
    with auditor.watch(model, summary=False) as audit:
        model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    assert [f.code for f in audit.findings] == (["GRD107"] if planted else []), audit.summary()


@pytest.mark.parametrize("planted", [True, False], ids=["planted", "clean"])
def test_unfreeze_without_recompile(planted):
    """Keras 3: ``base.trainable = True`` after ``compile`` and ``fit`` again: Keras keeps training
    the head only. With ``watch(model)`` the base's variables that no optimizer was given are
    GRD102 (planted); compiling again after unfreezing (clean) trains them: silent."""
    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu")], name="base")
    model = keras.Sequential([base, keras.layers.Dense(1, name="head")], name="model")
    base.trainable = False
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    x, y = data()
    with auditor.watch(model, summary=False) as audit:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        base.trainable = True
        if not planted:
            model.compile(keras.optimizers.Adam(1e-4), "mse")
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    if planted:
        (finding,) = audit.findings
        assert finding.code == "GRD102" and "never passed to an optimizer" in finding.message
        assert finding.variables == sorted(v.path for v in base.trainable_variables)
    else:
        assert audit.findings == [], audit.summary()


@pytest.mark.parametrize("mode", CUSTOM_MODES)
@pytest.mark.parametrize("planted", [True, False], ids=["planted", "clean"])
def test_a_clip_whose_result_never_reaches_apply(mode, planted):
    """A tutorial VAE's step: ``for g in grads: tf.clip_by_norm(g, 15)`` and the unclipped grads
    applied (planted): GRD110 at the apply line; the clip's result applied (clean): silent."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    opt = keras.optimizers.SGD(0.01)
    x, y = (tf.constant(a) for a in data())

    def body():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        if planted:
            for g in grads:
                tf.clip_by_norm(g, 15.0)  # BUG: the result is dropped
        else:
            grads = [tf.clip_by_norm(g, 15.0) for g in grads]
        opt.apply_gradients(zip(grads, model.trainable_variables))

    fn = compile_step(body, mode)
    with auditor.watch(summary=False) as audit:
        for _ in range(3):
            fn()
    if planted:
        (finding,) = audit.findings
        assert finding.code == "GRD110" and "GRD005" in finding.message
        assert finding.sites and finding.sites[0].rsplit(":", 1)[0].endswith("test_audit_silent_cases.py")
    else:
        assert audit.findings == [], audit.summary()


@pytest.mark.parametrize("loop", ["function", "fit"])
@pytest.mark.parametrize("planted", [True, False], ids=["planted", "clean"])
def test_loss_scale_overflow_on_every_step(loop, planted):
    """Mixed precision with one ``inf`` in the input (planted): every step whose batch holds it
    overflows under the LossScaleOptimizer and is skipped (all of them in the custom loop, the
    first batch of each epoch in fit): GRD104 with the exact counts, although a skipped step has
    no record. Finite input (clean): the two overflows while the scale finds its level are silent."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1, dtype="float32")])
        opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01))
        x, y = data()
        if planted:
            x[2, 1] = np.inf
        with auditor.watch(model if loop == "fit" else None, summary=False) as audit:
            if loop == "fit":
                model.compile(opt, "mse")
                model.fit(x, y, batch_size=8, epochs=3, verbose=0)
            else:
                xt, yt = tf.constant(x), tf.constant(y)

                @tf.function
                def step():
                    with tf.GradientTape() as tape:
                        loss = opt.scale_loss(tf.reduce_mean(tf.square(tf.cast(model(xt), "float32") - yt)))
                    grads = tape.gradient(loss, model.trainable_variables)
                    opt.apply_gradients(zip(grads, model.trainable_variables))

                for _ in range(12):
                    step()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if planted:
        found = [f for f in audit.findings if "LossScaleOptimizer" in f.message]
        assert len(found) == 1 and found[0].code == "GRD104", audit.summary()
        overflowed = int(found[0].message.split("): ")[1].split(" of ")[0])
        assert f"{overflowed} of 12 step(s) overflowed" in found[0].message
        assert overflowed + len(audit.steps) == 12  # a skipped step has no record: the counts are exact
        if loop == "function":  # the inf is in every step's batch: nothing ever trains
            assert overflowed == 12 and audit.steps == []
    else:
        assert audit.findings == [], audit.summary()
        assert 10 <= len(audit.steps) < 12  # the dynamic scale overflows twice while it finds its level
