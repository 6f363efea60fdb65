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

from gradlint.semantic.tfapi import KERAS_OPTIMIZER_CLASSES
from gradlint.triggers import Word

_OPTIMIZER_LIKE = "opt"


# Word kind -> its regex, `NAME` standing for the escaped word. Each pattern starts with a literal
# character, so the regex engine can skip ahead (a leading `\b` or character class makes it try every
# position). A kind not listed is a plain string.
_PATTERNS = {
    "call": r"NAME\s*\(",
    "discarded_call": r"NAME\s*\(",
    "optimizer_call": r"\.NAME\s*\(",
    "bare_call": r"\.NAME\s*\(\s*\)",
    "keyword": r"NAME\s*=(?!=)",
    "keyword_reference": r"NAME\s*=(?!=)",
    "optimizer_keyword": r"NAME\s*=(?!=)",
    "assigned_attribute": r"\.NAME\s*=(?!=)",
    "attribute": r"\.NAME\b",
    "optimizer_attribute": r"\.NAME\b",
    "definition": r"def\s+NAME\s*\(",
    "optimizer_definition": r"def\s+NAME\s*\(",
    "string_suffix": r"NAME\$?['\"]",
    "name_test": r"\.name\b",
}


def _pattern(word: Word) -> str:
    return _PATTERNS.get(word.kind, "NAME").replace("NAME", re.escape(word.name))


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
                     "optimizer_keyword", "assigned_attribute", "optimizer_attribute", "attribute", "definition",
                     "optimizer_definition"):
            self._names[kind] = frozenset(w.name for w in words if w.kind == kind)
        self._strings = tuple(sorted(w.name for w in words if w.kind == "string"))
        self._suffixes = tuple(sorted(w.name for w in words if w.kind == "string_suffix"))
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
                    if arg in names["optimizer_keyword"] and name in KERAS_OPTIMIZER_CLASSES:
                        yield Word("optimizer_keyword", arg)
                if self._name_test and name in ("startswith", "endswith") and type(func) is ast.Attribute \
                        and _is_name_attribute(func.value) and node.args and _scoped_string(node.args[0]):
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
                    for text in self._suffixes:
                        if value.endswith(text) or value.endswith(text + "$"):
                            yield Word("string_suffix", text)
            elif kind is ast.ClassDef:
                if names["optimizer_definition"] and any(_terminal_name(b) == "Optimizer" for b in node.bases):
                    for statement in node.body:
                        if type(statement) is ast.FunctionDef and statement.name in names["optimizer_definition"]:
                            yield Word("optimizer_definition", statement.name)
            elif kind is ast.Compare:
                if self._name_test and _is_name_test(node):
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


def _selection(rules) -> Prefilter:
    if rules is None:
        from gradlint.rules import ALL_RULES

        rules = ALL_RULES
    return prefilter_for(tuple(rules))


def might_have_gradient_code(data: bytes | str, tree: Optional[ast.AST] = None, rules=None) -> bool:
    """Can some rule of ``rules`` (default: every rule) report anything in this file?"""
    return _selection(rules).might_report(data, tree)


def passes_text(data: bytes | str, rules=None) -> bool:
    """Stage 1 only: a trigger word of ``rules`` (default: every rule) in the raw text. For text that does
    not parse (a notebook's broken cells), where stage 2 cannot run."""
    prefilter = _selection(rules)
    return isinstance(prefilter, _Everything) or prefilter.passes_text(data)


def _terminal_name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _terminal(node: ast.AST) -> str:
    return _terminal_name(node).lower()


def _is_name_attribute(node: ast.AST) -> bool:
    return type(node) is ast.Attribute and node.attr == "name"


def _scoped_string(node: ast.AST) -> bool:
    """A string literal that names a scope (``'dense/'``, ``'encoder/kernel'``)."""
    return type(node) is ast.Constant and type(node.value) is str and "/" in node.value


def _is_name_test(node: ast.Compare) -> bool:
    """``'head' in v.name`` (a literal looked up in a name), or ``v.name == 'scope/kernel'``."""
    if len(node.comparators) != 1:
        return False
    left, right, operator = node.left, node.comparators[0], type(node.ops[0])
    if operator in (ast.In, ast.NotIn):
        return type(left) is ast.Constant and type(left.value) is str and _is_name_attribute(right)
    if operator in (ast.Eq, ast.NotEq):
        return (_is_name_attribute(left) and _scoped_string(right)) or (
            _is_name_attribute(right) and _scoped_string(left))
    return False
