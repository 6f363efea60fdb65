"""Session behaviour: restoring patches, inert ops after exit, nesting, threads, argument checks."""
import threading

import pytest
import tensorflow as tf
import keras

import auditor
from auditor import testing
from audit_helpers import data, make_net, standard_step


def _patched_objects():
    return [getattr(owner, attr) for owner, attr in testing.patch_targets()]


def _setup():
    model = make_net()
    opt = keras.optimizers.SGD(0.01)
    x, y = (tf.constant(a) for a in data())
    return model, opt, x, y


def test_patches_are_installed_inside_and_restored_after():
    before = _patched_objects()
    with auditor.watch(summary=False):
        inside = _patched_objects()
        assert testing.patches_installed()
    assert all(a is not b for a, b in zip(before, inside))
    assert _patched_objects() == before


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_patches_restored_after_exception(exc):
    before = _patched_objects()
    model, opt, x, y = _setup()
    with pytest.raises(exc):
        with auditor.watch(summary=False) as audit:
            standard_step(model, opt, x, y)
            raise exc("boom")
    assert _patched_objects() == before
    assert not testing.patches_installed()
    assert len(audit.steps) == 1  # what was recorded before the exception is kept


def test_recording_stops_after_exit_and_ops_go_inert():
    model, opt, x, y = _setup()
    step = tf.function(lambda: standard_step(model, opt, x, y))
    with auditor.watch(summary=False) as audit:
        for _ in range(3):
            step()
    probes = testing.probes(audit)
    assert len(probes) == 1
    counts = [p.ring.written() for p in probes]
    for _ in range(4):
        step()  # the traced graph still contains the hook's ops
    assert [p.ring.written() for p in probes] == counts == [3]
    assert not probes[0].recording()
    assert len(audit.steps) == 3
    assert int(opt.iterations.numpy()) == 7
    assert testing.census()["live"] == 0


def test_steps_read_during_the_run_are_the_callers_own_list():
    """``audit.steps`` read during the run gives the records so far in step order, each read a
    list of its own: changing one read changes neither the watch nor a later read."""
    model, opt, x, y = _setup()
    with auditor.watch(summary=False) as audit:
        standard_step(model, opt, x, y)
        first = audit.steps
        first.clear()
        again = audit.steps
        assert [r.step for r in again] == [0] and again is not audit.steps
        standard_step(model, opt, x, y)
        assert [r.step for r in audit.steps] == [0, 1]
    assert [r.step for r in audit.steps] == [0, 1]


def test_nested_watches_both_record():
    model, opt, x, y = _setup()
    step = tf.function(lambda: standard_step(model, opt, x, y))
    with auditor.watch(summary=False) as outer:
        step()
        with auditor.watch(summary=False) as inner:
            step()
            step()
        assert testing.patches_installed()
        step()
    assert [r.step for r in outer.steps] == [0, 1, 2, 3]
    assert [r.step for r in inner.steps] == [1, 2]
    assert outer.findings == [] and inner.findings == []


def test_concurrent_watches_in_threads_see_their_own_training():
    results, errors = {}, []
    barrier = threading.Barrier(2)

    def worker(name, steps):
        try:
            model, opt, x, y = _setup()
            step = tf.function(lambda: standard_step(model, opt, x, y))
            with auditor.watch(summary=False) as audit:
                barrier.wait(timeout=60)
                for _ in range(steps):
                    step()
                barrier.wait(timeout=60)
            results[name] = (audit, int(opt.iterations.numpy()))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n, s)) for n, s in [("a", 3), ("b", 5)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors, errors
    assert len(results["a"][0].steps) == results["a"][1] == 3
    assert len(results["b"][0].steps) == results["b"][1] == 5
    assert {r.optimizer for r in results["a"][0].steps} == {"net/SGD"}


def test_watch_object_cannot_be_reentered():
    audit = auditor.watch(summary=False)
    with audit:
        pass
    with pytest.raises(RuntimeError):
        with audit:
            pass


@pytest.mark.parametrize("kwargs", [{"every": 0}, {"check_changes": "sometimes"},
                                    {"raise_on": ("GRD999",)}, {"thresholds": {"nope": 1}}])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        auditor.watch(**kwargs)


def test_summary_printed_at_exit(capsys):
    model, opt, x, y = _setup()
    with auditor.watch():
        standard_step(model, opt, x, y)
    out = capsys.readouterr().out
    assert "1 recorded apply step" in out and "net" in out and "no findings" in out


def test_watch_model_reenables_a_function_traced_in_an_earlier_watch():
    model, opt, x, y = _setup()
    model.compile(opt, "mse")  # attaches the optimizer to the model
    step = tf.function(lambda: standard_step(model, opt, x, y))
    with auditor.watch(summary=False) as first:
        step()
    step()  # inert
    with auditor.watch(summary=False) as plain:  # no model: re-enabled because this thread traced it
        step()
    with auditor.watch(model, summary=False) as second:
        step()
        step()
    assert [r.step for r in first.steps] == [0]
    assert [r.step for r in plain.steps] == [2]
    assert [r.step for r in second.steps] == [3, 4]
