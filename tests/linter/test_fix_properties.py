"""Properties of `gradlint fix`, over every fixture, over generated programs and over the installed
keras sources: fixing twice equals fixing once; every fixed file parses; re-linting a fixed file reports
none of the findings that were fixed and nothing more to fix; files without findings are byte-identical;
``\\r\\n`` files stay ``\\r\\n``."""
from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradlint import source as sources
from gradlint.engine import lint_source
from gradlint.fixer import fix_text
from gradlint.rules import ALL_RULES

from conftest import FIXTURES

FIXTURE_FILES = sorted((FIXTURES / "fix").rglob("*.py")) + sorted((FIXTURES / "rules").rglob("*.py")) \
    + sorted((FIXTURES / "example").glob("*.py"))


def _keras_directory() -> Path | None:
    import importlib.util

    try:
        spec = importlib.util.find_spec("keras")  # finds the package without importing it
    except (ImportError, ValueError):
        return None
    return Path(spec.origin).parent if spec is not None and spec.origin else None


KERAS = _keras_directory()
_LONE_LF = re.compile(r"(?<!\r)\n")


def assert_fix_properties(text: str, path: str, *, unsafe: bool = True) -> None:
    once = fix_text(text, path, ALL_RULES, unsafe=unsafe)
    assert once.errors == [], once.errors
    before = lint_source(text, path, ALL_RULES)
    if not before.violations:
        assert once.fixed == text and once.applied == {}
        return
    ast.parse(once.fixed)
    twice = fix_text(once.fixed, path, ALL_RULES, unsafe=unsafe)
    assert twice.fixed == once.fixed, "fixing twice differs from fixing once"
    assert twice.applied == {} and twice.errors == []
    after = lint_source(once.fixed, path, ALL_RULES)
    assert after.errors == []
    assert sorted(after.violations) == sorted(once.remaining)
    counts_before = Counter(v.code for v in before.violations)
    counts_after = Counter(v.code for v in after.violations)
    for code in once.applied:
        # fewer findings of every fixed code; or none left, when a fix uncovered a finding that a later pass
        # fixed too (`grads, _ = tf.clip_by_global_norm(...)` makes the loop over `grads` a GRD001 finding)
        assert counts_after[code] < counts_before[code] or counts_after[code] == 0, \
            f"{code} fixed but not fewer findings"
    assert set(counts_after) <= set(counts_before), "a fix introduced a finding of another code"
    if "\r\n" in text and not _LONE_LF.search(text):
        assert not _LONE_LF.search(once.fixed), "CRLF file got a bare LF"


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: str(p.relative_to(FIXTURES)))
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_fixture_properties(path: Path, newline: str) -> None:
    text = path.read_text(encoding="utf-8").replace("\n", newline)
    assert_fix_properties(text, str(path))
    assert_fix_properties(text, str(path), unsafe=False)


@pytest.mark.slow
@pytest.mark.skipif(KERAS is None, reason="keras is not installed")
def test_keras_sources_properties() -> None:
    checked = 0
    for path in sorted(KERAS.rglob("*.py")):
        try:
            text = sources.decode(path.read_bytes())
        except sources.SourceError:
            continue
        assert_fix_properties(text, str(path))
        checked += 1
    assert checked > 100


# ------------------------------------------------------------------------------------ generated programs
_OPS = ["tf.clip_by_norm(g, 1.0)", "g * 0.5", "tf.norm(g)", "g.numpy()", "(g * 2.0)",
        "g * s if s else g", "tf.clip_by_norm(\n{i}    g,  # the gradient\n{i}    1.0)"]
_LOOP_STATEMENTS = ["print(tf.norm(g))", "total = total + tf.reduce_sum(g)", "log(g * 2.0)",
                    "n = tf.norm(g)\n{i}print(n)"]


@st.composite
def _snippet(draw, indent: str) -> str:
    kind = draw(st.sampled_from(["comprehension", "loop", "pairs", "per_variable", "clean", "guarded"]))
    comment = draw(st.sampled_from(["", "  # note", "  # noqa: GRD001"]))
    blank = draw(st.sampled_from(["", "\n", f"{indent}# a comment line\n"]))
    op = draw(st.sampled_from(_OPS)).replace("{i}", indent)
    source = draw(st.sampled_from(["tf.gradients(loss, params)", "tape.gradient(loss, model.trainable_variables)"]))
    lines = [f"{indent}grads = {source}\n", blank]
    if kind == "comprehension":
        spacing = draw(st.sampled_from(["", " "]))
        lines.append(f"{indent}out = [{spacing}{op} for g in grads{spacing}]{comment}\n")
    elif kind == "loop":
        statement = draw(st.sampled_from(_LOOP_STATEMENTS)).replace("{i}", indent * 2)
        before = draw(st.sampled_from(["", f"{indent * 2}count = count + 1\n"]))
        lines.append(f"{indent}for g in grads:\n{before}{indent * 2}{statement}{comment}\n")
    elif kind == "pairs":
        lines.append(f"{indent}pairs = optimizer.compute_gradients(loss)\n"
                     f"{indent}out = [(tf.clip_by_value(gv[0], -1.0, 1.0), gv[1]) for gv in pairs]{comment}\n")
    elif kind == "per_variable":
        condition = draw(st.booleans())
        body = f"{indent * 2}if v.trainable:\n{indent * 3}" if condition else f"{indent * 2}"
        lines.append(f"{indent}for g, v in zip(grads, model.trainable_variables):\n"
                     f"{body}optimizer.apply_gradients([(g, v)]){comment}\n")
    elif kind == "guarded":
        lines.append(f"{indent}out = [{op} for g in grads if g is not None]\n")
    else:
        lines.append(f"{indent}out = tf.reduce_sum(x){comment}\n")
    return "".join(lines)


@st.composite
def _program(draw) -> str:
    indent = draw(st.sampled_from(["    ", "  ", "\t"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    functions = []
    for number in range(draw(st.integers(1, 3))):
        snippets = draw(st.lists(_snippet(indent), min_size=1, max_size=3))
        functions.append(f"def step_{number}(loss, params, model, optimizer, tape, x, s, log):\n"
                         f"{indent}total = count = 0\n" + "".join(snippets) + f"{indent}return total\n")
    header = "import tensorflow as tf\n\n\n"
    return (header + "\n\n".join(functions)).replace("\n", newline)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_program(), st.booleans())
def test_generated_programs_properties(text: str, unsafe: bool) -> None:
    ast.parse(text)
    assert_fix_properties(text, "generated.py", unsafe=unsafe)
