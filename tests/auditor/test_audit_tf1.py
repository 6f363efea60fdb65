"""TF1 graph mode (``tf.compat.v1.train.Optimizer`` + ``Session``): run ``tf1_script.py`` in a
subprocess per mode (eager execution cannot be re-enabled in a process) and check its JSON."""
import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "tf1_script.py")
CLEAN = ("partial", "full", "clip")


@pytest.fixture(scope="module", params=["disable_eager", "v1_behavior", "graph"])
def result(request):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, SCRIPT, request.param], capture_output=True, text=True,
                          timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("JSON:")][-1]
    return json.loads(line[len("JSON:"):])


def test_graph_mode_and_variable_kind(result):
    assert result["executing_eagerly"] is (result["mode"] == "graph")  # eager stays on outside the graphs
    expected = "RefVariable" if result["mode"] == "v1_behavior" else "ResourceVariable"
    for name in CLEAN + ("none_grad",):
        assert result[name]["watched"]["variable_kinds"] == [expected]


def test_one_record_per_session_run(result):
    for name in CLEAN + ("none_grad",):
        steps = result[name]["watched"]["steps"]
        assert [s["step"] for s in steps] == [0, 1, 2, 3, 4]  # the run after the watch is not recorded
        assert all(s["optimizer"] in ("GradientDescentOptimizer", "AdamOptimizer") for s in steps)
        assert all(s["global_norm"] > 0 for s in steps)


def test_partial_update_reports_exactly_the_trained_variables(result):
    watched = result["partial"]["watched"]
    assert watched["findings"] == []
    for step in watched["steps"]:
        assert step["changed_vars"] == ["W2:0", "b2:0"]  # a snapshot aliasing a RefVariable would say []
        assert sorted(step["var_norms"]) == ["W2:0", "b2:0"]
    if result["mode"] == "v1_behavior":
        assert "tape_partial" not in result  # GradientTape cannot differentiate RefVariables
        return
    # The same partial update through a GradientTape in the graph (the tape also saw W1 and b1).
    tape_steps = result["tape_partial"]["watched"]["steps"]
    assert len(tape_steps) == 5 and result["tape_partial"]["watched"]["findings"] == []
    assert all(s["changed_vars"] == ["W2:0", "b2:0"] for s in tape_steps)
    assert result["tape_partial"]["watched"]["weights"] == result["tape_partial"]["plain"]["weights"]


def test_clean_twins_have_no_findings(result):
    for name in CLEAN:
        assert result[name]["watched"]["findings"] == [], name
    full = result["full"]["watched"]["steps"]
    assert all(s["changed_vars"] == ["W1:0", "b1:0", "W2:0", "b2:0"] for s in full)
    assert all(s["clip_ratio"] is None for s in full)


def test_global_step_still_incremented(result):
    assert result["full"]["watched"]["global_step"] == result["full"]["plain"]["global_step"] == 5
    assert result["resumed"]["watched"]["global_step"] == result["resumed"]["plain"]["global_step"] == 105
    assert result["resumed"]["watched"]["weights"] == result["resumed"]["plain"]["weights"]


def test_steps_follow_the_global_step_of_a_resumed_run(result):
    resumed = result["resumed"]["watched"]
    assert [s["step"] for s in resumed["steps"]] == [100, 101, 102, 103, 104]
    assert resumed["findings"] == []


@pytest.mark.parametrize("name, first", [("full", 0), ("resumed", 100)])
def test_gradient_histograms_every_n_steps(result, name, first):
    hists = result[name]["watched"]["histograms"]
    sizes = {"W1": 32, "b1": 8, "W2": 8, "b2": 1}  # TensorBoard tags drop the TF name's ":0"
    assert set(hists) == set(sizes)
    for var, by_step in hists.items():
        assert by_step == {str(first + k): sizes[var] for k in (0, 2, 4)}  # every element counted once


def test_raise_on_grd101_raises_from_the_first_run_of_the_train_op(result):
    assert result["raised"] == "GRD101"
    assert result["done_before_raise"] == ["init"]


def test_user_clipping_ratio(result):
    steps = result["clip"]["watched"]["steps"]
    for s in steps:
        assert 0 < s["clip_ratio"] < 1
        assert s["global_norm"] > s["applied_norm"]
        assert all(abs(n - 0.05) < 1e-5 for n in s["var_norms"].values())  # clip_by_norm(g, 0.05) each


def test_planted_none_gradient_fires_grd101(result):
    watched = result["none_grad"]["watched"]
    assert watched["findings"] == [{"code": "GRD101", "variables": ["unused:0"]}]
    assert all(s["none_vars"] == ["unused:0"] for s in watched["steps"])


def test_numerics_identical_and_patches_restored(result):
    for name in CLEAN + ("none_grad",):
        assert result[name]["watched"]["weights"] == result[name]["plain"]["weights"], name
    assert result["partial"]["plain"]["weights"] != result["full"]["plain"]["weights"]  # the hash can differ
    assert result["patches_left"] is False
    assert result["apply_gradients_restored"] is True


def _eager_v1(watched, with_unused):
    import tensorflow as tf

    import auditor

    v = tf.Variable([1.0, 2.0], name="v")
    w = tf.Variable([3.0], name="w")
    variables = [v, w] if with_unused else [v]
    opt = tf.compat.v1.train.MomentumOptimizer(0.1, 0.9)

    def run():
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(v * v)
            grads = tape.gradient(loss, variables)
            opt.apply_gradients(zip(grads, variables))

    if not watched:
        run()
        return None, v.numpy()
    with auditor.watch(summary=False) as audit:
        run()
    return audit, v.numpy()


def test_v1_optimizer_used_eagerly():
    """A TF1 optimizer in an eager TF2 program: one record per apply, same numerics."""
    planted, _ = _eager_v1(True, with_unused=True)
    assert [r.step for r in planted.steps] == [0, 1, 2]
    assert [(f.code, f.variables) for f in planted.findings] == [("GRD101", ["w:0"])]
    clean, watched_v = _eager_v1(True, with_unused=False)
    assert clean.findings == [] and all(r.changed_vars == ["v:0"] for r in clean.steps)
    _, plain_v = _eager_v1(False, with_unused=False)
    assert watched_v.tobytes() == plain_v.tobytes()


@pytest.mark.parametrize("code", ["GRD102", "GRD103", "GRD104", "GRD105", "GRD106", "GRD107", "GRD108"])
def test_each_finding_planted_fires_and_clean_twin_is_silent(result, code):
    case = result["findings"][code]
    assert code in case["planted"]["codes"], case
    assert case["clean"] == {"codes": [], "records": 12}  # one record per session run


def test_large_sites_compare_on_planned_runs_and_stay_exact(result):
    """A site larger than the auditor copies on every run: compared on every run until each
    variable was seen changing, then on the first 10 recorded runs and every 20th (changes_period)."""
    clean, late, frozen = (result["planned"][k] for k in ("clean", "late", "frozen"))
    assert clean["steps"] == list(range(30)) and clean["codes"] == []
    assert clean["checked"] == list(range(10)) + [20]
    # the big kernel changes only from run 15 on: compared on every run until then, no GRD102
    assert late["codes"] == [] and late["checked"] == list(range(16)) + [20]
    assert late["big_changed"] == [15, 20]
    # never changes: compared on every run, reported
    assert frozen["codes"] == ["GRD102"] and frozen["checked"] == list(range(30))


def test_rows_are_collected_from_the_sessions_that_ran_them(result):
    """Runs through Session.run and make_callable beyond a ring's capacity, a second session of
    the same graph (the step count continues) and a MonitoredSession: every run is recorded once,
    nothing lost, and the auditor's variables stay out of the graph's collections."""
    sessions = result["sessions"]
    assert sessions["steps"] == list(range(2 * 1100 + 3))
    assert sessions["lost"] == 0 and sessions["in_collections"] == []
    assert sessions["changed"] == ["W2:0", "b2:0"]
    assert sessions["monitored"] == list(range(5))


def test_tf_keras_fit_with_a_tf1_optimizer_in_graph_mode(result):
    if result["mode"] != "disable_eager":
        pytest.skip("tf_keras trains in a session only without eager execution")
    assert result["keras_fit"] == {"steps": list(range(12)), "lost": 0}  # 4 batches x 3 epochs


@pytest.mark.parametrize("module_name", ["tensorflow.compat.v1", "tensorflow._api.v2.compat.v1"])
def test_your_clipping_is_seen_through_either_compat_v1_module(module_name):
    """Importing tf_keras makes TensorFlow replace the ``tf.compat.v1`` wrapper; code that took
    the first one (``import tensorflow.compat.v1 as tf`` before) still has its clipping seen."""
    import tensorflow as tf
    import tf_keras  # noqa: F401  (replaces tf.compat.v1)

    import auditor

    v1 = sys.modules[module_name]
    graph = tf.Graph()
    with graph.as_default(), auditor.watch(summary=False) as audit:
        w = v1.get_variable("w", initializer=[[1.0], [1.0], [1.0]])
        loss = tf.reduce_sum(tf.square(tf.matmul(tf.ones([2, 3]), w)))
        opt = v1.train.GradientDescentOptimizer(0.1)
        train_op = opt.apply_gradients([(v1.clip_by_norm(g, 0.05), v) for g, v in opt.compute_gradients(loss)])
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(train_op)
    assert len(audit.steps) == 1 and 0 < audit.steps[0].clip_ratio < 1


def test_a_large_site_of_an_eagerly_used_v1_optimizer_is_planned_on_the_host():
    """Outside a session the host plans a large site's copies, by the same rule as the graph:
    every run until each variable changed, then the first 10 recorded runs and every 20th."""
    import numpy as np
    import tensorflow as tf

    import auditor

    rng = np.random.RandomState(0)
    x = tf.constant(rng.randn(4, 300).astype("float32"))
    big = tf.Variable(rng.randn(300, 256).astype("float32") * 0.01, name="big")
    opt = tf.compat.v1.train.GradientDescentOptimizer(0.1)
    with auditor.watch(summary=False, thresholds={"changes_period": 20}) as audit:
        for _ in range(30):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(tf.matmul(x, big)))
            opt.apply_gradients([(tape.gradient(loss, big), big)])
    assert [r.step for r in audit.steps] == list(range(30))
    assert [r.step for r in audit.steps if r.changed_vars is not None] == list(range(10)) + [20]
