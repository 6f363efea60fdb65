"""Source positions of libcst nodes, computed by one code generation pass with cheap bookkeeping.

libcst's ``PositionProvider`` splits every token with a regex and builds two objects per node; on a
large file that costs twice the parse. This state counts newlines with ``str.count`` and keeps plain
tuples; :class:`~libcst.metadata.CodeRange` objects are built only for the nodes a rule reports.
"""
from __future__ import annotations

import re

import libcst as cst
from libcst._nodes.internal import CodegenState
from libcst.metadata import CodePosition, CodeRange

_LONE_CR = re.compile(r"\r(?!\n)")


class _Record:
    """``with state.record_syntactic_position(node, ...)`` as a plain object (faster than a generator)."""

    __slots__ = ("state", "node", "start_node", "end_node", "start")

    def __init__(self, state: "_PositionState", node, start_node, end_node) -> None:
        self.state, self.node, self.start_node, self.end_node = state, node, start_node, end_node

    def __enter__(self) -> None:
        self.start = (self.state.line, self.state.column)

    def __exit__(self, *exc) -> None:
        state = self.state
        computed = state.computed
        start = computed[self.start_node][0] if self.start_node is not None else self.start
        end = computed[self.end_node][1] if self.end_node is not None else (state.line, state.column)
        computed[self.node] = (start, end)


class _PositionState(CodegenState):
    def __init__(self, module: cst.Module) -> None:
        super().__init__(default_indent=module.default_indent, default_newline=module.default_newline)
        self.line = 1
        self.column = 0
        self.computed: dict = {}
        self.stack: list = []

    def before_codegen(self, node) -> None:
        self.stack.append((self.line, self.column))

    def after_codegen(self, node) -> None:
        start = self.stack.pop()
        if node not in self.computed:  # nodes without a syntactic position span all they own
            self.computed[node] = (start, (self.line, self.column))

    def add_indent_tokens(self) -> None:
        for token in self.indent_tokens:
            self.add_token(token)

    def add_token(self, value: str) -> None:
        newlines = value.count("\n")
        if "\r" in value:
            newlines += len(_LONE_CR.findall(value))
            last = max(value.rfind("\n"), value.rfind("\r"))
        else:
            last = value.rfind("\n") if newlines else -1
        if last < 0:
            self.column += len(value)
        else:
            self.line += newlines
            self.column = len(value) - last - 1

    def record_syntactic_position(self, node, *, start_node=None, end_node=None):
        return _Record(self, node, start_node, end_node)


def compute_positions(module: cst.Module) -> dict:
    """``{node: ((start_line, start_col), (end_line, end_col))}`` for every node with a syntactic position."""
    state = _PositionState(module)
    module._codegen(state)
    return state.computed


def to_range(span: tuple) -> CodeRange:
    (start_line, start_col), (end_line, end_col) = span
    return CodeRange(CodePosition(start_line, start_col), CodePosition(end_line, end_col))
