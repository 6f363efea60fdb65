"""Decide cheaply whether a file can contain anything a rule reports, before the libcst parse.

libcst parses at ~55-70 ms per 1,000 lines; most files of a code base have no gradient code. The
prefilter is built from the trigger words the selected rules declare (``gradlint/triggers.py``), in two
stages:

1. a byte regex for the first word of every alternative (microseconds per file);
2. for files that pass, one walk of the stdlib ``ast`` (~7 ms per 1,000 lines, free under flake8, which
   hands plugins its tree) collecting the words present; a file passes when every word of some
   alternative of some rule is there.

Both stages are conservative: when in doubt (a syntax error, odd input) the file goes to libcst, which
reports problems properly. ``tests/linter/test_rule_examples.py`` runs every rule's examples through the
prefilter, so a rule whose triggers miss a case fails its own tests.
"""
from __future__ import annotations

import ast
import re
import warnings
from functools import lru_cache
from typing import Iterable, Optional, Sequence

from gradlint.triggers import Word

_OPTIMIZER_LIKE = "opt"


def _pattern(word: Word) -> str:
    name = re.escape(word.name)
    kind = word.kind
    if kind in ("call", "discarded_call"):
        return rf"\b{name}\s*\("
    if kind == "optimizer_call":
        return rf"\.{name}\s*\("
    if kind == "bare_call":
        return rf"\.{name}\s*\(\s*\)"
    if kind in ("keyword", "keyword_reference"):
        return rf"[(,]\s*{name}\s*=(?!=)"
    if kind == "assigned_attribute":
        return rf"\.{name}\s*=(?!=)"
    if kind in ("attribute", "optimizer_attribute"):
        return rf"\.{name}\b"
    if kind == "definition":
        return rf"\bdef\s+{name}\s*\("
    if kind == "name_test":
        return r"\.name\b"
    return name  # string


class Prefilter:
    """The two stages for one selection of rules."""

    def __init__(self, alternatives: Sequence[tuple[Word, ...]]) -> None:
        self.alternatives = tuple(dict.fromkeys(alternatives))
        firsts = sorted({_pattern(alternative[0]) for alternative in self.alternatives if alternative})
        self.text_pattern = re.compile("|".join(firsts)) if firsts else None
        self.byte_pattern = re.compile("|".join(firsts).encode()) if firsts else None
        words = {word for alternative in self.alternatives for word in alternative}
        self.single = frozenset(alternative[0] for alternative in self.alternatives if len(alternative) == 1)
        self.compound = tuple(alternative for alternative in self.alternatives if len(alternative) > 1)
        self._names: dict[str, frozenset[str]] = {}
        for kind in ("call", "optimizer_call", "bare_call", "discarded_call", "keyword", "keyword_reference",
                     "assigned_attribute", "optimizer_attribute", "attribute", "definition"):
            self._names[kind] = frozenset(w.name for w in words if w.kind == kind)
        self._strings = tuple(sorted(w.name for w in words if w.kind == "string"))
        self._name_test = any(w.kind == "name_test" for w in words)
        self._attributes = self._names["attribute"] | self._names["optimizer_attribute"]
        self._call_names = self._names["call"] | self._names["optimizer_call"] | self._names["bare_call"]

    # --------------------------------------------------------------- stage 1
    def passes_text(self, data: bytes | str) -> bool:
        pattern = self.byte_pattern if isinstance(data, bytes) else self.text_pattern
        return pattern is not None and pattern.search(data) is not None

    # --------------------------------------------------------------- stage 2
    def passes_tree(self, tree: ast.AST) -> bool:
        found: set[Word] = set()
        for word in self._words(tree):
            if word in self.single:
                return True
            found.add(word)
        return any(all(word in found for word in alternative) for alternative in self.compound)

    def _words(self, tree: ast.AST) -> Iterable[Word]:
        names = self._names
        calls, attributes = self._call_names, self._attributes
        for node in ast.walk(tree):
            kind = type(node)
            if kind is ast.Call:
                func = node.func
                name = func.attr if type(func) is ast.Attribute else func.id if type(func) is ast.Name else None
                if name is not None and name in calls:
                    if name in names["call"]:
                        yield Word("call", name)
                    if type(func) is ast.Attribute:
                        if name in names["optimizer_call"] and _OPTIMIZER_LIKE in _terminal(func.value):
                            yield Word("optimizer_call", name)
                        if name in names["bare_call"] and not node.args and not node.keywords:
                            yield Word("bare_call", name)
                for keyword in node.keywords:
                    arg = keyword.arg
                    if arg in names["keyword"]:
                        yield Word("keyword", arg)
                    if arg in names["keyword_reference"] and type(keyword.value) in (ast.Name, ast.Attribute):
                        yield Word("keyword_reference", arg)
                if self._name_test and name in ("startswith", "endswith") and type(func) is ast.Attribute \
                        and _is_name_attribute(func.value):
                    yield Word("name_test")
            elif kind is ast.Expr:
                value = node.value
                if type(value) is ast.Call:
                    func = value.func
                    name = func.attr if type(func) is ast.Attribute else func.id if type(func) is ast.Name else None
                    if name in names["discarded_call"]:
                        yield Word("discarded_call", name)
            elif kind is ast.Assign:
                for target in node.targets:
                    if type(target) is ast.Attribute and target.attr in names["assigned_attribute"]:
                        yield Word("assigned_attribute", target.attr)
            elif kind is ast.Attribute:
                if node.attr in attributes and type(node.ctx) is ast.Load:
                    if node.attr in names["attribute"]:
                        yield Word("attribute", node.attr)
                    if node.attr in names["optimizer_attribute"] and _OPTIMIZER_LIKE in _terminal(node.value):
                        yield Word("optimizer_attribute", node.attr)
            elif kind is ast.Constant:
                value = node.value
                if type(value) is str:
                    for text in self._strings:
                        if text in value:
                            yield Word("string", text)
            elif kind is ast.Compare:
                if self._name_test and (_is_name_attribute(node.left) or any(
                        _is_name_attribute(c) for c in node.comparators)):
                    yield Word("name_test")
            elif kind is ast.FunctionDef or kind is ast.AsyncFunctionDef:
                if node.name in names["definition"]:
                    yield Word("definition", node.name)

    def might_report(self, data: bytes | str, tree: Optional[ast.AST] = None) -> bool:
        if not self.passes_text(data):
            return False
        if tree is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tree = ast.parse(data)
            except Exception:  # syntax errors, NUL bytes, deep nesting: let the real parser report them
                return True
        return self.passes_tree(tree)


class _Everything(Prefilter):
    """A selection with a rule that declares no triggers: every file may have a finding."""

    def __init__(self) -> None:
        super().__init__(())

    def might_report(self, data: bytes | str, tree: Optional[ast.AST] = None) -> bool:
        return True


@lru_cache(maxsize=64)
def prefilter_for(rules: tuple) -> Prefilter:
    """The prefilter of a selection of rules (classes with ``TRIGGERS``), built once per selection."""
    if any(getattr(rule, "TRIGGERS", None) is None for rule in rules):
        return _Everything()
    return Prefilter([alternative for rule in rules for alternative in rule.TRIGGERS])


def might_have_gradient_code(data: bytes | str, tree: Optional[ast.AST] = None, rules=None) -> bool:
    """Can some rule of ``rules`` (default: every rule) report anything in this file?"""
    if rules is None:
        from gradlint.rules import ALL_RULES

        rules = ALL_RULES
    return prefilter_for(tuple(rules)).might_report(data, tree)


def _terminal(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr.lower()
    if isinstance(node, ast.Name):
        return node.id.lower()
    return ""


def _is_name_attribute(node: ast.AST) -> bool:
    return type(node) is ast.Attribute and node.attr == "name"
