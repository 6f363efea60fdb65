"""Sinks: streamed JSONL, TensorBoard events read back with TensorBoard's EventAccumulator,
the ``auditor`` logger, and ``gradlint report`` (no TensorFlow; --plot writes a PNG)."""
import json
import logging
import subprocess
import sys

import keras
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import auditor
from audit_helpers import data, make_net, standard_step


def _train(tmp_path, use_b, steps=12, **opt):
    model = make_net(use_b=use_b)
    optimizer = keras.optimizers.SGD(0.01, **opt)
    x, y = (tf.constant(a) for a in data())
    jsonl, logdir = tmp_path / "run.jsonl", tmp_path / "tb"
    with auditor.watch(summary=False, jsonl=jsonl, logdir=str(logdir), histogram_every=5) as audit:
        for _ in range(steps):
            standard_step(model, optimizer, x, y)
    return audit, jsonl, logdir


def test_tensorboard_events_read_back(tmp_path):
    audit, _, logdir = _train(tmp_path, use_b=False, global_clipnorm=1e-3)
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    # TF2 summaries are stored as tensors
    tensor_tags = set(tags["tensors"])
    opt = audit.steps[0].optimizer
    kernel = next(p for p in audit.steps[0].var_norms if p.endswith("/a/kernel"))
    assert f"auditor/{opt}/global_norm" in tensor_tags and f"auditor/{opt}/clip_ratio" in tensor_tags
    assert f"auditor/{opt}/none_gradients" in tensor_tags
    assert f"{kernel}/grad_norm" in tensor_tags  # grouped by layer path
    events = acc.Tensors(f"auditor/{opt}/global_norm")
    assert [e.step for e in events] == list(range(12))
    expected = [r.global_norm for r in audit.steps]
    assert [float(tf.make_ndarray(e.tensor_proto)) for e in events] == [float(tf.constant(v, tf.float32)) for v in expected]
    nones = acc.Tensors(f"auditor/{opt}/none_gradients")
    assert {float(tf.make_ndarray(e.tensor_proto)) for e in nones} == {2.0}  # b's kernel and bias
    hist = acc.Tensors(f"{kernel}/grad_hist")
    assert [e.step for e in hist] == [0, 5, 10]  # optimizer steps that are multiples of 5
    assert f"{kernel.rsplit('/', 1)[0]}/b/kernel/grad_hist" not in tensor_tags  # None gradient: no histogram
    texts = [t for t in tensor_tags if t.startswith("auditor/findings/")]
    codes = {t.rsplit("/", 1)[1] for t in texts}
    assert codes == {f.code for f in audit.findings} == {"GRD101", "GRD107"}
    (verdict,) = acc.Tensors("auditor/findings")
    assert tf.make_ndarray(verdict.tensor_proto).item().decode() == "2 finding(s): GRD101, GRD107"
    (text,) = acc.Tensors("auditor/findings/GRD101")
    assert tf.make_ndarray(text.tensor_proto).item().decode().startswith("**GRD101 none-gradient**")
    assert acc.SummaryMetadata("auditor/findings/GRD101").plugin_data.plugin_name == "text"
    assert acc.SummaryMetadata(f"{kernel}/grad_hist").plugin_data.plugin_name == "histograms"
    assert acc.SummaryMetadata(f"auditor/{opt}/global_norm").plugin_data.plugin_name == "scalars"


def _verdicts(logdir):
    """The verdicts TensorBoard's server shows (its plugin accumulator, which honours restarts)."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator as Served

    acc = Served(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    return [tf.make_ndarray(e.tensor_proto).item().decode() for e in acc.Tensors("auditor/findings")]


def test_a_reused_logdir_shows_the_last_runs_verdict(tmp_path):
    """A clean run, then a run with findings into the same logdir: TensorBoard's reader keeps one
    verdict (the newest) under auditor/findings, not the old "no findings" beside new findings."""
    _, _, logdir = _train(tmp_path, use_b=True, steps=2)
    assert _verdicts(logdir) == ["no findings"]
    _train(tmp_path, use_b=False, steps=2)  # the same logdir
    assert len(list(logdir.iterdir())) == 2
    assert _verdicts(logdir) == ["1 finding(s): GRD101"]


def test_whole_run_findings_and_tf_names_in_tensorboard(tmp_path):
    """A whole-run finding (GRD102) reads "(whole run)", not "(step None)"; a TF variable name's
    ``:0`` is not in its tags."""
    import sonnet as snt

    model, opt = snt.Linear(1, name="lin"), snt.optimizers.SGD(0.0)  # lr 0: nothing changes (GRD102)
    x = tf.constant(data()[0])

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x)))
        params = model.trainable_variables
        opt.apply(tape.gradient(loss, params), params)

    step()
    with auditor.watch(summary=False, logdir=str(tmp_path / "tb")) as audit:
        for _ in range(3):
            step()
    assert [f.code for f in audit.findings] == ["GRD102"] and audit.findings[0].step is None
    assert "exactly 0" not in audit.findings[0].message  # real gradients, a zero learning rate
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    acc.Reload()
    (text,) = acc.Tensors("auditor/findings/GRD102")
    assert "(whole run)" in tf.make_ndarray(text.tensor_proto).item().decode()
    tags = acc.Tags()["tensors"]
    assert "lin/w/grad_norm" in tags and not any(":0" in t for t in tags)


def test_jsonl_streams_while_training(tmp_path):
    model = make_net()
    optimizer = keras.optimizers.SGD(0.01)
    x, y = (tf.constant(a) for a in data())
    path = tmp_path / "live.jsonl"
    with auditor.watch(summary=False, jsonl=path) as audit:
        for _ in range(3):
            standard_step(model, optimizer, x, y)
        audit.steps  # a host point: records drained, so already on disk
        live = [json.loads(line) for line in path.read_text().splitlines()]
        assert [line["type"] for line in live] == ["run", "step", "step", "step"]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[-1]["type"] == "end" and lines[-1]["recorded_steps"] == 3
    assert audit.findings == []


def test_findings_go_to_the_auditor_logger(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="auditor"):
        _train(tmp_path, use_b=False, steps=2)
    messages = [r.getMessage() for r in caplog.records if r.name == "auditor"]
    assert len(messages) == 1 and messages[0].startswith("GRD101 none-gradient")


def test_clean_run_logs_nothing(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="auditor"):
        audit, _, _ = _train(tmp_path, use_b=True, steps=3)
    assert audit.findings == []
    assert [r for r in caplog.records if r.name == "auditor"] == []


def test_gradlint_report_without_tensorflow(tmp_path):
    audit, jsonl, _ = _train(tmp_path, use_b=False, global_clipnorm=1e-3)
    png = tmp_path / "run.png"
    code = ("import sys; from gradlint.cli import main; rc = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "report", str(jsonl), "--plot", str(png)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # findings present
    assert "12 recorded step(s)" in proc.stdout
    assert "GRD101 none-gradient" in proc.stdout and "GRD107 clipping-saturated" in proc.stdout
    assert next(p for p in audit.steps[0].var_norms if p.endswith("/a/kernel")) in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_gradlint_report_clean_run_and_bad_file(tmp_path):
    _, jsonl, _ = _train(tmp_path, use_b=True, steps=3)
    from auditor.report_command import main

    assert main(str(jsonl)) == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert main(str(bad)) == 2


def test_jsonl_steps_in_order_with_several_apply_sites(tmp_path):
    """A per-variable apply loop has one site per variable; the file still lists steps in order."""
    model = make_net()
    opt = keras.optimizers.SGD(0.01)
    opt.build(model.trainable_variables)
    x, y = (tf.constant(a) for a in data())

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        for g, v in zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables):
            opt.apply_gradients([(g, v)])

    path = tmp_path / "per_variable.jsonl"
    with auditor.watch(summary=False, jsonl=path) as audit:
        for _ in range(5):
            step()
    with open(path) as lines:
        steps = [json.loads(line)["step"] for line in lines if json.loads(line)["type"] == "step"]
    assert steps == list(range(30)) and "GRD103" in [f.code for f in audit.findings]


def test_bad_logdir_fails_on_entry_and_closes_the_jsonl_sink(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    path = tmp_path / "run.jsonl"
    watch = auditor.watch(summary=False, jsonl=path, logdir=str(not_a_dir / "tb"))
    try:
        watch.__enter__()
    except OSError:
        pass
    else:  # pragma: no cover - reported below
        watch.__exit__(None, None, None)
        raise AssertionError("a logdir under a regular file was accepted")
    kinds = [json.loads(line)["type"] for line in path.read_text().splitlines()]
    assert kinds == ["run", "end"]  # flushed and closed, not left open


def test_report_plot_draws_the_recorded_numbers(tmp_path):
    """The plot's curves are the JSONL's numbers and each finding with a step has its marker."""
    import matplotlib.pyplot as plt
    import numpy as np

    from auditor import plot, report_command

    audit, jsonl, _ = _train(tmp_path, use_b=False, global_clipnorm=1e-3)
    run = report_command.read_run(str(jsonl))
    fig = plot.figure(run, "run")
    ax_norm, ax_ratio, ax_vars = fig.axes[:3]
    steps = [r.step for r in audit.steps]
    curves = {line.get_label(): line for line in ax_norm.get_lines()}
    before = next(line for label, line in curves.items() if "before clipping" in label)
    after = next(line for label, line in curves.items() if "after clipping" in label)
    np.testing.assert_allclose(before.get_xdata(), steps)
    np.testing.assert_allclose(before.get_ydata(), [r.global_norm for r in audit.steps], rtol=1e-6)
    np.testing.assert_allclose(after.get_ydata(), [r.clipped_norm for r in audit.steps], rtol=1e-6)
    ratio = [line for line in ax_ratio.get_lines() if line.get_label() == audit.steps[0].optimizer][0]
    np.testing.assert_allclose(ratio.get_ydata(), [r.clip_ratio for r in audit.steps], rtol=1e-6)
    assert all(r < 0.01 for r in ratio.get_ydata())  # saturated clipping is visible at a glance
    variable_lines = [line.get_label() for line in ax_vars.get_lines() if line.get_linestyle() != "-."]
    assert variable_lines and all(label in audit.steps[0].var_norms for label in variable_lines)
    marked = {line.get_xdata()[0] for line in ax_vars.get_lines() if line.get_linestyle() == "-."}
    assert marked == {f.step for f in audit.findings if f.step is not None} and marked
    plt.close(fig)


def test_audit_demo_runs_and_writes_its_outputs(tmp_path):
    """`make audit-demo`'s script: planted bugs found, clean twin silent, logs and plot written."""
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, os.path.join(root, "fixtures", "example", "audit_demo.py"),
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GRD101 none-gradient" in proc.stdout and "GRD107 clipping-saturated" in proc.stdout
    assert (tmp_path / "buggy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "clean.jsonl").exists() and (tmp_path / "buggy.jsonl").exists()
    for name in ("buggy", "clean"):
        acc = EventAccumulator(str(tmp_path / "tb" / name), size_guidance={"tensors": 0})
        acc.Reload()
        assert any(t.endswith("/grad_hist") for t in acc.Tags()["tensors"])
