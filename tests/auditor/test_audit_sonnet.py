"""Sonnet 2 optimizers (``snt.optimizers.SGD/Adam/Momentum/RMSProp``, ``opt.apply(updates,
parameters)``): eager loops and ``tf.function`` loops whose model and optimizer create their
variables during the first trace (Sonnet's usual way): one record per apply, the right norms, the
same training with and without ``watch()``, and each finding's planted bug and clean twin."""
import numpy as np
import pytest
import tensorflow as tf

import auditor
from audit_helpers import codes, data_tensors, run_steps

snt = pytest.importorskip("sonnet")

OPTIMIZERS = {
    "sgd": lambda: snt.optimizers.SGD(0.05),
    "adam": lambda: snt.optimizers.Adam(0.01),
    "momentum": lambda: snt.optimizers.Momentum(0.05, 0.9),
    "rmsprop": lambda: snt.optimizers.RMSProp(0.01),
}
MODES = ["eager", "function"]
STEPS = 12


class Net(snt.Module):
    """out(relu(a(x))) + b_scale * b(x); ``use_b=False``: b is called but its output dropped
    (its gradients are None); ``b_init``: b's weights start at this constant."""

    def __init__(self, b_scale=1.0, use_b=True, b_init=None):
        super().__init__(name="net")
        self.a = snt.Linear(8, name="a")
        self.out = snt.Linear(1, name="out")
        init = None if b_init is None else snt.initializers.Constant(b_init)
        self.b = snt.Linear(1, w_init=init, name="b")
        self.b_scale = b_scale
        self.use_b = use_b

    def __call__(self, x):
        y = self.out(tf.nn.relu(self.a(x)))
        b = self.b(x)
        return y + self.b_scale * b if self.use_b else y


def _net(**kwargs):
    tf.random.set_seed(0)
    return Net(**kwargs)


def _step_fn(model, opt, mode, x, y, select=None, clip=None):
    """One training step; ``select(params)`` picks the parameters applied, ``clip`` a global-norm
    clip of yours. In "function" mode the model's first call (variable creation) is in the trace."""

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        params = model.trainable_variables
        if select is not None:
            params = select(params)
        grads = tape.gradient(loss, params)
        if clip is not None:
            grads, _ = tf.clip_by_global_norm(grads, clip)
        opt.apply(grads, params)
        return loss

    return tf.function(step) if mode == "function" else step


def _train(name, mode, watched, steps=4):
    model, opt = _net(), snt.allow_empty_variables(OPTIMIZERS[name]())  # SGD keeps no state
    x, y = data_tensors()
    step = _step_fn(model, opt, mode, x, y)
    audit = run_steps(step, steps, watched)
    state = [v.numpy() for v in model.variables] + [v.numpy() for v in opt.variables]
    return audit, model, opt, state


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_one_record_per_apply_and_training_unchanged(name, mode):
    audit, model, opt, watched = _train(name, mode, watched=True)
    _, _, _, plain = _train(name, mode, watched=False)
    assert len(watched) == len(plain) and all(a.dtype == b.dtype and a.tobytes() == b.tobytes()
                                              for a, b in zip(watched, plain))
    _, _, _, shorter = _train(name, mode, watched=False, steps=3)
    assert any(a.tobytes() != b.tobytes() for a, b in zip(plain, shorter))  # the comparison can fail
    assert [r.step for r in audit.steps] == [0, 1, 2, 3]
    if name == "adam":
        assert int(opt.step.numpy()) == 4  # Adam's own counter numbers the records
    paths = {v.name for v in model.trainable_variables}
    assert len(paths) == 6
    for r in audit.steps:
        assert set(r.var_norms) == paths and sorted(r.changed_vars) == sorted(paths)
        assert r.global_norm == pytest.approx(float(np.sqrt(sum(n * n for n in r.var_norms.values()))), rel=1e-5)
        assert r.clip_ratio is None and r.nonfinite == [] and r.none_vars == []
    assert audit.findings == []


@pytest.mark.parametrize("mode", MODES)
def test_norms_are_the_applied_gradients(mode):
    """SGD moves each parameter by exactly lr x gradient: the recorded per-variable norms of the
    second step equal |w1 - w2| / lr, measured on the weights (created in the first trace)."""
    model, opt = _net(), snt.optimizers.SGD(0.05)
    x, y = data_tensors()
    step = _step_fn(model, opt, mode, x, y)
    with auditor.watch(summary=False) as audit:
        step()
        before = {v.name: v.numpy().astype(np.float64) for v in model.trainable_variables}
        step()
        after = {v.name: v.numpy().astype(np.float64) for v in model.trainable_variables}
    record = audit.steps[1]
    for path, norm in record.var_norms.items():
        assert norm == pytest.approx(np.linalg.norm(before[path] - after[path]) / 0.05, rel=1e-3)


def test_function_traced_inside_keeps_recording_in_a_later_watch_and_is_inert_between():
    model, opt = _net(), snt.optimizers.SGD(0.05)
    x, y = data_tensors()
    step = _step_fn(model, opt, "function", x, y)
    with auditor.watch(summary=False) as first:
        step()
        step()
    step()  # between the watches: trains, records nothing
    with auditor.watch(summary=False) as second:  # this thread traced it: re-enabled
        step()
    assert [r.step for r in first.steps] == [0, 1]
    assert [r.step for r in second.steps] == [3]  # the auditor's own counter counted the inert call


def test_user_clipping_is_seen():
    model, opt = _net(), snt.optimizers.Adam(1e-3)
    x, y = data_tensors()
    step = _step_fn(model, opt, "function", x, y, clip=1e-3)
    with auditor.watch(summary=False) as audit:
        for _ in range(STEPS):
            step()
    assert all(r.clip_ratio is not None and r.clip_ratio < 0.01 for r in audit.steps)
    assert codes(audit) == ["GRD107"]


def _not_first_layer(params):
    return [p for p in params if not p.name.startswith("net/a/")]


def _not_b(params):
    return [p for p in params if not p.name.startswith("net/b/")]


# code -> (Net kwargs, data kwargs, optimizer, step kwargs, planted: (kwargs override...))
SCENARIOS = {
    "GRD101": dict(planted_net={"use_b": False}),
    "GRD102": dict(planted_net={"b_scale": 0.0}),
    "GRD103": dict(planted_loop=True),
    "GRD104": dict(planted_data={"nan": True}),
    "GRD105": dict(planted_data={"scale": 1e6}, planted_opt=lambda: snt.optimizers.SGD(1e-9)),
    "GRD106": dict(planted_net={"b_scale": 1e-12, "b_init": 1e-12}),
    "GRD107": dict(planted_clip=1e-3, clean_clip=1e3),
    # planted: layers a+out, then b+out (sideways); clean: layer a frozen halfway (the usual freeze)
    "GRD108": dict(planted_first=_not_b, planted_select=_not_first_layer, clean_select=_not_first_layer),
}


def _scenario_run(code, planted, mode):
    spec = SCENARIOS[code]
    model = _net(**(spec.get("planted_net", {}) if planted else {}))
    opt = (spec.get("planted_opt") if planted else None) or (lambda: snt.optimizers.SGD(0.01))
    opt = opt()
    x, y = data_tensors(**(spec.get("planted_data", {}) if planted else {}))
    clip = spec.get("planted_clip" if planted else "clean_clip")
    full = _step_fn(model, opt, mode, x, y, clip=clip, select=spec.get("planted_first") if planted else None)
    second = full
    select = spec.get("planted_select" if planted else "clean_select")
    if select is not None:
        second = _step_fn(model, opt, mode, x, y, select=select)
    if planted and spec.get("planted_loop"):
        def per_variable():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(x) - y))
            params = model.trainable_variables
            for g, p in zip(tape.gradient(loss, params), params):
                opt.apply([g], [p])
        full = second = tf.function(per_variable) if mode == "function" else per_variable
    with auditor.watch(summary=False) as audit:
        for k in range(STEPS):
            (full if k < STEPS // 2 else second)()
    return audit


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("code", sorted(SCENARIOS))
def test_planted_fires_and_clean_twin_is_silent(code, mode):
    planted = _scenario_run(code, True, mode)
    assert code in codes(planted), planted.summary()
    clean = _scenario_run(code, False, mode)
    assert codes(clean) == [], clean.summary()
    assert [r.step for r in clean.steps] == list(range(STEPS))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("planted", [True, False], ids=["planted", "clean"])
def test_gradients_computed_for_variables_created_in_the_first_trace(mode, planted):
    """The tape sees variables that a function's first trace creates before they hold a value;
    their snapshot is taken at the next host point, so a gradient computed and never applied is
    GRD102 (planted: layer a's are dropped), the exit comparison never raises, and applying
    everything (clean) stays silent."""
    model, opt = _net(), snt.optimizers.SGD(0.05)
    x, y = data_tensors()

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        params = model.trainable_variables
        grads = tape.gradient(loss, params)
        pairs = [(g, p) for g, p in zip(grads, params) if not (planted and p.name.startswith("net/a/"))]
        opt.apply([g for g, _ in pairs], [p for _, p in pairs])

    step = tf.function(step) if mode == "function" else step
    with auditor.watch(summary=False) as audit:
        for _ in range(4):
            step()
    assert audit.errors == []
    if planted:
        (finding,) = audit.findings
        assert finding.code == "GRD102" and finding.variables == ["net/a/b:0", "net/a/w:0"]
    else:
        assert audit.findings == []
