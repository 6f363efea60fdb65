"""Decide cheaply whether a file can contain anything a rule reports, before the libcst parse.

libcst parses at ~55-70 ms per 1,000 lines; most files of a code base have no gradient code. Two stages:

1. a byte regex for code-like trigger words (microseconds per file);
2. for files that pass, a scan of the stdlib ``ast`` (~7 ms per 1,000 lines, free under flake8, which
   hands plugins its tree) for the calls, names and imports that every rule needs to fire.

Both stages are conservative: when in doubt (a syntax error, odd input) the file goes to libcst, which
reports problems properly. ``tests/linter/test_rule_examples.py`` runs every rule's examples through the
prefilter, so a rule whose trigger is missing here fails its own tests.
"""
from __future__ import annotations

import ast
import re
import warnings
from typing import Optional

TRIGGER = re.compile(
    rb"\.gradient\s*\(|\.jacobian\s*\(|gradients\s*\(|GradientTape|apply_gradients|\.minimize\s*\("
    rb"|optimizer\s*=|Optimizer\b|optimizers\b|clip_by_|\bopt\w*\.apply\s*\(|scale_loss|scaled_loss"
    rb"|unscaled_gradients|:0[\'\"]|(?:variables|weights)\s*=[^=]"
)
_TRIGGER_TEXT = re.compile(TRIGGER.pattern.decode())

_CALL_ATTRIBUTES = frozenset({
    "gradient", "jacobian", "batch_jacobian", "gradients", "compute_gradients", "apply_gradients", "minimize",
    "GradientTape", "optimizers", "clip_by_global_norm", "get_scaled_loss", "get_unscaled_gradients",
    "scale_loss",
})
_COLLECTION_ATTRIBUTES = frozenset({
    "trainable_variables", "trainable_weights", "non_trainable_variables", "non_trainable_weights",
    "variables", "weights",
})


def passes_text(data: bytes | str) -> bool:
    """Stage 1: any trigger word in the raw text."""
    if isinstance(data, bytes):
        return TRIGGER.search(data) is not None
    return _TRIGGER_TEXT.search(data) is not None


def passes_tree(tree: ast.AST) -> bool:
    """Stage 2: the syntax tree has a gradient source, an optimizer, or an optimizer-like use."""
    for node in ast.walk(tree):
        kind = type(node)
        if kind is ast.Attribute:
            attr = node.attr
            if attr in _CALL_ATTRIBUTES or attr.endswith("Optimizer"):
                return True
            if attr == "apply" and "opt" in _terminal(node.value):
                return True
        elif kind is ast.Name:
            name = node.id
            if name in ("gradients", "GradientTape", "clip_by_global_norm") or name.endswith("Optimizer"):
                return True
        elif kind is ast.keyword:
            if node.arg == "optimizer" and not isinstance(node.value, ast.Constant):
                return True
        elif kind is ast.ImportFrom:
            if "optimizers" in (node.module or "") or any("optimizers" in a.name for a in node.names):
                return True
        elif kind is ast.Import:
            if any("optimizers" in a.name for a in node.names):
                return True
        elif kind is ast.Constant:
            if isinstance(node.value, str) and ":0" in node.value:
                return True
        elif kind is ast.Assign:
            if any(isinstance(t, ast.Attribute) and t.attr in _COLLECTION_ATTRIBUTES for t in node.targets):
                return True
    return False


def might_have_gradient_code(data: bytes | str, tree: Optional[ast.AST] = None) -> bool:
    if not passes_text(data):
        return False
    if tree is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(data)
        except Exception:  # syntax errors, NUL bytes, deep nesting: let the real parser report them
            return True
    return passes_tree(tree)


def _terminal(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr.lower()
    if isinstance(node, ast.Name):
        return node.id.lower()
    return ""
