"""watch()'s arguments are checked when it is called (a clear TypeError / ValueError naming the
argument and what it accepts), and nothing the auditor does at exit raises into your code: a
failure inside it is logged and kept in ``audit.errors``, the summary and the code after the
``with`` block still run."""
import contextlib
import io
import json
import logging

import keras
import pytest
import tensorflow as tf

import auditor
from audit_helpers import data, make_net, standard_step

TYPE_ERRORS = [
    ({"thresholds": {"explode_norm": "1e4"}}, "thresholds\\['explode_norm'\\] must be a number > 0"),
    ({"thresholds": {"clip_min_steps": None}}, "thresholds\\['clip_min_steps'\\] must be an int >= 1"),
    ({"thresholds": {"clip_min_steps": 2.5}}, "must be an int"),
    ({"thresholds": [1, 2]}, "thresholds must be a dict"),
    ({"raise_on": 104}, "raise_on must be a runtime code string"),
    ({"raise_on": ("GRD104", 105)}, "raise_on must be"),
    ({"every": 1.5}, "every must be an int >= 1"),
    ({"every": True}, "every must be an int"),
    ({"history": "10"}, "history must be an int >= 1 or None"),
    ({"histogram_every": None}, "histogram_every must be an int >= 0"),
    ({"check_changes": 1}, "check_changes must be 'auto', 'every' or 'off'"),
]
VALUE_ERRORS = [
    ({"thresholds": {"explode_norm": -1}}, "thresholds\\['explode_norm'\\] must be a number > 0, got -1"),
    ({"thresholds": {"vanish_fraction": 5}}, "vanish_fraction'\\] must be a number > 0 and <= 1"),
    ({"thresholds": {"changes_period": 0}}, "changes_period'\\] must be an int >= 1"),
    ({"thresholds": {"explode_ratio": float("nan")}}, "explode_ratio"),
    ({"thresholds": {"nope": 1}}, "unknown auditor threshold"),
    ({"every": 0}, "every must be an int >= 1"),
    ({"history": 0}, "history must be an int >= 1 or None"),
    ({"check_changes": "sometimes"}, "check_changes"),
    ({"raise_on": ("GRD999",)}, "unknown runtime codes"),
]


@pytest.mark.parametrize("kwargs, message", TYPE_ERRORS)
def test_wrong_types_raise_type_error_at_watch(kwargs, message):
    with pytest.raises(TypeError, match=message):
        auditor.watch(**kwargs)


@pytest.mark.parametrize("kwargs, message", VALUE_ERRORS)
def test_out_of_range_values_raise_value_error_at_watch(kwargs, message):
    with pytest.raises(ValueError, match=message):
        auditor.watch(**kwargs)


@pytest.mark.parametrize("model", ["notamodel", 5, keras.optimizers.Adam(), tf.keras.optimizers.SGD()],
                         ids=["str", "int", "optimizer", "tf.keras-optimizer"])
def test_watch_rejects_what_is_not_a_model(model):
    with pytest.raises(TypeError, match="model must be a Keras model") as info:
        auditor.watch(model)
    if "optimizer" in type(model).__module__:
        assert "finds the optimizers it records by itself" in str(info.value)


def test_good_arguments_are_accepted():
    """The near misses of the checks above: every accepted form."""
    model = make_net()
    auditor.watch(model, every=2, history=None, histogram_every=0, raise_on="GRD104",
                  thresholds={"explode_norm": 10, "vanish_fraction": 1.0, "changes_first_steps": 0,
                              "explode_scale_fraction": 0.0, "explode_ratio": 2.5})
    auditor.watch(raise_on=["GRD104", "GRD105"], thresholds=None)


def _train_under(audit_kwargs, steps=3):
    model = make_net()
    opt = keras.optimizers.SGD(0.01)
    x, y = (tf.constant(a) for a in data())
    step = tf.function(lambda: standard_step(model, opt, x, y))
    with auditor.watch(**audit_kwargs) as audit:
        for _ in range(steps):
            step()
    return audit


def test_a_failing_sink_is_logged_not_raised(tmp_path, caplog):
    """A JSONL file on a full disk (/dev/full): training and the other sinks go on, the failure
    is logged and kept; the code after the with block runs."""
    with caplog.at_level(logging.ERROR, logger="auditor"):
        audit = _train_under({"jsonl": "/dev/full", "logdir": str(tmp_path / "tb"), "summary": False})
    after_the_block = True
    assert after_the_block and len(audit.steps) == 3
    assert audit.errors and "JsonlSink" in audit.errors[0] and "OSError" in audit.errors[0]
    assert any("JsonlSink" in r.getMessage() for r in caplog.records)
    assert "auditor error (logged; training was not affected)" in audit.summary()
    assert json.dumps(audit.to_dict()["errors"])


def test_a_failing_summary_print_is_logged_not_raised(caplog):
    """stdout closed by the program: printing the summary at exit fails; logged, not raised."""
    closed = io.StringIO()
    closed.close()
    with caplog.at_level(logging.ERROR, logger="auditor"), contextlib.redirect_stdout(closed):
        audit = _train_under({"summary": True})
    assert any("printing the summary" in e for e in audit.errors)
    assert audit.findings == []


def test_a_clean_run_has_no_errors(tmp_path):
    audit = _train_under({"jsonl": str(tmp_path / "run.jsonl"), "summary": False})
    assert audit.errors == [] and "auditor error" not in audit.summary()
    with open(tmp_path / "run.jsonl", encoding="utf-8") as lines:
        end = [json.loads(line) for line in lines][-1]
    assert end["type"] == "end" and "errors" not in end
