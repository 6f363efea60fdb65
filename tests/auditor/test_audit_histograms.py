"""Per-variable gradient-value histograms in TensorBoard (computed on the device every
``histogram_every`` steps): exact bucket counts for known gradients in eager, tf.function and
XLA loops, ``model.fit``, ``IndexedSlices`` and MirroredStrategy (the all-reduced gradient),
read back with TensorBoard's EventAccumulator."""
import numpy as np
import pytest
import tensorflow as tf
import keras
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import auditor
from audit_helpers import CUSTOM_MODES, FIT_MODES, compile_step, data, make_net

BINS = 30


class _ByVariable(dict):
    """Histograms by tag path; looked up by variable path or TF name (tags drop a TF name's ":0")."""

    def __getitem__(self, path):
        return super().__getitem__(path[:-2] if path.endswith(":0") else path)


def _read(logdir):
    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    out = _ByVariable()
    for tag in acc.Tags()["tensors"]:
        if tag.endswith("/grad_hist"):
            out[tag[: -len("/grad_hist")]] = {e.step: tf.make_ndarray(e.tensor_proto) for e in acc.Tensors(tag)}
    return out


def _expected(values):
    """Buckets as the auditor computes them (float32 arithmetic), NaN/Inf left out."""
    v = np.asarray(values, np.float32).ravel()
    v = v[np.isfinite(v)]
    lo, hi = v.min(), v.max()
    if hi == lo:
        return np.array([[lo - 0.5, lo + 0.5, v.size]])
    scaled = (v - lo) / np.float32(hi - lo) * np.float32(BINS)
    counts = np.bincount(np.clip(np.floor(scaled).astype(np.int64), 0, BINS - 1), minlength=BINS)
    edges = np.linspace(lo, hi, BINS + 1)
    return np.stack([edges[:-1], edges[1:], counts], axis=1)


def _assert_buckets(got, values):
    want = _expected(values)
    assert got.shape == want.shape
    np.testing.assert_allclose(got[:, :2], want[:, :2], rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(got[:, 2], want[:, 2])


def _known_gradients(step):
    rng = np.random.RandomState(step)
    g_kernel = rng.randn(4, 5).astype("float32") * (step + 1)
    g_bias = np.full([5], 0.25, "float32")  # every value equal
    g_other = rng.randn(3).astype("float32")
    g_other[1] = np.nan  # left out of the histogram
    return [g_kernel, g_bias, g_other]


@pytest.mark.parametrize("mode", CUSTOM_MODES)
def test_known_gradients_give_exact_buckets(tmp_path, mode):
    variables = [tf.Variable(tf.zeros([4, 5]), name="k"), tf.Variable(tf.zeros([5]), name="b"),
                 tf.Variable(tf.zeros([3]), name="o")]
    opt = keras.optimizers.SGD(0.0)
    apply = compile_step(lambda *grads: opt.apply_gradients(zip(grads, variables)), mode)
    with auditor.watch(summary=False, logdir=str(tmp_path), histogram_every=2) as audit:
        for step in range(6):
            apply(*[tf.constant(g) for g in _known_gradients(step)])
    hists = _read(tmp_path)
    paths = list(audit.steps[0].var_norms)
    assert set(hists) == {p.removesuffix(":0") for p in paths}
    for path, index in zip(paths, range(3)):
        assert sorted(hists[path]) == [0, 2, 4]  # optimizer steps that are multiples of 2
        for step, got in hists[path].items():
            _assert_buckets(got, _known_gradients(step)[index])


def test_indexed_slices_histogram_sums_repeated_rows(tmp_path):
    table = tf.Variable(tf.zeros([10, 3]), name="table")
    opt = keras.optimizers.SGD(0.0)
    grad = tf.IndexedSlices(tf.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [0.5, 0.5, 0.5]]),
                            tf.constant([1, 1, 7]), dense_shape=tf.constant([10, 3]))
    with auditor.watch(summary=False, logdir=str(tmp_path)) as audit:
        opt.apply_gradients([(grad, table)])
    (path,) = audit.steps[0].var_norms
    # the applied rows: row 1 once (summed) and row 7; the table is not densified
    _assert_buckets(_read(tmp_path)[path][0], [5.0, 7.0, 9.0, 0.5, 0.5, 0.5])


def test_histogram_every_zero_and_no_logdir_write_none(tmp_path):
    model = make_net()
    opt = keras.optimizers.SGD(0.01)
    x, y = (tf.constant(a) for a in data())
    with auditor.watch(summary=False, logdir=str(tmp_path / "off"), histogram_every=0) as audit:
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(x) - y))
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    assert len(audit.steps) == 3
    assert _read(tmp_path / "off") == {}
    with pytest.raises(ValueError, match="histogram_every"):
        auditor.watch(histogram_every=-1)


def test_histograms_come_with_a_trace_inside_a_watch_that_wants_them(tmp_path):
    """A step traced in a watch without a logdir has no histogram ops (each branch costs on every
    call): a later watch with a logdir says so in its summary and writes none for it; ``fit``
    retraces in each watch and an eager step builds a new probe, so both write histograms."""
    x, y = (tf.constant(a) for a in data())
    model = make_net()
    opt = keras.optimizers.SGD(0.01)

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    traced = tf.function(step)
    with auditor.watch(summary=False):
        traced()
    with auditor.watch(summary=False, logdir=str(tmp_path / "function"), histogram_every=1) as audit:
        for _ in range(3):
            traced()
    assert len(audit.steps) == 3
    assert _read(tmp_path / "function") == {}
    assert "traced or built in a watch without histograms" in audit.summary()

    with auditor.watch(summary=False, logdir=str(tmp_path / "eager"), histogram_every=1) as audit:
        for _ in range(2):
            step()
    assert all(sorted(steps) == [4, 5] for steps in _read(tmp_path / "eager").values())
    assert "without histograms" not in audit.summary()

    fitted = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    fitted.compile(keras.optimizers.SGD(0.01), "mse")
    with auditor.watch(fitted, summary=False):
        fitted.fit(x, y, batch_size=32, epochs=1, verbose=0)
    with auditor.watch(fitted, summary=False, logdir=str(tmp_path / "fit"), histogram_every=1) as audit:
        fitted.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert sorted(_read(tmp_path / "fit")[fitted.trainable_variables[0].path]) == [1, 2]
    assert "without histograms" not in audit.summary()


@pytest.mark.parametrize("fit_kwargs", FIT_MODES)
def test_fit_histograms_match_the_first_step_gradient(tmp_path, fit_kwargs):
    x, y = data()

    def fresh():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="h"), keras.layers.Dense(1, name="o")])

    model = fresh()
    with tf.GradientTape() as tape:  # the gradient fit's first step applies (full batch, mse)
        loss = tf.reduce_mean(tf.square(model(x) - y))
    first = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
    model.compile(keras.optimizers.SGD(0.01), "mse", **fit_kwargs)
    with auditor.watch(model, summary=False, logdir=str(tmp_path), histogram_every=3) as audit:
        model.fit(x, y, batch_size=32, epochs=6, verbose=0, shuffle=False)
    hists = _read(tmp_path)
    assert len(audit.steps) == 6 and audit.findings == []
    twin = fresh()  # trained without watch(): histograms change nothing
    twin.compile(keras.optimizers.SGD(0.01), "mse", **fit_kwargs)
    twin.fit(x, y, batch_size=32, epochs=6, verbose=0, shuffle=False)
    for a, b in zip(model.trainable_variables, twin.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for var, grad in zip(model.trainable_variables, first):
        got = hists[var.path]
        assert sorted(got) == [0, 3]
        assert got[0][:, 2].sum() == grad.size
        want = _expected(grad)  # outer edges: min and max (or value -/+ 0.5 for a single value)
        np.testing.assert_allclose([got[0][0, 0], got[0][-1, 1]], [want[0, 0], want[-1, 1]], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["keras", "tf_keras"])
def test_mirrored_strategy_histogram_is_of_the_all_reduced_gradient(tmp_path, strategy, family):
    optimizers = keras.optimizers if family == "keras" else pytest.importorskip("tf_keras").optimizers
    with strategy.scope():
        var = tf.Variable(tf.zeros([8]), name="w")
        opt = optimizers.SGD(0.0)
    base = np.random.RandomState(3).randn(8).astype("float32")

    @tf.function
    def step():
        def replica_step():
            ctx = tf.distribute.get_replica_context()
            scale = tf.cast(ctx.replica_id_in_sync_group + 1, tf.float32)  # replica k sends (k+1) * base
            opt.apply_gradients([(tf.constant(base) * scale, var)])
        strategy.run(replica_step)

    with auditor.watch(summary=False, logdir=str(tmp_path), histogram_every=2) as audit:
        for _ in range(3):
            step()
    assert len(audit.steps) == 3
    (path,) = audit.steps[0].var_norms
    hists = _read(tmp_path)[path]
    assert sorted(hists) == [0, 2]  # one histogram per optimizer step, not one per replica
    _assert_buckets(hists[0], base + base * np.float32(2))


def test_tf_keras_optimizer_histograms(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    var = tf.Variable(tf.zeros([4, 5]), name="k")
    opt = tf_keras.optimizers.SGD(0.0)
    with auditor.watch(summary=False, logdir=str(tmp_path), histogram_every=2) as audit:
        for step in range(3):
            opt.apply_gradients([(tf.constant(_known_gradients(step)[0]), var)])
    (path,) = audit.steps[0].var_norms
    hists = _read(tmp_path)[path]
    assert sorted(hists) == [0, 2]
    _assert_buckets(hists[2], _known_gradients(2)[0])
