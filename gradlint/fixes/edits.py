"""Edits and fixes: what a rule proposes to change, as libcst nodes matched by identity.

An :class:`Edit` replaces one node of the parsed tree (found by identity, never by value) with a new
node, or -- for a statement in a block -- with ``cst.FlattenSentinel([...])`` (insert statements
around it, or move it) or ``cst.RemovalSentinel.REMOVE`` (delete it). A :class:`Fix` is the edits
that together remove one finding, its safety class and a one-line description.

Everything outside the replaced nodes keeps its bytes: the tree is rendered by libcst, which keeps
comments and formatting. Replacement nodes may reuse (unchanged) nodes of the original tree.

This module imports only libcst: rules import it, and linting must stay light.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Union

import libcst as cst

Safety = Literal["safe", "unsafe"]
SAFETIES: tuple[str, ...] = ("safe", "unsafe")
Replacement = Union[cst.CSTNode, cst.FlattenSentinel, cst.RemovalSentinel]


@dataclass(frozen=True, eq=False)
class Edit:
    """Replace ``node`` (an object of the parsed tree) with ``replacement``."""

    node: cst.CSTNode
    replacement: Replacement


@dataclass(frozen=True, eq=False)
class Fix:
    """The edits that remove one finding. ``safety``: "safe" (applied by default) or "unsafe"
    (only with ``--unsafe-fixes``). Edits of one fix must not overlap (no edited node inside another)."""

    edits: tuple[Edit, ...]
    safety: Safety
    description: str

    def __post_init__(self) -> None:
        if self.safety not in SAFETIES:
            raise ValueError(f"fix safety must be one of {SAFETIES}, not {self.safety!r}")
        if not self.edits:
            raise ValueError("a fix needs at least one edit")
        object.__setattr__(self, "edits", tuple(self.edits))


def replace(node: cst.CSTNode, replacement: Replacement) -> Edit:
    return Edit(node, replacement)


def remove(statement: cst.CSTNode) -> Edit:
    """Delete a statement (or another node libcst allows to remove)."""
    return Edit(statement, cst.RemovalSentinel.REMOVE)


def insert_before(statement: cst.CSTNode, *new: cst.CSTNode) -> Edit:
    return Edit(statement, cst.FlattenSentinel([*new, statement]))


def insert_after(statement: cst.CSTNode, *new: cst.CSTNode) -> Edit:
    return Edit(statement, cst.FlattenSentinel([statement, *new]))


class _ByIdentity(cst.CSTTransformer):
    """Replaces nodes found by identity; counts how many were found."""

    def __init__(self, replacements: Mapping[int, Replacement]) -> None:
        super().__init__()
        self.replacements = replacements
        self.found: set[int] = set()

    def on_leave(self, original_node, updated_node):
        key = id(original_node)
        if key in self.replacements:
            self.found.add(key)
            return self.replacements[key]
        return updated_node


class EditError(Exception):
    """Edits that cannot be applied (a node not in the tree, a replacement libcst rejects)."""


def apply_edits(tree: cst.CSTNode, edits: Iterable[Edit]) -> cst.CSTNode:
    """``tree`` with every edit applied (edits must not overlap). Raises EditError."""
    edits = list(edits)
    replacements = {id(edit.node): edit.replacement for edit in edits}
    if len(replacements) != len(edits):
        raise EditError("two edits replace the same node")
    transformer = _ByIdentity(replacements)
    try:
        result = tree.visit(transformer)
    except Exception as exc:  # libcst validates where sentinels and node types may go
        raise EditError(f"{type(exc).__name__}: {exc}") from None
    if len(transformer.found) != len(replacements):
        raise EditError(f"{len(replacements) - len(transformer.found)} edited node(s) are not in the tree")
    if not isinstance(result, cst.CSTNode):
        raise EditError("the edited tree itself was removed")
    return result


def replace_within(node: cst.CSTNode, replacements: Mapping[cst.CSTNode, Replacement]) -> cst.CSTNode:
    """A copy of ``node`` with some of its descendants replaced (by identity).

    Use it to build one edit that changes a statement and something inside it (edits of a fix must
    not overlap): ``replace(loop, replace_within(loop, {call: new_call}))``.
    """
    return apply_edits(node, [Edit(old, new) for old, new in replacements.items()])


def subtree_ids(node: cst.CSTNode) -> set[int]:
    """Ids of ``node`` and all its descendants."""
    found: set[int] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        found.add(id(current))
        stack.extend(current.children)
    return found


__all__ = [
    "Edit", "EditError", "Fix", "Replacement", "SAFETIES", "Safety", "apply_edits", "insert_after",
    "insert_before", "remove", "replace", "replace_within", "subtree_ids",
]
