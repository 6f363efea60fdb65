"""Where the walk is: enclosing loops, branches, recording tapes, the function, and provenance collection.

One :class:`WalkState` is shared by the statement walker, the expression evaluator and the call
interpreter; each of them reads the position of the walk from here instead of from each other.
"""
from __future__ import annotations

from typing import Optional

import libcst as cst

from gradlint.semantic.env import Env
from gradlint.semantic.imports import ImportMap
from gradlint.semantic.records import FunctionContext, LoopInfo, TapeInfo

MODULE_CONTEXT_NAME = "<module>"


class WalkState:
    """The position of the one traversal over a module, and the sets of provenance being collected."""

    def __init__(self, module: cst.Module, model) -> None:
        self.module = module
        self.model = model
        self.imports: ImportMap = model.imports
        self.module_env = Env("module")
        self.module_env.context = FunctionContext(id(self.module_env))
        self.loops: list[LoopInfo] = []
        self.branches: list[tuple[int, int]] = []
        self.active_tapes: list[TapeInfo] = []
        self.multi_replica_scopes: list[cst.CSTNode] = []
        self.provenance_stack: list[set] = []
        self.block_stack: list[list] = []  # [statements, index of the statement running] per open block
        self.binding_tapes: Optional[frozenset] = None  # tapes to record for an alias assignment
        self.pending_clips: list = []
        self.in_replica_function = False
        self.expecting_error = 0   # depth of `with pytest.raises(...)` blocks: code there fails on purpose
        self.discarding: Optional[cst.CSTNode] = None  # the value of the expression statement being run

    # ------------------------------------------------------------- position
    @property
    def tapes_key(self) -> frozenset:
        return frozenset(id(t) for t in self.active_tapes)

    @property
    def expects_error(self) -> bool:
        return self.expecting_error > 0

    def runs_later_in_block(self, with_node: Optional[cst.With]) -> bool:
        """Are there statements after the current one in ``with_node``'s body?"""
        if with_node is None:
            return False
        body = with_node.body.body
        for statements, index in reversed(self.block_stack):
            if statements is body:
                return index < len(statements) - 1
        return False

    def enter_function(self, in_replica_function: bool) -> tuple:
        saved = (self.loops, self.branches, self.active_tapes, self.multi_replica_scopes, self.in_replica_function)
        self.loops, self.branches, self.active_tapes, self.multi_replica_scopes = [], [], [], []
        self.in_replica_function = in_replica_function
        return saved

    def leave_function(self, saved: tuple) -> None:
        (self.loops, self.branches, self.active_tapes, self.multi_replica_scopes,
         self.in_replica_function) = saved

    # ----------------------------------------------------------- provenance
    def note(self, entry: tuple) -> None:
        if self.provenance_stack:
            self.provenance_stack[-1].add(entry)

    def note_all(self, entries) -> None:
        if self.provenance_stack and entries:
            self.provenance_stack[-1].update(entries)

    def note_break(self, node: cst.CSTNode, description: str, inputs=()) -> None:
        """``node`` produces a value without gradient: record it in place of its inputs' provenance.

        When an input is already cut off, that earlier op is the cause and is passed on instead.
        """
        earlier = [entry for entry in inputs if entry[0] == "break"]
        if earlier:
            self.note_all(earlier)
            return
        self.model.nodes[id(node)] = node
        self.note(("break", id(node), description, self.tapes_key))

    def open_collection(self) -> None:
        self.provenance_stack.append(set())

    def close_collection(self) -> frozenset:
        return frozenset(self.provenance_stack.pop())
