"""The fix engine's API: edits by identity, overlap handling, safety classes, noqa, refusal of fixes
whose result does not parse, and backward compatibility of ``Rule.report``."""
from __future__ import annotations

import libcst as cst
import pytest

from gradlint.fixer import fix_text
from gradlint.fixes.edits import (
    Edit, EditError, Fix, apply_edits, insert_after, insert_before, remove, replace, replace_within)
from gradlint.rules import RULES_BY_CODE, Rule
from gradlint.rules.base import Report

GRD001 = RULES_BY_CODE["GRD001"]
BUGGY = (
    "import tensorflow as tf\n"
    "grads = tf.gradients(loss, params)\n"
    "scaled = [g * 0.5 for g in grads]\n"
)
FIXED = (
    "import tensorflow as tf\n"
    "grads = tf.gradients(loss, params)\n"
    "scaled = [g * 0.5 if g is not None else None for g in grads]\n"
)


def test_edits_match_nodes_by_identity_not_value() -> None:
    module = cst.parse_module("x = 1\ny = 1\n")
    second_one = module.body[1].body[0].value
    edited = apply_edits(module, [replace(second_one, cst.Integer("2"))])
    assert edited.code == "x = 1\ny = 2\n"


def test_statement_insert_remove_and_move() -> None:
    module = cst.parse_module("a = 1\nb = 2  # keep\nc = 3\n")
    a, b, c = module.body
    new = cst.parse_statement("z = 0\n")
    edited = apply_edits(module, [insert_before(a, new), remove(b), insert_after(c, b)])
    assert edited.code == "z = 0\na = 1\nc = 3\nb = 2  # keep\n"


def test_edit_errors() -> None:
    module = cst.parse_module("a = 1\n")
    stranger = cst.parse_expression("q")
    with pytest.raises(EditError, match="not in the tree"):
        apply_edits(module, [replace(stranger, cst.Name("r"))])
    value = module.body[0].body[0].value
    with pytest.raises(EditError, match="same node"):
        apply_edits(module, [replace(value, cst.Name("r")), replace(value, cst.Name("s"))])
    with pytest.raises(EditError):  # a statement list where an expression must be
        apply_edits(module, [Edit(value, cst.FlattenSentinel([cst.Name("r"), cst.Name("s")]))])


def test_replace_within_builds_one_edit_from_nested_changes() -> None:
    module = cst.parse_module("for v in vs:\n    f(v)\n")
    loop = module.body[0]
    call = loop.body.body[0].body[0].value
    new_loop = replace_within(loop, {call: cst.parse_expression("g(v)")})
    assert apply_edits(module, [replace(loop, new_loop)]).code == "for v in vs:\n    g(v)\n"


def test_fix_validates_its_fields() -> None:
    node = cst.Name("x")
    with pytest.raises(ValueError):
        Fix((Edit(node, node),), "risky", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Fix((), "safe", "x")


def test_fix_text_applies_safe_fix() -> None:
    result = fix_text(BUGGY, "bug.py", [GRD001])
    assert result.fixed == FIXED
    assert result.applied == {"GRD001": 1}
    assert result.remaining == [] and result.errors == []


def test_noqa_suppressed_findings_are_not_fixed() -> None:
    text = BUGGY.replace("grads]\n", "grads]  # noqa: GRD001\n")
    result = fix_text(text, "bug.py", [GRD001])
    assert result.fixed == text and not result.changed
    assert result.remaining == []


@pytest.mark.parametrize("header", ["# gradlint: noqa\n", "# flake8: noqa\n", "# gradlint: noqa: GRD001\n"])
def test_file_level_noqa_stops_fixes_as_it_stops_findings(header: str) -> None:
    text = header + BUGGY
    result = fix_text(text, "bug.py", [GRD001])
    assert result.fixed == text and not result.changed
    assert result.remaining == []
    # a file-level noqa for another code leaves GRD001 fixable
    other = fix_text("# gradlint: noqa: GRD003\n" + BUGGY, "bug.py", [GRD001])
    assert other.applied == {"GRD001": 1}


def test_unparseable_fix_is_refused_and_file_left_unchanged() -> None:
    def break_it(fixes: list[Fix]) -> list[Fix]:
        edit = fixes[0].edits[0]
        broken = Edit(edit.node, cst.Name("class"))  # a keyword: libcst renders it, CPython rejects it
        return [Fix((broken,), "safe", "broken on purpose")]

    result = fix_text(BUGGY, "bug.py", [GRD001], transform=break_it)
    assert not result.changed and result.fixed == BUGGY
    assert result.applied == {}
    (error,) = result.errors
    assert "does not parse" in error.message and "GRD001 at line 3" in error.message
    assert [v.code for v in result.remaining] == ["GRD001"]


def test_edit_that_cannot_apply_is_reported() -> None:
    def stray(fixes: list[Fix]) -> list[Fix]:
        return [Fix((Edit(cst.Name("elsewhere"), cst.Name("x")),), "safe", "not in this tree")]

    result = fix_text(BUGGY, "bug.py", [GRD001], transform=stray)
    assert not result.changed
    assert "could not be applied" in result.errors[0].message


def _small(model, statement) -> str:
    if isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1:
        return model.code(statement.body[0])
    return ""


class _MarkStatement(Rule):
    """Test rule: a `mark()` statement, with an unsafe fix that rewrites the whole statement."""

    CODE = "GRD900"
    NAME = "test-mark-statement"
    SUMMARY = WHAT = WHY = EXAMPLE = USE_INSTEAD = FIX_SAFETY = "test"
    FIX = "unsafe"

    def check(self, model):
        for statement in model.module.body:
            if _small(model, statement) == "mark()":
                new = statement.with_changes(body=[cst.Expr(cst.parse_expression("mark(1)"))])
                yield self.report(statement, "mark", fix=self.fix([replace(statement, new)], "mark(1)"))


class _MarkCall(Rule):
    """Test rule: a `mark()` or `mark(1)` call, with a safe fix inside the statement _MarkStatement edits."""

    CODE = "GRD901"
    NAME = "test-mark-call"
    SUMMARY = WHAT = WHY = EXAMPLE = USE_INSTEAD = FIX_SAFETY = "test"
    FIX = "safe"

    def check(self, model):
        for statement in model.module.body:
            if _small(model, statement) in ("mark()", "mark(1)"):
                call = statement.body[0].value
                yield self.report(call, "call", fix=lambda c=call: self.fix(
                    [replace(c, cst.parse_expression("mark(2)"))], "mark(2)"))


MARKED = "import tensorflow as tf\ngrads = tf.gradients(loss, params)  # prefilter trigger\nmark()  # keep\n"


def test_unsafe_fixes_need_opt_in() -> None:
    safe_only = fix_text(MARKED, "m.py", [_MarkStatement])
    assert not safe_only.changed
    assert safe_only.unsafe_available == {"GRD900": 1}
    assert [v.code for v in safe_only.remaining] == ["GRD900"]
    unsafe = fix_text(MARKED, "m.py", [_MarkStatement], unsafe=True)
    assert unsafe.fixed.endswith("\nmark(1)  # keep\n")
    assert unsafe.applied == {"GRD900": 1} and unsafe.remaining == []


def test_overlapping_fixes_wait_for_the_next_pass() -> None:
    result = fix_text(MARKED, "m.py", [_MarkStatement, _MarkCall], unsafe=True)
    # pass 1: the statement fix (first in source order, then by code) wins, the call fix overlaps it;
    # pass 2: the call fix is recomputed on the new tree and applied
    assert result.fixed.endswith("\nmark(2)  # keep\n")
    assert result.applied == {"GRD900": 1, "GRD901": 1}
    assert result.passes == 3


def test_passes_are_bounded() -> None:
    class _Forever(_MarkCall):
        CODE = "GRD902"

        def check(self, model):
            for statement in model.module.body:
                if _small(model, statement).startswith("mark("):
                    call = statement.body[0].value
                    yield self.report(call, "again", fix=self.fix(
                        [replace(call, cst.parse_expression(f"mark({len(model.code(call))})"))], "grow"))

    result = fix_text(MARKED, "m.py", [_Forever], max_passes=4)
    assert result.applied == {"GRD902": 4} and result.passes == 4
    assert [v.code for v in result.remaining] == ["GRD902"]


def test_crlf_newlines_are_kept_by_fixes() -> None:
    result = fix_text(BUGGY.replace("\n", "\r\n"), "bug.py", [GRD001])
    assert result.fixed == FIXED.replace("\n", "\r\n")
    loop = ("import tensorflow as tf\r\ngrads = tf.gradients(loss, params)\r\n"
            "for g in grads:\r\n    print(tf.norm(g))\r\n")
    fixed = fix_text(loop, "loop.py", [GRD001]).fixed
    assert "if g is not None:\r\n        print(tf.norm(g))\r\n" in fixed
    assert "\n" not in fixed.replace("\r\n", "")


def test_report_stays_backward_compatible() -> None:
    node = cst.Name("x")
    assert Report(node, "message").fix is None
    assert GRD001().report(node, "message") == Report(node, "message")
    assert Report(node, "m", fix=lambda: None).resolve_fix() is None
    with pytest.raises(TypeError):
        Report(node, "m", fix=lambda: "not a fix").resolve_fix()  # type: ignore[arg-type,return-value]


def test_check_never_builds_lazy_fixes(monkeypatch) -> None:
    from gradlint.engine import lint_source

    calls = []
    monkeypatch.setattr(GRD001, "none_guard_fix", lambda self, model, use: calls.append(use))
    assert len(lint_source(BUGGY, "bug.py", [GRD001]).violations) == 1
    assert calls == []


def test_fix_builder_crash_is_an_error_not_a_crash(monkeypatch) -> None:
    def boom(self, model, use):
        raise RuntimeError("boom")

    monkeypatch.setattr(GRD001, "none_guard_fix", boom)
    result = fix_text(BUGGY, "bug.py", [GRD001])
    assert not result.changed
    assert any("internal error building the GRD001 fix" in e.message for e in result.errors)
