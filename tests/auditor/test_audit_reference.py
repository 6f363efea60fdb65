"""The auditor's output does not change with its inside: small runs on every engine (Keras 3
custom loops and ``fit``, tf.distribute, tf_keras, TF1) are recorded again and compared, field by
field, with the JSONL and TensorBoard output kept in ``tests/auditor/reference/`` (recorded before
the auditor was restructured; see ``reference_runs.py``). Event wall times are left out."""
import json
import math
import os

import pytest

from reference_runs import record_all, tensorboard_digest

REFERENCE = os.path.join(os.path.dirname(__file__), "reference")


@pytest.fixture(scope="module")
def recorded(strategy, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("reference"))
    return out, record_all(out, strategy)


def _diff(path, expected, got, out):
    """Every differing field, with its path (``step 3 / var_norms / a/kernel``)."""
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in sorted(set(expected) | set(got)):
            if key not in got or key not in expected:
                out.append(f"{path}/{key}: only in {'reference' if key in expected else 'new output'}")
            else:
                _diff(f"{path}/{key}", expected[key], got[key], out)
    elif isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        for i, (a, b) in enumerate(zip(expected, got)):
            _diff(f"{path}[{i}]", a, b, out)
    elif isinstance(expected, float) and isinstance(got, float) and math.isnan(expected) and math.isnan(got):
        pass  # a NaN norm recorded as NaN again
    elif expected != got or type(expected) is not type(got):
        out.append(f"{path}: reference {expected!r}, new {got!r}")
    return out


def _lines(path):
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


@pytest.mark.parametrize("name", ["keras3", "fit", "distribute", "tf_keras", "tf1"])
def test_jsonl_matches_the_reference_field_by_field(recorded, name):
    out, names = recorded
    assert name in names
    expected = _lines(os.path.join(REFERENCE, f"{name}.jsonl"))
    got = _lines(os.path.join(out, f"{name}.jsonl"))
    assert [line["type"] for line in got] == [line["type"] for line in expected]
    assert _diff(name, expected, got, []) == []


@pytest.mark.parametrize("name", ["keras3", "fit", "distribute", "tf_keras", "tf1"])
def test_tensorboard_matches_the_reference(recorded, name):
    out, _ = recorded
    with open(os.path.join(REFERENCE, f"{name}.tensorboard.json"), encoding="utf-8") as f:
        expected = json.load(f)
    got = json.loads(json.dumps(tensorboard_digest(os.path.join(out, f"{name}_tb"))))
    assert sorted(got) == sorted(expected)
    assert _diff(name, expected, got, []) == []


def test_the_comparison_can_fail():
    expected = _lines(os.path.join(REFERENCE, "keras3.jsonl"))
    changed = json.loads(json.dumps(expected))
    step = next(line for line in changed if line["type"] == "step")
    step["global_norm"] = float(step["global_norm"]) * (1 + 1e-7)
    (difference,) = _diff("keras3", expected, changed, [])
    assert "global_norm" in difference
