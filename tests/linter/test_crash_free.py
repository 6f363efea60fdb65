"""Robustness: every .py file of tensorflow, keras and the standard library goes through the whole
analysis (prefilter bypassed) without an internal error, and generated programs never crash the linter."""
from __future__ import annotations

import multiprocessing
import os
import sysconfig
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradlint.engine import lint_source
from gradlint.rules import ALL_RULES

HANG_GUARD_SECONDS = 300  # not a speed target: a file taking this long means the analysis hangs


def _analyse(path: str) -> tuple[str, float, list[str]]:
    with open(path, "rb") as handle:
        data = handle.read()
    start = time.perf_counter()
    result = lint_source(data, path, ALL_RULES, force=True)
    return path, time.perf_counter() - start, [e.message for e in result.errors]


def _python_files(root: Path, skip: tuple[str, ...] = ()) -> list[str]:
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in skip]
        files.extend(os.path.join(directory, n) for n in names if n.endswith(".py"))
    return files


@pytest.mark.slow
def test_tensorflow_keras_and_stdlib_never_crash_the_analysis() -> None:
    import importlib.util

    roots = [Path(list(importlib.util.find_spec(n).submodule_search_locations)[0]) for n in ("tensorflow", "keras")]
    files = [f for root in roots for f in _python_files(root)]
    files += _python_files(Path(sysconfig.get_paths()["stdlib"]), skip=("site-packages", "dist-packages"))
    assert len(files) > 3000
    # spawn, not fork: this pytest process may already run TensorFlow's threads (auditor tests), and a
    # forked child of a threaded process can deadlock
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), mp_context=context) as pool:
        results = list(pool.map(_analyse, files, chunksize=16))
    internal = [(p, m) for p, _, messages in results for m in messages if "internal error" in m]
    assert internal == [], internal[:10]
    slowest = sorted(results, key=lambda r: -r[1])[:5]
    print("\nslowest files (forced analysis):")
    for path, seconds, _ in slowest:
        print(f"  {seconds:6.2f} s  {path}")
    assert slowest[0][1] < HANG_GUARD_SECONDS


# ---------------------------------------------------------------- generated programs
NAMES = st.sampled_from(["g", "grad", "v", "var", "grads", "pairs", "model", "opt", "tape", "loss", "x", "i"])
EXPRESSIONS = st.sampled_from([
    "tape.gradient(loss, model.trainable_variables)",
    "tf.gradients(loss, params)",
    "opt.compute_gradients(loss)",
    "tf.clip_by_global_norm(grads, 1.0)",
    "[tf.clip_by_norm(g, 1.0) for g in grads]",
    "[g for g in grads if g is not None]",
    "zip(grads, model.trainable_variables)",
    "list(zip(grads, model.variables))",
    "map(lambda g: g * 2, grads)",
    "grads[0] * 0.5 if grads[0] is not None else None",
    "keras.optimizers.Adam(clipnorm=1.0)",
    "tf.compat.v1.train.AdamOptimizer()",
    "tf.distribute.MirroredStrategy()",
    "model(x)", "float(loss)", "tf.argmax(model(x))", "loss.numpy()", "opt.get_scaled_loss(loss)",
    "x > 0", "-g", "g.numpy()", "None", "1.0",
])
STATEMENTS = st.one_of(
    st.builds(lambda n, e: f"{n} = {e}", NAMES, EXPRESSIONS),
    st.builds(lambda n, e: f"{n}, _ = {e}", NAMES, EXPRESSIONS),
    st.builds(lambda n: f"opt.apply_gradients({n})", NAMES),
    st.builds(lambda n: f"opt.apply_gradients([({n}, v)])", NAMES),
    st.builds(lambda n: f"{n}.variables = model.trainable_variables", NAMES),
    st.builds(lambda e: f"print({e})", EXPRESSIONS),
    st.just("opt.minimize(loss, var_list=[v])"),
    st.just("opt.build(model.trainable_variables)"),
    st.just("model.compile(optimizer=opt)"),
)


@st.composite
def programs(draw) -> str:
    """Gradient-shaped programs: statements nested in loops, ifs, tapes, strategy scopes and functions."""
    def block(depth: int) -> list[str]:
        lines = []
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.integers(0, 7 if depth < 3 else 0))
            if kind == 1:
                lines.append(f"for {draw(NAMES)}, {draw(NAMES)} in {draw(EXPRESSIONS)}:")
            elif kind == 2:
                lines.append(f"if {draw(NAMES)} is not None:")
            elif kind == 3:
                lines.append(f"with tf.GradientTape(persistent={draw(st.booleans())}) as tape:")
            elif kind == 4:
                first, second = draw(st.lists(NAMES, min_size=2, max_size=2, unique=True))
                lines.append(f"def step_{depth}({first}, {second}):")
            elif kind == 5:
                lines.append("with strategy.scope():")
            elif kind == 6:
                lines.append(f"while {draw(NAMES)} < len(model.trainable_variables):")
            elif kind == 7:
                lines.append(f"class M{depth}(keras.Model):")
            if kind:
                lines.extend("    " + line for line in block(depth + 1))
            else:
                lines.append(draw(STATEMENTS))
        return lines

    header = "import tensorflow as tf\nimport keras\nimport numpy as np\n"
    return header + "\n".join(block(0)) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_generated_gradient_programs_never_crash(source: str) -> None:
    compile(source, "<generated>", "exec")  # the generator only makes valid Python
    result = lint_source(source, "generated.py", ALL_RULES)
    assert result.errors == [], (result.errors, source)
    for violation in result.violations:
        assert 1 <= violation.line <= source.count("\n") + 1


def test_arbitrary_valid_python_never_crashes() -> None:
    hypothesmith = pytest.importorskip("hypothesmith")

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(hypothesmith.from_grammar())
    def check(source: str) -> None:
        result = lint_source("import tensorflow as tf\n" + source, "any.py", ALL_RULES, force=True)
        assert not [e for e in result.errors if "internal error" in e.message], (result.errors, source)

    check()
