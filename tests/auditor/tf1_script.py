"""TF1 graph-mode scenarios for test_audit_tf1.py, run as a subprocess (eager execution cannot be
re-enabled in a process). Usage: ``python tf1_script.py MODE`` with MODE one of

* ``disable_eager``: ``tf.compat.v1.disable_eager_execution()`` (resource variables),
* ``v1_behavior``: ``tf.compat.v1.disable_v2_behavior()`` (old-style RefVariables),
* ``graph``: eager stays on; each run builds in ``tf.Graph().as_default()``.

Prints one JSON object: per scenario, the records, findings and a hash of the final weights,
with and without ``watch()``.
"""
import hashlib
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

MODE = sys.argv[1]
if MODE == "disable_eager":
    tf.compat.v1.disable_eager_execution()
elif MODE == "v1_behavior":
    tf.compat.v1.disable_v2_behavior()

import auditor  # noqa: E402
from auditor import testing  # noqa: E402

v1 = tf.compat.v1
STEPS = 5
HISTOGRAMS = ("full", "resumed")  # scenarios watched with a logdir (histogram_every=2)


def _data():
    rng = np.random.RandomState(0)
    x = rng.randn(16, 4).astype("float32")
    return x, (x @ np.array([[1.0], [-2.0], [0.5], [0.0]], "float32")).astype("float32")


def _build(scenario):
    """A 2-layer graph model (seed 003 style) and the train op for ``scenario``."""
    rng = np.random.RandomState(1)
    x, y = (tf.constant(a) for a in _data())
    W1 = v1.get_variable("W1", initializer=rng.randn(4, 8).astype("float32") * 0.5)
    b1 = v1.get_variable("b1", initializer=np.zeros(8, "float32"))
    W2 = v1.get_variable("W2", initializer=rng.randn(8, 1).astype("float32") * 0.5)
    b2 = v1.get_variable("b2", initializer=np.zeros(1, "float32"))
    pred = tf.matmul(tf.nn.relu(tf.matmul(x, W1) + b1), W2) + b2
    loss = tf.reduce_mean(tf.square(pred - y))
    if scenario == "tape_partial":  # a GradientTape in the graph; only the second layer applied
        with tf.GradientTape() as tape:
            pred = tf.matmul(tf.nn.relu(tf.matmul(x, W1) + b1), W2) + b2
            tape_loss = tf.reduce_mean(tf.square(pred - y))
        grads = tape.gradient(tape_loss, [W1, b1, W2, b2])
        return v1.train.GradientDescentOptimizer(0.05).apply_gradients(list(zip(grads[2:], [W2, b2])))
    if scenario == "partial":  # seed 003: only the second layer is trained, on purpose
        return v1.train.GradientDescentOptimizer(0.05).minimize(loss, var_list=[W2, b2])
    if scenario == "full":  # with a global step, which the train op must still increment
        return v1.train.AdamOptimizer(0.01).minimize(loss, global_step=v1.train.get_or_create_global_step())
    if scenario == "resumed":  # a run restored at global step 100: records keep those numbers
        keys = v1.GraphKeys
        step = v1.get_variable(keys.GLOBAL_STEP, shape=[], dtype=tf.int64, initializer=v1.constant_initializer(100),
                               trainable=False, collections=[keys.GLOBAL_VARIABLES, keys.GLOBAL_STEP])
        return v1.train.AdamOptimizer(0.01).minimize(loss, global_step=step)
    if scenario == "clip":
        opt = v1.train.GradientDescentOptimizer(0.05)
        gvs = opt.compute_gradients(loss, var_list=[W1, b1, W2, b2])
        return opt.apply_gradients([(v1.clip_by_norm(g, 0.05), v) for g, v in gvs])
    if scenario == "none_grad":  # a variable in var_list that the loss does not use
        unused = v1.get_variable("unused", initializer=np.ones(3, "float32"))
        return v1.train.GradientDescentOptimizer(0.05).minimize(loss, var_list=[W1, b1, W2, b2, unused])
    raise ValueError(scenario)


def _histograms(logdir):
    """{variable: {step: total bucket count}} read back with TensorBoard's EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir, size_guidance={"tensors": 0})
    acc.Reload()
    return {tag[: -len("/grad_hist")]: {e.step: float(tf.make_ndarray(e.tensor_proto)[:, 2].sum())
                                        for e in acc.Tensors(tag)}
            for tag in acc.Tags()["tensors"] if tag.endswith("/grad_hist")}


def _run(scenario, watched):
    graph = tf.Graph()
    logdir = tempfile.mkdtemp() if watched and scenario in HISTOGRAMS else None
    with graph.as_default():
        audit = auditor.watch(summary=False, logdir=logdir, histogram_every=2) if watched else None
        if audit is not None:
            audit.__enter__()
        train_op = _build(scenario)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(STEPS):
                sess.run(train_op)
            weights = sess.run(v1.trainable_variables())
            global_step = v1.train.get_global_step()
            step_value = None if global_step is None else int(sess.run(global_step))
            if audit is not None:
                audit.__exit__(None, None, None)
                sess.run(train_op)  # after the watch: trains, but is not recorded
        kinds = sorted({type(v).__name__ for v in v1.trainable_variables()})
    digest = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in weights)).hexdigest()
    out = {"weights": digest, "variable_kinds": kinds, "global_step": step_value}
    if audit is not None:
        out["steps"] = [r.to_dict() for r in audit.steps]
        out["findings"] = [{"code": f.code, "variables": sorted(f.variables)} for f in audit.findings]
    if logdir is not None:
        out["histograms"] = _histograms(logdir)
        shutil.rmtree(logdir)
    return out


def _finding_case(code, planted, steps=12):
    """One planted bug (or its clean twin) for GRD102-GRD108 in a TF1 graph: the finding codes."""
    graph = tf.Graph()
    with graph.as_default():
        with auditor.watch(summary=False) as audit:
            rng = np.random.RandomState(1)
            x_np, y_np = _data()
            if code == "GRD104" and planted:
                x_np = x_np.copy()
                x_np[3, 1] = np.nan
            if code == "GRD105" and planted:
                y_np = y_np * 1e6
            x, y = tf.constant(x_np), tf.constant(y_np)
            W1 = v1.get_variable("W1", initializer=rng.randn(4, 8).astype("float32") * 0.5)
            b1 = v1.get_variable("b1", initializer=np.zeros(8, "float32"))
            W2 = v1.get_variable("W2", initializer=rng.randn(8, 1).astype("float32") * 0.5)
            tiny = code == "GRD106" and planted
            Wb = v1.get_variable("Wb", initializer=np.full([4, 1], 1e-12 if tiny else 0.3, "float32"))
            scale = {"GRD102": 0.0, "GRD106": 1e-12}.get(code, 1.0) if planted else 1.0
            pred = tf.matmul(tf.nn.relu(tf.matmul(x, W1) + b1), W2) + scale * tf.matmul(x, Wb)
            loss = tf.reduce_mean(tf.square(pred - y))
            opt = v1.train.GradientDescentOptimizer(1e-9 if code == "GRD105" and planted else 0.01)
            everything = [W1, b1, W2, Wb]
            gvs = opt.compute_gradients(loss, var_list=everything)
            if code == "GRD107":
                clipped, _ = v1.clip_by_global_norm([g for g, _ in gvs], 1e-3 if planted else 1e3)
                gvs = list(zip(clipped, everything))
            if code == "GRD103" and planted:  # one apply per variable, all in one train op
                ops = [opt.apply_gradients([gv]) for gv in gvs]
            else:
                ops = [opt.apply_gradients(gvs)]
            second = ops
            if code == "GRD108":  # clean: freeze W1/b1 halfway (same optimizer); planted: switch sideways
                if planted:
                    ops = [opt.apply_gradients(gvs[:3])]  # W1, b1, W2 ...
                second = [opt.apply_gradients(gvs[2:])]  # ... then W2, Wb
            with v1.Session(graph=graph) as sess:
                sess.run(v1.global_variables_initializer())
                for k in range(steps):
                    sess.run(ops if k < steps // 2 else second)
        n_applies = len(audit.steps)
    return {"codes": sorted({f.code for f in audit.findings}), "records": n_applies}


def _planned_case(kind, runs=30):
    """A site with more variable elements than the auditor copies on every run (a 300x256 kernel):
    the variables are copied and compared while one was not seen changing yet, then on the
    scheduled runs (the first 10 and every 20th here). ``kind``: "clean"; "late" (the big kernel
    starts changing at run 15: its gradient is gated by a variable); "frozen" (the big kernel's
    gradient is always exactly 0)."""
    graph = tf.Graph()
    with graph.as_default():
        with auditor.watch(summary=False, thresholds={"changes_period": 20}) as audit:
            rng = np.random.RandomState(2)
            x = tf.constant(rng.randn(8, 300).astype("float32"))
            big = v1.get_variable("big", initializer=rng.randn(300, 256).astype("float32") * 0.01)
            head = v1.get_variable("head", initializer=rng.randn(256, 1).astype("float32") * 0.01)
            gate = v1.get_variable("gate", initializer=np.float32(0.0 if kind == "late" else 1.0), trainable=False)
            scale = 0.0 if kind == "frozen" else 1.0
            hidden = tf.matmul(x, big) * scale + tf.stop_gradient(tf.matmul(x, big)) * (1.0 - scale)
            hidden = hidden * gate + tf.stop_gradient(hidden) * (1.0 - gate)
            loss = tf.reduce_mean(tf.square(tf.matmul(tf.nn.relu(hidden), head) - 1.0))
            train = v1.train.GradientDescentOptimizer(0.01).minimize(loss, var_list=[big, head])
            open_gate = gate.assign(1.0)
            with v1.Session(graph=graph) as sess:
                sess.run(v1.global_variables_initializer())
                for k in range(runs):
                    if kind == "late" and k == 15:
                        sess.run(open_gate)
                    sess.run(train)
    steps = [r.to_dict() for r in audit.steps]
    return {"codes": sorted({f.code for f in audit.findings}), "steps": [s["step"] for s in steps],
            "checked": [s["step"] for s in steps if s["changed_vars"] is not None],
            "big_changed": [s["step"] for s in steps if "big:0" in (s["changed_vars"] or [])]}


def _sessions_case(runs=1100):
    """Rows kept in the graph and collected through the sessions: ``runs`` runs with
    ``Session.run`` and ``runs`` with a ``make_callable`` callable in one session (each more than
    a ring holds), 3 in a second session of the same graph (the step count continues), then a
    ``MonitoredSession`` (a finalized graph) on a second graph."""
    graph = tf.Graph()
    with graph.as_default():
        with auditor.watch(summary=False) as audit:
            train_op = _build("partial")  # no global step: the steps count the optimizer's runs
            with v1.Session(graph=graph) as sess:
                sess.run(v1.global_variables_initializer())
                for _ in range(runs):
                    sess.run(train_op)
                step = sess.make_callable(train_op)
                for _ in range(runs):
                    step()
            with v1.Session(graph=graph) as sess:
                sess.run(v1.global_variables_initializer())
                for _ in range(3):
                    sess.run(train_op)
            in_collections = [v.name for v in v1.global_variables() + v1.local_variables() if "auditor" in v.name]
    out = {"steps": [r.step for r in audit.steps], "lost": audit.lost_records, "in_collections": in_collections,
           "changed": sorted({name for r in audit.steps for name in r.changed_vars or ()})}
    graph = tf.Graph()
    with graph.as_default():
        with auditor.watch(summary=False) as audit:
            train_op = _build("full")
            with v1.train.MonitoredSession() as sess:
                for _ in range(STEPS):
                    sess.run(train_op)
    out["monitored"] = [r.step for r in audit.steps]
    return out


def _keras_fit_case():
    """tf_keras ``fit`` in graph mode with a TF1 optimizer: its steps run through the callables
    Keras makes from the session (``_make_callable_from_options``)."""
    import tf_keras

    x, y = _data()
    graph = tf.Graph()
    with graph.as_default(), auditor.watch(summary=False) as audit:
        model = tf_keras.Sequential([tf_keras.layers.Dense(8, activation="relu", input_shape=(4,)),
                                     tf_keras.layers.Dense(1)])
        model.compile(optimizer=v1.train.AdamOptimizer(0.01), loss="mse")
        model.fit(x, y, batch_size=4, epochs=3, verbose=0)
    return {"steps": [r.step for r in audit.steps], "lost": audit.lost_records}


result = {"mode": MODE, "executing_eagerly": tf.executing_eagerly()}
result["sessions"] = _sessions_case()
if MODE == "disable_eager":  # tf_keras trains in a session only without eager execution
    result["keras_fit"] = _keras_fit_case()  # first: importing tf_keras replaces tf.compat.v1
result["planned"] = {kind: _planned_case(kind) for kind in ("clean", "late", "frozen")}
result["findings"] = {code: {"planted": _finding_case(code, True), "clean": _finding_case(code, False)}
                      for code in ("GRD102", "GRD103", "GRD104", "GRD105", "GRD106", "GRD107", "GRD108")}
# GradientTape cannot differentiate RefVariables (TF itself fails), so no tape under v1_behavior.
TAPE = ("tape_partial",) if MODE != "v1_behavior" else ()
for name in ("partial", "full", "resumed", "clip", "none_grad") + TAPE:
    result[name] = {"watched": _run(name, True), "plain": _run(name, False)}

# raise_on: the planted None gradient raises AuditError from the first Session.run that ran the
# train op (not from the initializer's run before it), inside the watch
graph = tf.Graph()
with graph.as_default():
    done = []
    try:
        with auditor.watch(summary=False, raise_on="GRD101"):
            train_op = _build("none_grad")
            with v1.Session(graph=graph) as sess:
                sess.run(v1.global_variables_initializer())
                done.append("init")
                for _ in range(3):
                    sess.run(train_op)
                    done.append("train")
            done.append("session closed")
        result["raised"] = None
    except auditor.AuditError as e:
        result["raised"] = e.finding.code
    result["done_before_raise"] = done
result["patches_left"] = testing.patches_installed()
from tensorflow.python.training import optimizer as _v1_optimizer  # noqa: E402

result["apply_gradients_restored"] = "auditor" not in _v1_optimizer.Optimizer.apply_gradients.__module__
print("JSON:" + json.dumps(result))
