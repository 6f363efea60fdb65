"""Tree helpers for building fixes: parents of nodes, enclosing statements, fresh names.

The parent map is built lazily, only when a rule builds a fix (files with findings), and cached for
the most recent module.
"""
from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from gradlint.semantic.syntax import names_in

_cache: list = []  # [(module, parents)] for the most recent module: keeps the module alive, ids valid


def parents(module: cst.Module) -> dict[int, cst.CSTNode]:
    """``id(child) -> parent`` for every node of ``module``."""
    if _cache and _cache[0][0] is module:
        return _cache[0][1]
    mapping: dict[int, cst.CSTNode] = {}
    stack: list[cst.CSTNode] = [module]
    while stack:
        current = stack.pop()
        for child in current.children:
            mapping[id(child)] = current
            stack.append(child)
    _cache[:] = [(module, mapping)]
    return mapping


def parent(module: cst.Module, node: cst.CSTNode) -> Optional[cst.CSTNode]:
    return parents(module).get(id(node))


def ancestors(module: cst.Module, node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """Parent, grandparent, ... up to the module."""
    mapping = parents(module)
    current = mapping.get(id(node))
    while current is not None:
        yield current
        current = mapping.get(id(current))


def child_toward(module: cst.Module, ancestor: cst.CSTNode, node: cst.CSTNode) -> Optional[cst.CSTNode]:
    """The child of ``ancestor`` on the path down to ``node`` (None if ``node`` is not below it)."""
    previous = node
    for current in ancestors(module, node):
        if current is ancestor:
            return previous
        previous = current
    return None


def enclosing_statement(module: cst.Module, node: cst.CSTNode) -> Optional[cst.BaseStatement]:
    """The statement (simple statement line or compound statement) that contains ``node``."""
    for current in (node, *ancestors(module, node)):
        if isinstance(current, cst.BaseStatement):
            return current
    return None


def enclosing_scope(module: cst.Module, node: cst.CSTNode) -> cst.CSTNode:
    """The function, lambda or module whose namespace ``node`` runs in (classes are skipped)."""
    for current in ancestors(module, node):
        if isinstance(current, (cst.FunctionDef, cst.Lambda)):
            return current
    return module


identifiers = names_in  # every variable-like identifier spelled anywhere in a node


def fresh_name(module: cst.Module, near: cst.CSTNode, preferred: str) -> str:
    """``preferred`` (or ``preferred_1``, ...) when no identifier of that spelling exists in the scope
    around ``near`` or in the module's top level (so it shadows nothing the code uses)."""
    taken = identifiers(enclosing_scope(module, near)) | {
        name for statement in module.body for name in _top_level_names(statement)}
    candidate, number = preferred, 1
    while candidate in taken:
        candidate = f"{preferred}_{number}"
        number += 1
    return candidate


def _top_level_names(statement: cst.CSTNode) -> set[str]:
    if isinstance(statement, (cst.FunctionDef, cst.ClassDef)):
        return {statement.name.value}
    return identifiers(statement)


def needs_parentheses_in_conditional(expr: cst.BaseExpression) -> bool:
    """Would ``expr`` as the body of ``X if c else None`` parse differently without parentheses?"""
    if expr.lpar:
        return False
    return isinstance(expr, (cst.IfExp, cst.Lambda, cst.NamedExpr, cst.Yield))


def parenthesize(expr: cst.BaseExpression) -> cst.BaseExpression:
    return expr.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


__all__ = [
    "ancestors", "child_toward", "enclosing_scope", "enclosing_statement", "fresh_name", "identifiers",
    "needs_parentheses_in_conditional", "parent", "parents", "parenthesize",
]
