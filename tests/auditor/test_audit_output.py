"""What a user reads: each finding printed once and in the order the run met it, a NaN norm shown
as ``nan`` (not ``-``, which means "no gradient"), the ``none`` column counting the ``None``s the
tape returned for a variable dropped before ``apply``, and whole-run findings without a step."""
import keras
import numpy as np
import tensorflow as tf

import auditor
from audit_helpers import data, make_net, mse
from auditor.evaluation import in_finding_order
from auditor.findings import Finding


def test_findings_in_the_order_the_run_met_them():
    found = [Finding("GRD104", "non-finite-gradient", "", 2), Finding("GRD102", "variable-not-updated", "", None),
             Finding("GRD105", "exploding-gradient", "", 1), Finding("GRD101", "none-gradient", "", 2)]
    assert [f.code for f in in_finding_order(found)] == ["GRD105", "GRD101", "GRD104", "GRD102"]


def _nan_run(summary, steps=3):
    model = make_net(use_b=False)
    opt = keras.optimizers.SGD(0.01)
    x, y = data()
    x[3, 1] = np.nan
    x, y = tf.constant(x), tf.constant(y)
    with auditor.watch(summary=summary) as audit:
        for _ in range(steps):
            with tf.GradientTape() as tape:
                loss = mse(model, x, y)
            pairs = [(g, v) for g, v in zip(tape.gradient(loss, model.trainable_variables),
                                            model.trainable_variables) if g is not None]  # Nones dropped
            opt.apply_gradients(pairs)
    return audit


def test_each_finding_is_printed_once(capsys):
    audit = _nan_run(summary=True)
    out = capsys.readouterr()
    assert [f.code for f in audit.findings] == ["GRD104", "GRD101"]  # step 0, then the whole run's
    assert (out.out + out.err).count("GRD104 non-finite-gradient") == 1
    assert "GRD101 none-gradient (whole run)" in out.out and "(step None)" not in out.out


def test_nan_norms_read_nan_and_dropped_nones_are_counted():
    audit = _nan_run(summary=False)
    table = audit.variables
    kernel_a = next(p for p in table if p.endswith("/a/kernel"))
    kernel_b = next(p for p in table if p.endswith("/b/kernel"))
    assert np.isnan(table[kernel_a]["mean_norm"]) and np.isnan(table[kernel_a]["max_norm"])
    assert table[kernel_b]["none_count"] == 3 and table[kernel_b]["applied"] == 0  # dropped before apply
    rows = {line.split()[0]: line.split() for line in audit.summary().splitlines() if line.startswith(("net", "kernel"))}
    row_a = next(r for p, r in rows.items() if p.endswith("/a/kernel"))
    row_b = next(r for p, r in rows.items() if p.endswith("/b/kernel"))
    assert row_a[5:8] == ["nan", "nan", "nan"]  # mean, max, last: NaN, not "-"
    assert row_b[3] == "3" and row_b[5] == "-"  # none: 3; no gradient: "-"
