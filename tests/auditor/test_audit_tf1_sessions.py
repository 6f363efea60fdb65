"""TF1 rows kept in the graph and collected through the session (in-process: eager stays on, the
graphs are built in ``tf.Graph().as_default()``; the other TF1 modes run in test_audit_tf1.py)."""
import contextlib

import numpy as np
import pytest
import tensorflow as tf

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import auditor
from auditor.engines import tf1_sessions

v1 = tf.compat.v1


def _train_op():
    rng = np.random.RandomState(0)
    x = tf.constant(rng.randn(8, 3).astype("float32"))
    w = v1.get_variable("w", initializer=rng.randn(3, 1).astype("float32"))
    return v1.train.GradientDescentOptimizer(0.01).minimize(tf.reduce_mean(tf.square(tf.matmul(x, w))))


@pytest.fixture
def ring_reads(monkeypatch):
    """``(rings, rows)`` of every ``Session.run`` that reads the auditor's rings (its own runs,
    seen at TensorFlow's ``Session.run``: they feed the rows' indices)."""
    reads = []
    run = v1.Session.run

    def counted(self, fetches, feed_dict=None, *args, **kwargs):
        indices = [v for k, v in (feed_dict or {}).items()
                   if getattr(k, "op", None) is not None and k.op.name.startswith("auditor_row_indices")]
        if indices:
            reads.append((len(indices), sum(np.size(v) for v in indices)))
        return run(self, fetches, feed_dict, *args, **kwargs)

    monkeypatch.setattr(v1.Session, "run", counted)
    return reads


def test_runs_the_patches_did_not_see_are_counted_as_lost_beyond_the_ring():
    """``partial_run`` bypasses the patched runs: what the ring still holds is read at close, the
    rows it overwrote are counted as lost (and said in the summary)."""
    runs = tf1_sessions.CAPACITY + 76
    graph = tf.Graph()
    with graph.as_default(), auditor.watch(summary=False) as audit:
        with tf.control_dependencies([_train_op()]):
            trained = tf.constant(1.0) + 0.0  # partial_run fetches tensors only
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(runs):
                sess.partial_run(sess.partial_run_setup([trained], []), trained)
    assert [r.step for r in audit.steps] == list(range(76, runs))
    assert audit.lost_records == 76
    assert "76 step record(s) lost" in audit.summary()


def test_a_collection_reads_the_ring_once_and_hands_its_rows_over(ring_reads):
    """Every ``COLLECT_EVERY`` runs one run of the auditor's own reads the new rows; handing them
    to the watch right after (its host ring was half full) reads nothing again."""
    graph = tf.Graph()
    with graph.as_default(), auditor.watch(summary=False, check_changes="off") as audit:
        train_op = _train_op()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(train_op)
            assert len(audit.steps) == 1  # read now: the runs are counted from here
            ring_reads.clear()
            for _ in range(tf1_sessions.COLLECT_EVERY):
                sess.run(train_op)
            assert ring_reads == [(1, tf1_sessions.COLLECT_EVERY)]
            assert len(audit.steps) == tf1_sessions.COLLECT_EVERY + 1


def test_a_session_opened_before_the_train_op_was_built_and_a_watch_that_ends_first():
    """The session initializes the ring at its first run after the train op exists; the watch
    ends while the session is open: its rows are read then, later runs are not recorded."""
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as sess:
        with auditor.watch(summary=False) as audit:
            train_op = _train_op()
            sess.run(v1.global_variables_initializer())
            for _ in range(3):
                sess.run(train_op)
        sess.run(train_op)
        with auditor.watch(summary=False) as later:
            sess.run(train_op)
    assert [r.step for r in audit.steps] == [0, 1, 2]
    assert later.steps == [] and audit.lost_records == 0


def test_the_rings_are_not_saved_with_the_model(tmp_path):
    """The auditor's variables are in no collection: a Saver built inside the watch writes the
    model's variables only."""
    graph = tf.Graph()
    with graph.as_default(), auditor.watch(summary=False):
        train_op = _train_op()
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(train_op)
            path = saver.save(sess, str(tmp_path / "model"))
    assert sorted(name for name, _ in tf.train.list_variables(path)) == ["w"]


def test_a_planned_site_follows_the_watches_that_come_and_go():
    """A site larger than the auditor copies on every run plans its copies in the graph; a
    nested watch with ``check_changes="every"`` changes the plan for its runs only."""
    graph = tf.Graph()
    with graph.as_default(), auditor.watch(summary=False, thresholds={"changes_period": 20}) as outer:
        rng = np.random.RandomState(0)
        x = tf.constant(rng.randn(4, 300).astype("float32"))
        big = v1.get_variable("big", initializer=rng.randn(300, 256).astype("float32") * 0.01)
        train_op = v1.train.GradientDescentOptimizer(0.1).minimize(tf.reduce_mean(tf.square(tf.matmul(x, big))))
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(12):
                sess.run(train_op)
            with auditor.watch(summary=False, check_changes="every") as inner:
                for _ in range(3):
                    sess.run(train_op)
            for _ in range(10):
                sess.run(train_op)
    checked = [r.step for r in outer.steps if r.changed_vars is not None]
    assert [r.step for r in outer.steps] == list(range(25))
    assert checked == list(range(10)) + [12, 13, 14, 20]
    assert [r.step for r in inner.steps] == [12, 13, 14]
    assert all(r.changed_vars == ["big:0"] for r in inner.steps)


def test_a_small_site_compares_on_the_scheduled_runs_once_each_variable_changed():
    """Every site in a session plans its copies: each run until every variable was seen changing
    (run 0 here), then the first 10 recorded runs and every 50th step (``check_changes="auto"``)."""
    graph = tf.Graph()
    with graph.as_default(), auditor.watch(summary=False) as audit:
        train_op = _train_op()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(60):
                sess.run(train_op)
    checked = [r.step for r in audit.steps if r.changed_vars is not None]
    assert [r.step for r in audit.steps] == list(range(60))
    assert checked == list(range(10)) + [50]
    assert all(audit.steps[k].changed_vars == ["w:0"] for k in checked) and audit.findings == []


def test_the_plan_follows_every_and_a_global_step_that_jumps():
    """``every=3``: the first 10 recorded runs are compared, then the recorded steps that are
    multiples of ``changes_period`` (20: so every 60th step); after the global step is set
    forward to 200, the next compared step is 240 (200 itself is not recorded). The run of the
    assignment tells the session to read the step again: 201 is recorded, not skipped."""
    graph = tf.Graph()
    with graph.as_default(), auditor.watch(summary=False, every=3, thresholds={"changes_period": 20}) as audit:
        rng = np.random.RandomState(0)
        x = tf.constant(rng.randn(8, 3).astype("float32"))
        w = v1.get_variable("w", initializer=rng.randn(3, 1).astype("float32"))
        step = v1.train.get_or_create_global_step()
        train_op = v1.train.GradientDescentOptimizer(0.01).minimize(
            tf.reduce_mean(tf.square(tf.matmul(x, w))), global_step=step)
        jump = step.assign(200)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(130):
                sess.run(train_op)
            sess.run(jump)
            for _ in range(50):
                sess.run(train_op)
    recorded = [s for s in list(range(130)) + list(range(200, 250)) if s % 3 == 0]
    assert [r.step for r in audit.steps] == recorded
    checked = [r.step for r in audit.steps if r.changed_vars is not None]
    assert checked == list(range(0, 30, 3)) + [60, 120, 240]
    assert all(r.changed_vars == ["w:0"] for r in audit.steps if r.changed_vars is not None)


def test_raise_on_raises_from_the_session_run_that_recorded_the_finding():
    """With ``raise_on``, a session's rows are read after each run of the train op: the run whose
    gradients are Inf raises ``AuditError`` (GRD104) from its ``Session.run``."""
    graph = tf.Graph()
    done = []
    with graph.as_default(), pytest.raises(auditor.AuditError) as raised:
        with auditor.watch(summary=False, raise_on="GRD104"):
            scale = v1.placeholder(tf.float32, [])
            rng = np.random.RandomState(0)
            x = tf.constant(rng.randn(8, 3).astype("float32"))
            w = v1.get_variable("w", initializer=rng.randn(3, 1).astype("float32"))
            train_op = v1.train.GradientDescentOptimizer(0.01).minimize(tf.reduce_mean(tf.matmul(x, w)) * scale)
            with v1.Session(graph=graph) as sess:
                sess.run(v1.global_variables_initializer())
                for k in range(10):
                    sess.run(train_op, {scale: np.inf if k == 4 else 1.0})
                    done.append(k)
    assert raised.value.finding.code == "GRD104"
    assert done == [0, 1, 2, 3]


def test_raise_on_reads_the_rows_of_every_train_op_in_one_run_of_its_own(ring_reads):
    """Two optimizers' train ops in one graph (a GAN's two players) with ``raise_on``: after
    each run one read of the auditor's own hands both train ops' rows over."""
    graph = tf.Graph()
    with graph.as_default(), auditor.watch(summary=False, raise_on="GRD104") as audit:
        rng = np.random.RandomState(0)
        x = tf.constant(rng.randn(8, 3).astype("float32"))
        g = v1.get_variable("g", initializer=rng.randn(3, 1).astype("float32"))
        d = v1.get_variable("d", initializer=rng.randn(3, 1).astype("float32"))
        loss = tf.reduce_mean(tf.square(tf.matmul(x, g) + tf.matmul(x, d)))
        both = tf.group(v1.train.GradientDescentOptimizer(0.01).minimize(loss, var_list=[g]),
                        v1.train.AdamOptimizer(0.01).minimize(loss, var_list=[d]))
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            ring_reads.clear()
            for _ in range(3):
                sess.run(both)
            assert ring_reads == [(2, 2)] * 3  # one run a step, reading both rings' new row
    assert sorted((r.optimizer, r.step) for r in audit.steps) == [
        (label, step) for label in sorted({r.optimizer for r in audit.steps}) for step in range(3)]
    assert len({r.optimizer for r in audit.steps}) == 2


def _adam_train_op(global_step: bool, scale=1.0):
    rng = np.random.RandomState(0)
    x = tf.constant(rng.randn(8, 3).astype("float32"))
    w = v1.get_variable("w", initializer=rng.randn(3, 1).astype("float32"))
    step = v1.train.get_or_create_global_step() if global_step else None
    return v1.train.AdamOptimizer(0.01).minimize(tf.reduce_mean(tf.square(tf.matmul(x, w))) * scale,
                                                 global_step=step)


@pytest.mark.parametrize("global_step", [False, True], ids=["run-counter", "global-step"])
def test_every_runs_the_optimizers_own_update_between_recorded_steps(global_step):
    """``every=10``: on the runs between two recorded steps the session runs the optimizer's own
    update (no node of the auditor's row runs); the weights, Adam's slots and the global step end
    bitwise equal to an unwatched run; ``make_callable`` (which reuses its target list) records
    the same steps."""
    trace = v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE)

    def train(watched):
        graph = tf.Graph()
        with graph.as_default():
            watch = auditor.watch(summary=False, every=10) if watched else contextlib.nullcontext()
            with watch as audit:
                train_op = _adam_train_op(global_step)
                with v1.Session(graph=graph) as sess:
                    sess.run(v1.global_variables_initializer())
                    audited = []
                    for k in range(25):
                        meta = v1.RunMetadata()
                        sess.run(train_op, options=trace, run_metadata=meta)
                        nodes = {n.node_name for d in meta.step_stats.dev_stats for n in d.node_stats}
                        if any(name.startswith("auditor_rows") for name in nodes):  # the ring
                            audited.append(k)
                    call = sess.make_callable(train_op)
                    for _ in range(20):
                        call()
                    values = sess.run(v1.global_variables())
        return values, audited, audit

    plain, _, _ = train(False)
    values, audited, audit = train(True)
    assert len(values) == len(plain) == (6 if global_step else 5)
    assert all(np.array_equal(a, b) for a, b in zip(values, plain))
    assert audited == [0, 10, 20]
    assert [r.step for r in audit.steps] == [0, 10, 20, 30, 40]
    assert all(r.changed_vars == ["w:0"] for r in audit.steps) and audit.findings == []


@pytest.mark.parametrize("global_step", [False, True], ids=["run-counter", "global-step"])
def test_runs_the_plan_does_not_compare_run_the_train_op_without_its_change_check(global_step, tmp_path):
    """Defaults: on the runs the plan does not compare (after the first 10, all but every 50th)
    the session runs the train op built again without its change check (neither the plan nor a
    copy of the variables is read); records, gradient histograms, weights and Adam's slots equal
    those of the train op run as it is on every step (inside a group of yours, which the session
    does not replace)."""
    trace = v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE)

    def histograms(logdir):
        events = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
        events.Reload()
        return {tag: [(e.step, tf.make_ndarray(e.tensor_proto).tolist()) for e in events.Tensors(tag)]
                for tag in events.Tags()["tensors"] if tag.endswith("/grad_hist")}

    def train(sampled):
        graph = tf.Graph()
        logdir = tmp_path / ("sampled" if sampled else "as-built")
        with graph.as_default(), auditor.watch(summary=False, logdir=str(logdir), histogram_every=4) as audit:
            train_op = _adam_train_op(global_step)
            with v1.Session(graph=graph) as sess:
                sess.run(v1.global_variables_initializer())
                as_built = tf.group(train_op)
                unchecked = []
                for k in range(60):
                    if not sampled:
                        sess.run(as_built)
                        continue
                    meta = v1.RunMetadata()
                    sess.run(train_op, options=trace, run_metadata=meta)
                    nodes = {n.node_name for d in meta.step_stats.dev_stats for n in d.node_stats}
                    assert any(name.startswith("auditor_rows") for name in nodes)  # every run records
                    if "auditor_unchecked_train_op" in nodes:
                        assert "auditor_plan" not in nodes
                        unchecked.append(k)
                values = sess.run(v1.global_variables())
        return audit, unchecked, values, histograms(logdir)

    full, _, expected, expected_histograms = train(sampled=False)
    audit, unchecked, values, written = train(sampled=True)
    assert unchecked == [k for k in range(10, 60) if k != 50]
    assert written == expected_histograms and [step for step, _ in written["w/grad_hist"]] == list(range(0, 60, 4))
    assert [r.step for r in audit.steps if r.changed_vars is not None] == list(range(10)) + [50]
    assert [r.to_dict() for r in audit.steps] == [r.to_dict() for r in full.steps]
    assert len(values) == (6 if global_step else 5) and all(np.array_equal(a, b) for a, b in zip(values, expected))
    assert audit.findings == [] and full.findings == []


def test_every_finds_what_a_recorded_step_shows():
    """``every=10`` on a TF1 session: an Inf gradient at step 20 is found at step 20; one at step
    15 (not recorded) is not looked at."""
    graph = tf.Graph()
    with graph.as_default(), auditor.watch(summary=False, every=10) as audit:
        scale = v1.placeholder(tf.float32, [])
        train_op = _adam_train_op(True, scale)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for k in range(30):
                sess.run(train_op, {scale: np.inf if k in (15, 20) else 1.0})
    assert [r.step for r in audit.steps] == [0, 10, 20]
    assert [(f.code, f.step) for f in audit.findings if f.code == "GRD104"] == [("GRD104", 20)]


def test_every_with_an_optimizer_that_cannot_build_its_update_twice():
    """An optimizer whose ``apply_gradients`` fails when called again: the train op is built as
    without the watch's sampling (recorded on every run, the rows of every 10th step kept)."""

    class BuildsOnce(v1.train.GradientDescentOptimizer):
        built = 0

        def _finish(self, update_ops, name_scope):
            BuildsOnce.built += 1
            if BuildsOnce.built > 1:
                raise RuntimeError("built twice")
            return super()._finish(update_ops, name_scope)

    graph = tf.Graph()
    with graph.as_default(), auditor.watch(summary=False, every=10) as audit:
        rng = np.random.RandomState(0)
        x = tf.constant(rng.randn(8, 3).astype("float32"))
        w = v1.get_variable("w", initializer=rng.randn(3, 1).astype("float32"))
        train_op = BuildsOnce(0.01).minimize(tf.reduce_mean(tf.square(tf.matmul(x, w))))
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(25):
                sess.run(train_op)
    assert BuildsOnce.built == 2
    assert [r.step for r in audit.steps] == [0, 10, 20] and audit.findings == []
