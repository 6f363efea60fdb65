"""The update-to-weight ratio ||w_after - w_before|| / ||w_before|| per variable, measured on the
steps whose changes are checked (where the auditor already holds a copy of the variables), and
optimizers labelled by what they train: the ratio equals numpy's on the weights themselves; it is
in the records, the summary table, the JSONL, TensorBoard (``<path>/update_ratio``) and the plot;
twin runs in one process get the same TensorBoard tags (a GAN's two optimizers told apart by their
labels: ``test_audit_silent_cases.py``)."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import auditor
from audit_helpers import CUSTOM_MODES, compile_step, data, make_net, mse


@pytest.mark.parametrize("mode", CUSTOM_MODES)
def test_update_ratio_is_the_weights_relative_move(mode):
    model = make_net()
    opt = keras.optimizers.SGD(0.05)
    x, y = (tf.constant(a) for a in data())
    variables = model.trainable_variables

    def body():
        with tf.GradientTape() as tape:
            loss = mse(model, x, y)
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))

    step = compile_step(body, mode)
    weights = [[v.numpy().astype(np.float64) for v in variables]]
    with auditor.watch(summary=False, thresholds={"changes_first_steps": 2, "changes_period": 3}) as audit:
        for _ in range(7):
            step()
            weights.append([v.numpy().astype(np.float64) for v in variables])
    checked = [r.step for r in audit.steps if r.update_ratios is not None]
    assert checked == [0, 1, 3, 6]  # the first 2 steps, then every 3rd: only where changes are checked
    assert all(r.update_ratios is None and r.changed_vars is None for r in audit.steps if r.step not in checked)
    paths = [v.path for v in variables]
    for r in audit.steps:
        if r.update_ratios is None:
            continue
        for path, before, after in zip(paths, weights[r.step], weights[r.step + 1]):
            expected = np.linalg.norm(after - before) / np.linalg.norm(before)
            if np.isfinite(expected):
                assert r.update_ratios[path] == pytest.approx(expected, rel=1e-3), (path, r.step)
            else:  # a bias that started at exactly 0
                assert r.update_ratios[path] == float("inf")
    table = audit.variables
    kernel = next(p for p in paths if p.endswith("/a/kernel"))
    ratios = [r.update_ratios[kernel] for r in audit.steps if r.update_ratios is not None]
    assert table[kernel]["update_ratio"] == pytest.approx(float(np.exp(np.mean(np.log(ratios)))), rel=1e-6)
    assert "update_ratio" in audit.summary().splitlines()[1]


def test_no_update_ratio_without_change_checks():
    model = make_net()
    opt = keras.optimizers.SGD(0.05)
    x, y = (tf.constant(a) for a in data())
    with auditor.watch(summary=False, check_changes="off") as audit:
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = mse(model, x, y)
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    assert all(r.update_ratios is None for r in audit.steps)
    assert all(s["update_ratio"] is None for s in audit.variables.values())


def _fit_run(tmp_path, name):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = data()
    logdir = tmp_path / name
    with auditor.watch(model, summary=False, logdir=str(logdir), jsonl=tmp_path / f"{name}.jsonl") as audit:
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    return audit, acc


def test_update_ratio_in_jsonl_tensorboard_and_plot_and_twin_runs_share_tags(tmp_path):
    """Two identical fit runs in one process: Keras names them sequential/sequential_1 and
    adam/adam_1, yet the optimizer tags are the same (class and model name), so they overlay."""
    from auditor import plot, report_command

    first, acc1 = _fit_run(tmp_path, "one")
    second, acc2 = _fit_run(tmp_path, "two")
    assert first.steps[0].optimizer == second.steps[0].optimizer == "sequential/Adam"
    tags1 = {t for t in acc1.Tags()["tensors"] if t.startswith("auditor/")}
    tags2 = {t for t in acc2.Tags()["tensors"] if t.startswith("auditor/")}
    assert tags1 == tags2 and "auditor/sequential/Adam/global_norm" in tags1
    ratio_tags = [t for t in acc1.Tags()["tensors"] if t.endswith("/update_ratio")]
    assert len(ratio_tags) == 4
    checked = [r for r in first.steps if r.update_ratios is not None]
    kernel = next(p for p in checked[0].update_ratios if p.endswith("kernel"))
    events = acc1.Tensors(f"{kernel}/update_ratio")
    assert [e.step for e in events] == [r.step for r in checked]
    assert [float(tf.make_ndarray(e.tensor_proto)) for e in events] == pytest.approx(
        [r.update_ratios[kernel] for r in checked], rel=1e-6)
    lines = [json.loads(line) for line in (tmp_path / "one.jsonl").read_text().splitlines()]
    steps = [line for line in lines if line["type"] == "step"]
    assert [s["step"] for s in steps if s["update_ratios"] is not None] == [r.step for r in checked]
    assert lines[-1]["variables"][kernel]["update_ratio"] == pytest.approx(first.variables[kernel]["update_ratio"])
    run = report_command.read_run(str(tmp_path / "one.jsonl"))
    fig = plot.figure(run, "run")
    ax_update = fig.axes[3]
    drawn = {line.get_label(): line for line in ax_update.get_lines() if not line.get_label().startswith("_")}
    assert kernel in drawn
    np.testing.assert_allclose(drawn[kernel].get_ydata(), [r.update_ratios[kernel] for r in checked], rtol=1e-6)
    assert "update_ratio" in report_command.summary(run, "one.jsonl")
