"""What is measured: norms, clipping ratios, sparse gradients, change checks, sampling, outputs."""
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
import keras

import auditor
from auditor import testing
from audit_helpers import codes, compile_step, data, make_net, mse, standard_step


def _xy():
    return tuple(tf.constant(a) for a in data())


def _reference_grads(seed=0):
    model = make_net(seed=seed)
    x, y = _xy()
    with tf.GradientTape() as tape:
        loss = mse(model, x, y)
    return model, tape.gradient(loss, model.trainable_variables)


@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_norms_match_a_direct_computation(mode):
    ref_model, ref_grads = _reference_grads()
    model = make_net()
    opt = keras.optimizers.SGD(0.01)
    x, y = _xy()
    step = compile_step(lambda: standard_step(model, opt, x, y), mode)
    with auditor.watch(summary=False) as audit:
        step()
    record = audit.steps[0]
    assert record.global_norm == pytest.approx(float(tf.linalg.global_norm(ref_grads)), rel=1e-5)
    for v, g in zip(ref_model.trainable_variables, ref_grads):
        path = next(p for p in record.var_norms if p.endswith(v.path.split("/", 1)[1]))
        assert record.var_norms[path] == pytest.approx(float(tf.norm(g)), rel=1e-5)
    assert record.clip_ratio is None  # no clipping anywhere
    assert sorted(record.changed_vars) == sorted(record.var_norms)
    assert record.nonfinite == [] and record.none_vars == []


@pytest.mark.parametrize("kind,bound", [("clipnorm", 0.5), ("global_clipnorm", 0.5), ("clipvalue", 0.05)])
def test_optimizer_clipping_ratio(kind, bound):
    _, ref_grads = _reference_grads()
    if kind == "clipnorm":
        expected = math.sqrt(sum(min(float(tf.norm(g)), bound) ** 2 for g in ref_grads))
    elif kind == "global_clipnorm":
        expected = min(float(tf.linalg.global_norm(ref_grads)), bound)
    else:
        expected = float(tf.linalg.global_norm([tf.clip_by_value(g, -bound, bound) for g in ref_grads]))
    model = make_net()
    opt = keras.optimizers.SGD(0.01, **{kind: bound})
    x, y = _xy()
    with auditor.watch(summary=False) as audit:
        tf.function(lambda: standard_step(model, opt, x, y))()
    record = audit.steps[0]
    assert record.clipped_norm == pytest.approx(expected, rel=1e-5)
    assert record.clip_ratio == pytest.approx(expected / record.global_norm, rel=1e-5)
    assert record.clip_ratio < 1


@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
@pytest.mark.parametrize("clip", ["global", "per_tensor"])
def test_user_clipping_inside_watch(mode, clip):
    model = make_net()
    opt = keras.optimizers.SGD(0.01)
    x, y = _xy()

    def body(bound):
        with tf.GradientTape() as tape:
            loss = mse(model, x, y)
        grads = tape.gradient(loss, model.trainable_variables)
        if clip == "global":
            grads, _ = tf.clip_by_global_norm(grads, bound)
        else:
            grads = [tf.clip_by_norm(g, bound) for g in grads]
        opt.apply_gradients(zip(grads, model.trainable_variables))

    step = compile_step(body, mode)
    with auditor.watch(summary=False) as saturated:
        for _ in range(12):
            step(1e-4)
    record = saturated.steps[0]
    assert record.global_norm > record.applied_norm == pytest.approx(record.clipped_norm)
    assert record.clip_ratio < 0.01
    assert "GRD107" in codes(saturated)
    model = make_net()
    opt = keras.optimizers.SGD(0.01)
    step = compile_step(body, mode)
    with auditor.watch(summary=False) as loose:
        for _ in range(12):
            step(1e4)
    assert loose.steps[0].clip_ratio == pytest.approx(1.0)
    assert codes(loose) == []


@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_sparse_gradients_with_repeated_indices(mode):
    keras.utils.set_random_seed(0)
    emb = keras.layers.Embedding(50, 3)
    emb.build((None,))
    opt = keras.optimizers.SGD(0.1)
    ids = tf.constant([1, 4, 4, 7, 1, 1])

    def body():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(emb(ids)))
        grads = tape.gradient(loss, emb.trainable_variables)
        opt.apply_gradients(zip(grads, emb.trainable_variables))
        return grads[0]

    table = emb.embeddings.numpy()
    with auditor.watch(summary=False) as audit:
        grad = compile_step(body, mode)()
    if mode != "xla":
        assert isinstance(grad, tf.IndexedSlices)
    dense = tf.convert_to_tensor(grad)
    expected = float(tf.norm(dense))
    counts = np.bincount(ids.numpy(), minlength=50)[:, None]
    assert expected == pytest.approx(float(np.linalg.norm(counts * 2 * table)), rel=1e-5)
    assert audit.steps[0].global_norm == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_check_changes_schedules(mode):
    def run(check_changes, steps=12):
        model = make_net()
        opt = keras.optimizers.SGD(0.01)
        x, y = _xy()
        step = compile_step(lambda: standard_step(model, opt, x, y), mode)
        with auditor.watch(summary=False, check_changes=check_changes,
                           thresholds={"changes_first_steps": 3, "changes_period": 4}) as audit:
            for _ in range(steps):
                step()
        return audit, opt

    auto, _ = run("auto")
    assert [r.step for r in auto.steps if r.changed_vars is not None] == [0, 1, 2, 4, 8]
    every, _ = run("every")
    assert all(r.changed_vars is not None and len(r.changed_vars) == 6 for r in every.steps)
    off, _ = run("off")
    assert all(r.changed_vars is None for r in off.steps)
    assert all(p.snapshots is None for p in testing.probes(off))
    assert all(s["changed"] for s in auto.variables.values())


def test_tiny_update_is_detected_as_a_change():
    """Exact comparison: an update of one ulp counts (float-sum fingerprints would miss it)."""
    var = keras.Variable(np.full([1000], 1.0, "float32"), name="w")
    opt = keras.optimizers.SGD(1.0)
    grad = np.zeros([1000], "float32")
    grad[123] = np.spacing(np.float32(1.0))  # exactly one ulp
    with auditor.watch(summary=False, check_changes="every") as audit:
        opt.apply_gradients([(tf.constant(grad), var)])
        opt.apply_gradients([(tf.zeros([1000]), var)])
    assert [r.changed_vars for r in audit.steps] == [["w"], []]
    assert audit.variables["w"]["changed"] is True


def test_every_samples_steps():
    model = make_net()
    opt = keras.optimizers.SGD(0.01)
    x, y = _xy()
    step = tf.function(lambda: standard_step(model, opt, x, y))
    with auditor.watch(summary=False, every=3) as audit:
        for _ in range(9):
            step()
    assert [r.step for r in audit.steps] == [0, 3, 6]


def test_mark_step_detects_one_optimizer_for_two_models():
    gen, disc = make_net(seed=1), make_net(seed=2)
    opt = keras.optimizers.Adam(0.001)
    opt.build(gen.trainable_variables + disc.trainable_variables)
    x, y = _xy()
    with auditor.watch(summary=False) as audit:
        standard_step(gen, opt, x, y)
        audit.mark_step()
        standard_step(disc, opt, x, y)
        standard_step(gen, opt, x, y)
        audit.mark_step()
    found = {f.code: f for f in audit.findings}
    assert "GRD103" in found and "between two mark_step" in found["GRD103"].message
    # two optimizers, one per model: silent
    opt_g, opt_d = keras.optimizers.Adam(0.001), keras.optimizers.Adam(0.001)
    with auditor.watch(summary=False) as clean:
        for _ in range(3):
            standard_step(gen, opt_g, x, y)
            standard_step(disc, opt_d, x, y)
            clean.mark_step()
    assert codes(clean) == []
    assert {r.optimizer for r in clean.steps} == {"net/Adam", "net/Adam#2"}  # two models named net


@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_raise_on_nonfinite_stops_at_first_such_step(mode):
    model = make_net()
    opt = keras.optimizers.SGD(0.01)
    x, y = data()
    x[0, 0] = np.inf
    x, y = tf.constant(x), tf.constant(y)
    step = compile_step(lambda: standard_step(model, opt, x, y), mode)
    with pytest.raises(auditor.AuditError) as info:
        with auditor.watch(summary=False, raise_on=("GRD104",)):
            for _ in range(5):
                step()
    assert info.value.finding.code == "GRD104"
    assert info.value.finding.step == 0
    assert int(opt.iterations.numpy()) == 1  # raised right after the first step


def test_raise_on_none_gradient_raises_after_the_first_step():
    model = make_net(use_b=False)
    opt = keras.optimizers.SGD(0.01)
    x, y = _xy()
    with pytest.raises(auditor.AuditError, match="GRD101"):
        with auditor.watch(summary=False, raise_on="GRD101"):
            step = tf.function(lambda: standard_step(model, opt, x, y))
            for _ in range(3):
                step()
    assert int(opt.iterations.numpy()) == 1


def test_raise_on_aggregate_finding_raises_at_exit():
    model = make_net()
    opt = keras.optimizers.Adam(0.001, global_clipnorm=1e-4)
    x, y = _xy()
    with pytest.raises(auditor.AuditError, match="GRD107"):
        with auditor.watch(summary=False, raise_on=("GRD107",)) as audit:
            for _ in range(12):
                standard_step(model, opt, x, y)
    assert [f.code for f in audit.findings] == ["GRD107"]


def test_thresholds_are_settable():
    model = make_net()
    opt = keras.optimizers.SGD(0.01)
    x, y = _xy()
    with auditor.watch(summary=False, thresholds={"explode_norm": 0.1}) as audit:
        standard_step(model, opt, x, y)
    assert codes(audit) == ["GRD105"]
    assert audit.thresholds["explode_norm"] == 0.1
    assert audit.thresholds["explode_ratio"] == auditor.DEFAULT_THRESHOLDS["explode_ratio"]


def test_tape_only_variables_not_applied():
    model = make_net()
    opt = keras.optimizers.SGD(0.01)
    x, y = _xy()

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = mse(model, x, y)
        grads = tape.gradient(loss, model.trainable_variables)
        kernels = [(g, v) for g, v in zip(grads, model.trainable_variables) if "kernel" in v.path]
        opt.apply_gradients(kernels)  # the biases' gradients are computed, never applied

    with auditor.watch(summary=False) as audit:
        for _ in range(3):
            step()
    (finding,) = [f for f in audit.findings if f.code == "GRD102"]
    assert sorted(p.rsplit("/", 1)[1] for p in finding.variables) == ["bias"] * 3
    assert "never applied" in finding.message
    stats = audit.variables
    assert all(stats[p]["applied"] == 0 and not stats[p]["changed"] for p in finding.variables)


def test_manual_updates_without_optimizer_are_healthy():
    model = make_net()
    x, y = _xy()
    with auditor.watch(summary=False) as audit:
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = mse(model, x, y)
            for g, v in zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables):
                v.assign_sub(0.01 * g)
    assert codes(audit) == []


def test_to_dict_summary_and_sinks(tmp_path):
    model = make_net(use_b=False)
    opt = keras.optimizers.SGD(0.01)
    x, y = data()
    x[1, 1] = np.nan
    x, y = tf.constant(x), tf.constant(y)
    jsonl = tmp_path / "audit.jsonl"
    logdir = tmp_path / "tb"
    with auditor.watch(summary=False, jsonl=jsonl, logdir=str(logdir)) as audit:
        for _ in range(2):
            standard_step(model, opt, x, y)
    data_dict = audit.to_dict()
    text = json.dumps(data_dict, allow_nan=False)
    assert json.loads(text)["steps"][0]["global_norm"] == "nan"
    assert {f["code"] for f in data_dict["findings"]} == {"GRD101", "GRD104"}
    summary = audit.summary()
    assert "net" in summary and "GRD101 none-gradient" in summary and "GRD104 non-finite-gradient" in summary
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [line["type"] for line in lines] == ["run", "step", "step", "finding", "finding", "end"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(logdir))


@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_indexed_slices_are_measured_without_densifying(mode):
    """A gradient of a 10**9-row embedding: densifying it would need 32 GB; the norm, the
    non-finite check and the histogram use only the 5 rows present (repeated index 3 summed)."""
    from auditor import graph_stats as gs

    rng = np.random.RandomState(0)
    values = rng.randn(5, 8).astype("float32")
    indices = np.array([3, 999_999_999, 3, 7, 42], "int64")
    slices = tf.IndexedSlices(tf.constant(values), tf.constant(indices), tf.constant([10**9, 8], tf.int64))

    def measure():
        return gs.sq_norm(slices), gs.has_nonfinite(slices), gs.histogram(slices)

    sq, bad, hist = compile_step(measure, mode)()
    rows = {}
    for i, v in zip(indices, values):
        rows[i] = rows.get(i, 0) + v
    dense_rows = np.stack(list(rows.values()))
    assert float(sq) == pytest.approx(float(np.sum(dense_rows.astype("float64") ** 2)), rel=1e-5)
    assert not bool(bad)
    hist = hist.numpy()
    assert hist[0] == pytest.approx(dense_rows.min()) and hist[1] == pytest.approx(dense_rows.max())
    assert hist[2:].sum() == dense_rows.size  # 4 distinct rows x 8, no padding, no zeros of absent rows


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_derived_rows_decode_to_the_bits_the_ops_compute(mode):
    """A derived row (no clipping, no loss scale) carries half squared norms; the host's decode
    must give the same float32 bits as the ops of a full row (``2 * half``, ``sqrt``, ``add_n`` in
    variable order): random magnitudes, zeros, a square that overflows, NaN, a None gradient, and
    full rows mixed in. Non-finite flags written as NaN decode as flags; checked marks survive."""
    from auditor.probe import RowLayout

    rng = np.random.RandomState(0)
    none_mask = (False, True, False, False, False)
    layout = RowLayout(5, False, none_mask)
    halves = (10.0 ** rng.uniform(-1, 1, size=(400, 5))).astype(np.float32)  # close magnitudes: order shows
    halves[200:] *= (10.0 ** rng.uniform(-30, 30, size=(200, 1))).astype(np.float32)
    halves[0] = [0.0, 0.0, 0.0, 0.0, 0.0]
    halves[1, 2] = 3e38  # twice it overflows
    halves[2, 3] = np.nan
    halves[:, 1] = np.nan  # the None gradient
    real = [k for k, none in enumerate(none_mask) if not none]

    def ops(h):
        sq_real = tf.stack([h[k] for k in real]) * 2.0
        parts = tf.unstack(sq_real)
        return tf.sqrt(sq_real), tf.sqrt(tf.add_n(parts))

    compared = list(range(60)) + list(range(200, 240))
    expected = compile_step(lambda: [ops(tf.constant(halves[k])) for k in compared], mode)()
    flags = np.zeros((400, 5), np.float32)
    flags[2, 3], flags[3, 0] = np.nan, 1.0  # NaN from graph_stats.zero_sums, 1.0 from the exact check
    checked = (np.arange(400) % 3 == 0).astype(np.float32)
    rows = np.concatenate([np.full((400, 3), np.nan, np.float32), (checked + RowLayout.DERIVED)[:, None],
                           halves, flags, np.zeros((400, 5), np.float32), np.full((400, 5), np.nan, np.float32)], 1)
    full = rows[5].copy()  # a full row among derived ones: left as it is
    full[:4] = [1.5, 2.5, 3.5, 1.0]
    rows[5] = full
    decoded = layout.decode(rows, np.arange(400))
    for k, (norms, applied) in zip(compared, expected):
        if k == 5:
            continue
        got = np.array(decoded.norms[k], np.float32)[real]
        np.testing.assert_array_equal(got.view(np.int32)[~np.isnan(got)], norms.numpy().view(np.int32)[~np.isnan(got)])
        assert np.isnan(got).tolist() == np.isnan(norms.numpy()).tolist()
        for column in (decoded.applied, decoded.pre, decoded.clipped):
            assert np.float32(column[k]).tobytes() == applied.numpy().tobytes() or (
                math.isnan(column[k]) and math.isnan(applied.numpy()))
        assert math.isnan(decoded.norms[k][1])  # None gradient
    assert (decoded.applied[5], decoded.pre[5], decoded.clipped[5], decoded.checked[5]) == (1.5, 2.5, 3.5, True)
    np.testing.assert_array_equal(decoded.norms[5], full[4:9])
    assert decoded.nonfinite[2].tolist() == [False, False, False, True, False] and decoded.nonfinite_count[2] == 1
    assert decoded.nonfinite[3].tolist() == [True, False, False, False, False]
    assert decoded.checked[:5] == [True, False, False, True, False] and decoded.checked[6] is True
    assert math.isinf(decoded.applied[1]) and math.isnan(decoded.applied[2]) and decoded.applied[0] == 0.0
    # A batch of derived rows only (the usual one, decoded by slices) gives the same values.
    alone = layout.decode(np.delete(rows, 5, 0), np.delete(np.arange(400), 5))
    kept = [k for k in range(400) if k != 5]
    for name in ("applied", "pre", "clipped", "checked", "nonfinite_count", "norms"):
        assert repr(getattr(alone, name)) == repr([getattr(decoded, name)[k] for k in kept]), name
    assert alone.nonfinite.tolist() == decoded.nonfinite[kept].tolist()
