"""Thread-safety and re-entrancy: concurrent watches in threads, nesting, repeated entry."""
import gc
import threading

import numpy as np
import pytest
import tensorflow as tf
import keras

import auditor
from auditor import testing
from audit_helpers import data, make_net, standard_step

tf_keras = pytest.importorskip("tf_keras")


def _run_threads(workers, timeout=240):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
        return run

    threads = [threading.Thread(target=wrap(w)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    assert not errors, errors


def _keras3_worker(name, steps, results, barrier, mode="function"):
    def work():
        model = make_net(seed=len(name))
        opt = keras.optimizers.SGD(0.01, name=f"sgd_{name}")
        x, y = (tf.constant(a) for a in data())
        step = lambda: standard_step(model, opt, x, y)  # noqa: E731
        if mode == "function":
            step = tf.function(step)
        with auditor.watch(summary=False) as audit:
            barrier.wait(timeout=60)
            for k in range(steps):
                step()
                if k == 1:
                    barrier.wait(timeout=60)  # both threads are mid-training here
        results[name] = (audit, model, opt)
    return work


def _tf_keras_worker(name, steps, results, barrier):
    def work():
        tf_keras.utils.set_random_seed(5)
        model = tf_keras.Sequential([tf_keras.layers.Dense(3, input_shape=(4,)), tf_keras.layers.Dense(1)])
        opt = tf_keras.optimizers.SGD(0.01, name=f"tfk_{name}")
        x, y = (tf.constant(a) for a in data())

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(x) - y))
            variables = model.trainable_variables
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables))

        with auditor.watch(summary=False) as audit:
            barrier.wait(timeout=60)
            for k in range(steps):
                step()
                if k == 1:
                    barrier.wait(timeout=60)
        results[name] = (audit, model, opt)
    return work


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_two_threads_record_only_their_own_steps(mode):
    results, barrier = {}, threading.Barrier(2)
    _run_threads([_keras3_worker("a", 4, results, barrier, mode), _keras3_worker("b", 7, results, barrier, mode)])
    for name, steps in (("a", 4), ("b", 7)):
        audit, model, opt = results[name]
        assert len(audit.steps) == steps == int(opt.iterations.numpy())
        assert {r.optimizer for r in audit.steps} == {f"net/sgd_{name}"}  # the name given to the optimizer
        own = {v.path for v in model.trainable_variables}
        assert all(set(r.var_norms) <= own for r in audit.steps)
        assert audit.findings == []
    assert not testing.patches_installed()


def test_keras3_and_tf_keras_threads_concurrently():
    results, barrier = {}, threading.Barrier(2)
    _run_threads([_keras3_worker("k3", 5, results, barrier), _tf_keras_worker("k2", 3, results, barrier)])
    k3, k2 = results["k3"][0], results["k2"][0]
    assert [r.step for r in k3.steps] == list(range(5))
    assert [r.step for r in k2.steps] == list(range(3))
    assert {r.optimizer for r in k3.steps} == {"net/sgd_k3"} and {r.optimizer[-6:] for r in k2.steps} == {"tfk_k2"}
    assert k3.findings == [] and k2.findings == []


def test_one_thread_exits_while_the_other_still_trains():
    """The first watch to exit must not restore the patches under the second one."""
    results = {}
    first_done = threading.Event()
    started = threading.Barrier(2)

    def short():
        model = make_net(seed=1)
        opt = keras.optimizers.SGD(0.01, name="short")
        x, y = (tf.constant(a) for a in data())
        with auditor.watch(summary=False) as audit:
            started.wait(timeout=60)
            standard_step(model, opt, x, y)
        results["short"] = audit
        first_done.set()

    def long():
        model = make_net(seed=2)
        opt = keras.optimizers.SGD(0.01, name="long")
        x, y = (tf.constant(a) for a in data())
        step = tf.function(lambda: standard_step(model, opt, x, y))
        with auditor.watch(summary=False) as audit:
            started.wait(timeout=60)
            step()
            assert first_done.wait(timeout=120)
            assert testing.patches_installed()
            for _ in range(3):
                step()  # after the other watch exited
        results["long"] = audit

    _run_threads([short, long])
    assert len(results["short"].steps) == 1
    assert [r.step for r in results["long"].steps] == [0, 1, 2, 3]
    assert not testing.patches_installed()


def test_exception_in_one_thread_does_not_disturb_the_other():
    results, barrier = {}, threading.Barrier(2)

    def failing():
        model = make_net(seed=1)
        opt = keras.optimizers.SGD(0.01)
        x, y = (tf.constant(a) for a in data())
        try:
            with auditor.watch(summary=False) as audit:
                barrier.wait(timeout=60)
                standard_step(model, opt, x, y)
                barrier.wait(timeout=60)  # the other thread is mid-training
                raise ValueError("boom")
        except ValueError:
            results["failing"] = audit

    results_ok = {}
    _run_threads([failing, _keras3_worker("ok", 4, results_ok, barrier)])
    assert len(results["failing"].steps) == 1
    assert len(results_ok["ok"][0].steps) == 4


def test_nested_watches_both_record_tf_keras_and_eager():
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(4,))])
    opt = tf_keras.optimizers.legacy.SGD(0.01)
    x, y = (tf.constant(a) for a in data())
    y = tf.concat([y, y], 1)

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    with auditor.watch(summary=False) as outer:
        step()
        with auditor.watch(summary=False) as middle:
            step()
            with auditor.watch(summary=False) as inner:
                step()
            step()
        step()
    assert [r.step for r in outer.steps] == [0, 1, 2, 3, 4]
    assert [r.step for r in middle.steps] == [1, 2, 3]
    assert [r.step for r in inner.steps] == [2]
    assert outer.steps[2].global_norm == inner.steps[0].global_norm
    assert outer.findings == middle.findings == inner.findings == []


def test_repeated_entry_leaves_no_patch_and_no_growth():
    model, x, y = make_net(), *(tf.constant(a) for a in data())
    opt = keras.optimizers.SGD(0.01)
    model.compile(opt, "mse")  # watch(model) re-enables the function traced in the first watch
    step = tf.function(lambda: standard_step(model, opt, x, y))
    originals = [getattr(owner, attr) for owner, attr in testing.patch_targets()]
    from tensorflow.python.training import optimizer as v1_optimizer

    v1_original = v1_optimizer.Optimizer.__dict__["apply_gradients"]
    gc.collect()  # probes of earlier tests' dead optimizers
    before = testing.census()["probes"]
    sizes = []
    # Everything alive now is set aside from the collections below: each then scans only what this
    # loop made (a full collection of the whole suite's heap took ~3 s each late in the suite).
    gc.freeze()
    try:
        _repeat_watches(model, opt, x, y, step, originals, v1_optimizer, v1_original, sizes)
    finally:
        gc.unfreeze()
    assert sizes[-1] == sizes[2], sizes  # no growth in probes, traced probes or clip memory
    assert sizes[-1][0] <= before + 2  # one probe per apply site (tf.function and eager)
    assert int(opt.iterations.numpy()) == 12 + 6
    assert np.isfinite(model.trainable_variables[0].numpy()).all()


def _repeat_watches(model, opt, x, y, step, originals, v1_optimizer, v1_original, sizes):
    for k in range(12):
        with auditor.watch(model, summary=False) as audit:
            step()
            if k % 2:
                standard_step(model, opt, x, y)  # eager too
        assert len(audit.steps) == 1 + k % 2
        census = testing.census()
        assert not testing.patches_installed() and census["live"] == 0 and census["watches"] == 0
        assert [getattr(owner, attr) for owner, attr in testing.patch_targets()] == originals
        assert v1_optimizer.Optimizer.__dict__["apply_gradients"] is v1_original
        gc.collect()
        census = testing.census()
        sizes.append((census["probes"], census["traced"], census["clips"]))


def test_plain_watch_reenters_a_function_traced_in_an_earlier_watch():
    """A loop that opens watch() per epoch around one tf.function records every epoch (the site
    traced in epoch 0 is re-enabled on this thread); a plain watch in another thread does not
    pick it up."""
    model, x, y = make_net(), *(tf.constant(a) for a in data())
    opt = keras.optimizers.SGD(0.01)
    step = tf.function(lambda: standard_step(model, opt, x, y))
    counts = []
    for _ in range(3):
        with auditor.watch(summary=False) as audit:
            for _ in range(4):
                step()
        counts.append([r.step for r in audit.steps])
    assert counts == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]

    other = {}

    def elsewhere():
        with auditor.watch(summary=False) as audit:
            started.set()
            finished.wait(60)
        other["steps"] = len(audit.steps)

    started, finished = threading.Event(), threading.Event()
    thread = threading.Thread(target=elsewhere)
    thread.start()
    assert started.wait(60)
    try:
        with auditor.watch(summary=False) as mine:
            step()
            step()
    finally:
        finished.set()
        thread.join(60)
    assert len(mine.steps) == 2 and other == {"steps": 0}


def test_nested_watches_keep_their_own_every_and_histogram_every(tmp_path):
    """The shared site records at the smaller `every`; each watch still keeps only its own steps
    (and its own histograms)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, x, y = make_net(), *(tf.constant(a) for a in data())
    opt = keras.optimizers.SGD(0.01)
    step = tf.function(lambda: standard_step(model, opt, x, y))
    with auditor.watch(summary=False, every=3, logdir=str(tmp_path / "outer"), histogram_every=6) as outer:
        with auditor.watch(summary=False, logdir=str(tmp_path / "inner"), histogram_every=2) as inner:
            for _ in range(12):
                step()
    assert [r.step for r in inner.steps] == list(range(12))
    assert [r.step for r in outer.steps] == [0, 3, 6, 9]

    def hist_steps(logdir):
        acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
        acc.Reload()
        tag = next(t for t in acc.Tags()["tensors"] if t.endswith("/grad_hist"))
        return [e.step for e in acc.Tensors(tag)]

    assert hist_steps(tmp_path / "inner") == [0, 2, 4, 6, 8, 10]
    assert hist_steps(tmp_path / "outer") == [0, 6]
