"""``gradlint report`` on runs that did not end well: a killed run (no end line) gets its findings
computed from its step lines and says it did not finish; a last line cut short is a warning; a
file that is not an auditor run, and a plot that cannot be written, are ``error: ...`` with exit
status 2. The run files are recorded by real watched training runs."""
import json

import numpy as np
import pytest
import tensorflow as tf
import keras

import auditor
from audit_helpers import data, make_net, standard_step
from auditor.report_command import main


def _record(path, nan_from=None, steps=30, clipnorm=None):
    model = make_net()
    opt = keras.optimizers.SGD(0.01, global_clipnorm=clipnorm)
    x, y = data()
    x_nan = x.copy()
    x_nan[3, 1] = np.nan
    step = tf.function(lambda xb: standard_step(model, opt, xb, tf.constant(y)))
    with auditor.watch(summary=False, jsonl=path, history=8):
        for k in range(steps):
            step(tf.constant(x_nan if nan_from is not None and k >= nan_from else x))
    return path.read_text().splitlines(keepends=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return {"nan": _record(out / "nan.jsonl", nan_from=10), "clean": _record(out / "clean.jsonl"),
            "clipped": _record(out / "clipped.jsonl", clipnorm=1e-4)}


def _killed(lines):
    """The lines a run killed before its exit leaves: the run line and the step lines."""
    return [line for line in lines if json.loads(line)["type"] in ("run", "step")]


def _write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("".join(lines))
    return str(path)


def test_a_killed_run_gets_its_findings_from_the_step_lines(runs, tmp_path, capsys):
    finished = _write(tmp_path, "finished.jsonl", runs["nan"])
    assert main(finished) == 1
    complete = capsys.readouterr().out
    assert "did not finish" not in complete
    killed = _write(tmp_path, "killed.jsonl", _killed(runs["nan"]))
    assert main(killed) == 1
    out = capsys.readouterr().out
    assert "the run did not finish" in out
    assert "GRD104 non-finite-gradient (step 10)" in out
    assert "NaN/Inf gradients on 20 step(s) of 30" in out  # exact, though history=8
    clipped = _write(tmp_path, "clipped.jsonl", _killed(runs["clipped"]))
    assert main(clipped) == 1
    assert "GRD107 clipping-saturated" in capsys.readouterr().out


def test_a_killed_clean_run_has_no_findings_and_says_it_did_not_finish(runs, tmp_path, capsys):
    killed = _write(tmp_path, "killed.jsonl", _killed(runs["clean"]))
    assert main(killed) == 0
    out = capsys.readouterr().out
    assert "the run did not finish" in out and "no findings" in out and "30 recorded step(s)" in out


def test_a_last_line_cut_short_is_a_warning(runs, tmp_path, capsys):
    lines = _killed(runs["nan"])
    cut = _write(tmp_path, "cut.jsonl", lines[:-1] + [lines[-1][: len(lines[-1]) // 2]])
    assert main(cut) == 1
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "cut short" in captured.err
    assert "29 recorded step(s)" in captured.out and "GRD104" in captured.out


def test_a_broken_line_inside_the_file_is_an_error(runs, tmp_path, capsys):
    lines = list(runs["clean"])
    lines[3] = lines[3][:20] + "\n"
    assert main(_write(tmp_path, "broken.jsonl", lines)) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("text", ['{"hello": 1}\n', "", '[1, 2]\n', '{"type": "step", "step": 0}\n'],
                         ids=["other-json", "empty", "not-object", "no-run-line"])
def test_a_file_that_is_not_an_auditor_run_is_rejected(tmp_path, capsys, text):
    assert main(_write(tmp_path, "other.jsonl", [text])) == 2
    err = capsys.readouterr().err
    assert "error:" in err and ("not an auditor run" in err or "not a JSON object" in err)


@pytest.mark.parametrize("target", ["nodir/x.png", "x.txt"])
def test_a_plot_that_cannot_be_written_is_an_error(runs, tmp_path, capsys, target):
    run = _write(tmp_path, "run.jsonl", runs["clean"])
    assert main(run, str(tmp_path / target)) == 2
    captured = capsys.readouterr()
    assert "gradlint report: error: cannot write the plot" in captured.err
    assert "Traceback" not in captured.err
