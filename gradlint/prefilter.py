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

# Stage 1: a superset of what stage 2 accepts, on raw bytes.
TRIGGER = re.compile(
    rb"gradient\s*\(|jacobian\s*\(|gradients\s*\(|apply_gradients|minimize\s*\(|clip_by_global_norm"
    rb"|scale_loss|scaled_loss|unscaled_gradients|get_gradients|get_updates|variables\s*\(\s*\)"
    rb"|\.(?:apply|build)\s*\(|clipnorm|clipvalue|optimizer\s*=|:0[\'\"]|(?:variables|weights|var_list)\s*=[^=]"
)
_TRIGGER_TEXT = re.compile(TRIGGER.pattern.decode())

# Stage 2: what at least one rule needs in order to report anything (see each rule's docs).
_TRIGGER_METHODS = frozenset({
    "gradient", "jacobian", "batch_jacobian", "gradients", "compute_gradients",  # gradient sources
    "apply_gradients", "minimize",                                              # optimizer steps
    "clip_by_global_norm",                                                      # GRD004 / GRD005
    "get_scaled_loss", "get_unscaled_gradients", "scale_loss",                  # GRD014
    "get_gradients", "get_updates",                                             # GRD015
})
_OPTIMIZER_LIKE_METHODS = frozenset({"apply", "build"})  # only on names that look like optimizers
_TRIGGER_KEYWORDS = frozenset({"clipnorm", "global_clipnorm", "clipvalue"})  # GRD016
_ASSIGNED_ATTRIBUTES = frozenset({  # GRD002 (optimizer lists) and GRD013 (Keras collections)
    "variables", "_variables", "var_list", "_var_list", "trainable_variables", "trainable_weights",
    "non_trainable_variables", "non_trainable_weights", "weights",
})


def passes_text(data: bytes | str) -> bool:
    """Stage 1: any trigger word in the raw text."""
    if isinstance(data, bytes):
        return TRIGGER.search(data) is not None
    return _TRIGGER_TEXT.search(data) is not None


def passes_tree(tree: ast.AST) -> bool:
    """Stage 2: the syntax tree has a call, keyword, assignment or literal that some rule needs."""
    for node in ast.walk(tree):
        kind = type(node)
        if kind is ast.Call:
            func = node.func
            if type(func) is ast.Attribute:
                attr = func.attr
                if attr in _TRIGGER_METHODS:
                    return True
                if attr in _OPTIMIZER_LIKE_METHODS and "opt" in _terminal(func.value):
                    return True
                if attr == "variables" and not node.args and not node.keywords:
                    return True
            elif type(func) is ast.Name and func.id in ("gradients", "clip_by_global_norm"):
                return True
            for keyword in node.keywords:
                if keyword.arg in _TRIGGER_KEYWORDS:
                    return True
                if keyword.arg == "optimizer" and type(keyword.value) in (ast.Name, ast.Attribute):
                    return True
        elif kind is ast.Assign:
            if any(type(t) is ast.Attribute and t.attr in _ASSIGNED_ATTRIBUTES for t in node.targets):
                return True
        elif kind is ast.Constant:
            if type(node.value) is str and ":0" in node.value:
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
