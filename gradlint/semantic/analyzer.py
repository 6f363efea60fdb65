"""The one traversal: walks a module in execution order and records what rules need.

An abstract interpreter over libcst nodes. Statements run in order (this module); expressions
evaluate to abstract values (``expressions.py``); calls into TensorFlow / Keras get their meaning in
``calls.py``. Function bodies run after the code that defines them, with their parameters seeded from
calls in the same file; a function seeded again later is re-analysed a bounded number of times, and
its records replace the earlier ones (records are keyed by node).
"""
from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Optional

import libcst as cst

from gradlint.semantic import tfapi
from gradlint.semantic.calls import CallSemantics
from gradlint.semantic.env import EMPTY, Env, merge
from gradlint.semantic.expressions import ExpressionEvaluator
from gradlint.semantic.imports import ImportMap
from gradlint.semantic.records import AttributeAssignment, LoopInfo, TapeInfo
from gradlint.semantic.syntax import (
    all_params,
    guard_keys,
    is_staticmethod,
    parameter_names,
    target_names,
    terminal_name,
    terminates,
)
from gradlint.semantic.values import (
    FunctionValue,
    GradElem,
    KerasObject,
    OptimizerValue,
    Seq,
    TapeValue,
    TupleValue,
    Value,
    iterate,
)

_MAX_FUNCTION_PASSES = 3


_NOTHING_TO_DO = frozenset({cst.Pass, cst.Break, cst.Continue, cst.Global, cst.Nonlocal})
def _alias_root(expr: cst.BaseExpression) -> Optional[str]:
    """``x`` for ``x``, ``x[0]``, ``x.attr`` or a tuple of those: assignments that compute nothing new."""
    while isinstance(expr, (cst.Subscript, cst.Attribute)):
        expr = expr.value
    return expr.value if isinstance(expr, cst.Name) else None


class ClassValue(Value):
    """A class defined in this file; ``keras_class`` names its Keras base, if any."""

    def __init__(self, node: cst.ClassDef, keras_class: Optional[str]) -> None:
        self.node = node
        self.keras_class = keras_class


class Analyzer(ExpressionEvaluator, CallSemantics):
    """Builds the facts of a :class:`~gradlint.semantic.model.SemanticModel`."""

    def __init__(self, module: cst.Module, model) -> None:
        self.module = module
        self.model = model
        self.imports: ImportMap = model.imports
        self.module_env = Env("module")
        self.loops: list[LoopInfo] = []
        self.branches: list[tuple[int, int]] = []
        self.active_tapes: list[TapeInfo] = []
        self.multi_replica_scopes: list[cst.CSTNode] = []
        self.provenance_stack: list[set] = []
        self.block_stack: list[list] = []  # [statements, index of the statement running] per open block
        self.binding_tapes: Optional[frozenset] = None  # tapes to record for an alias assignment
        self.pending_clips: list = []
        self.pending: deque[FunctionValue] = deque()
        self.seeds: dict[int, dict[str, Value]] = {}
        self.passes: dict[int, int] = {}
        self.queued: set[int] = set()
        self.replica_functions: set[int] = set()
        self.in_replica_function = False
        self.envs: list[Env] = []  # keeps scope objects alive so their ids stay unique
        self.expecting_error = 0   # depth of `with pytest.raises(...)` blocks: code there fails on purpose

    # ----------------------------------------------------------------- driver
    def run(self) -> None:
        self.exec_block(self.module.body, self.module_env)
        while self.pending:
            function = self.pending.popleft()
            self.queued.discard(id(function.node))
            self.analyze_function(function)

    def analyze_function(self, function: FunctionValue) -> None:
        key = id(function.node)
        self.passes[key] = self.passes.get(key, 0) + 1
        node = function.node
        params = parameter_names(node.params)
        class_env = function.class_env
        self_name = params[0] if class_env is not None and params and not is_staticmethod(node) else None
        env = Env("function", parent=function.env, class_env=class_env, self_name=self_name)
        self.envs.append(env)
        seeds = self.seeds.get(key, {})
        for name in params:
            env.names[name] = seeds.get(name)
        if self_name is not None and class_env is not None and class_env.keras_class:
            env.names[self_name] = KerasObject(class_env.keras_class)
        saved = (self.loops, self.branches, self.active_tapes, self.multi_replica_scopes, self.in_replica_function)
        self.loops, self.branches, self.active_tapes, self.multi_replica_scopes = [], [], [], []
        self.in_replica_function = key in self.replica_functions
        try:
            self.exec_block(node.body.body, env)
        finally:
            (self.loops, self.branches, self.active_tapes, self.multi_replica_scopes,
             self.in_replica_function) = saved

    def schedule(self, function: FunctionValue) -> None:
        key = id(function.node)
        if key in self.queued or self.passes.get(key, 0) >= _MAX_FUNCTION_PASSES:
            return
        self.queued.add(key)
        self.pending.append(function)

    @property
    def tapes_key(self) -> frozenset:
        return frozenset(id(t) for t in self.active_tapes)

    @property
    def expects_error(self) -> bool:
        return self.expecting_error > 0

    # ------------------------------------------------------------- statements
    def exec_block(self, statements, env: Env) -> None:
        saved_guards, depth = env.guarded, len(self.branches)
        frame = [statements, 0]
        self.block_stack.append(frame)
        try:
            for index, statement in enumerate(statements):
                frame[1] = index
                self.exec_statement(statement, env)
        finally:
            self.block_stack.pop()
        env.guarded = saved_guards
        del self.branches[depth:]

    def runs_later_in_block(self, with_node: Optional[cst.With]) -> bool:
        """Are there statements after the current one in ``with_node``'s body?"""
        if with_node is None:
            return False
        body = with_node.body.body
        for statements, index in reversed(self.block_stack):
            if statements is body:
                return index < len(statements) - 1
        return False

    def exec_suite(self, suite: cst.BaseSuite, env: Env) -> None:
        self.exec_block(suite.body, env)

    def exec_statement(self, node: cst.CSTNode, env: Env) -> None:
        handler = _STATEMENTS.get(type(node))
        if handler is None:
            self.visit_children(node, env)
        else:
            handler(self, node, env)

    def exec_simple_line(self, node: cst.SimpleStatementLine | cst.SimpleStatementSuite, env: Env) -> None:
        for small in node.body:
            self.exec_small(small, env)

    def exec_try(self, node: cst.Try | cst.TryStar, env: Env) -> None:
        self.exec_suite(node.body, env)
        for handler in node.handlers:
            if handler.type is not None:
                self.eval(handler.type, env)
            self.exec_suite(handler.body, env)
        if node.orelse is not None:
            self.exec_suite(node.orelse.body, env)
        if node.finalbody is not None:
            self.exec_suite(node.finalbody.body, env)

    def exec_match(self, node: cst.Match, env: Env) -> None:
        self.eval(node.subject, env)
        for index, case in enumerate(node.cases):
            self.branches.append((id(node), index))
            if case.guard is not None:
                self.eval(case.guard, env)
            self.exec_suite(case.body, env)
            self.branches.pop()

    def exec_small(self, node: cst.CSTNode, env: Env) -> None:
        kind = type(node)
        if kind is cst.Expr:
            self.eval(node.value, env)
        elif kind is cst.Assign:
            self.exec_assign(node, env)
        elif kind is cst.AnnAssign:
            if node.value is not None:
                value, provenance = self.eval_tracked(node.value, env)
                self.bind(node.target, value, env, provenance)
        elif kind is cst.AugAssign:
            target, target_provenance = self.eval_tracked(node.target, env)
            value, provenance = self.eval_tracked(node.value, env)
            result = self.note_arithmetic(node, node.operator, (target, value), env)
            if isinstance(node.target, cst.Name):
                keep = target if result is None and not isinstance(target, GradElem) else result
                self.bind(node.target, keep, env, merge(target_provenance, provenance))
        elif kind is cst.Return:
            if node.value is not None:
                self.eval(node.value, env)
        elif kind is cst.Assert:
            self.eval(node.test, env)
            env.guarded = env.guarded | guard_keys(node.test, True)
        elif kind is cst.Import:
            self.imports.add_import(node)
        elif kind is cst.ImportFrom:
            self.imports.add_import_from(node)
        elif kind in _NOTHING_TO_DO:
            return
        else:  # Raise, Del, ...
            self.visit_children(node, env)

    def exec_assign(self, node: cst.Assign, env: Env) -> None:
        self.pending_clips = []
        value, provenance = self.eval_tracked(node.value, env)
        root = _alias_root(node.value)
        # `out, aux = out` or `y = x` computes nothing: the new names keep the tapes that recorded the value
        self.binding_tapes = env.tapes_when_bound(root) if root is not None else None
        first_target = node.targets[0].target
        if isinstance(value, TupleValue) and value.global_clip is not None and isinstance(first_target, cst.Name):
            value = replace(value, assigned_in=node)  # `grads = tf.clip_by_global_norm(...)`: not unpacked
        if isinstance(value, Seq) and value.is_iterator and value.created_by is not None:
            value.assigned_in = node
        named = not (isinstance(first_target, cst.Name) and first_target.value == "_")
        head = first_target
        if isinstance(first_target, (cst.Tuple, cst.List)) and first_target.elements:
            head = first_target.elements[0].value
            named = not (isinstance(head, cst.Name) and head.value == "_")
        result_name = head.value if named and isinstance(head, cst.Name) and len(node.targets) == 1 else None
        for clip in self.pending_clips:
            clip.result_named = named
            clip.result_name = result_name
        self.pending_clips = []
        try:
            for target in node.targets:
                self.bind(target.target, value, env, provenance)
        finally:
            self.binding_tapes = None

    def exec_if(self, node: cst.If, env: Env) -> None:
        self.eval(node.test, env)
        saved = env.guarded
        env.guarded = saved | guard_keys(node.test, True)
        self.branches.append((id(node), 0))
        self.exec_suite(node.body, env)
        self.branches.pop()
        env.guarded = saved | guard_keys(node.test, False)
        self.branches.append((id(node), 1))
        if isinstance(node.orelse, cst.If):
            self.exec_if(node.orelse, env)
        elif isinstance(node.orelse, cst.Else):
            self.exec_suite(node.orelse.body, env)
        self.branches.pop()
        env.guarded = saved
        if terminates(node.body):
            # the rest of the enclosing block runs only when the test was false: an implicit `else`
            env.guarded = saved | guard_keys(node.test, False)
            self.branches.append((id(node), 1))

    def exec_for(self, node: cst.For, env: Env) -> None:
        iterable, provenance = self.eval_tracked(node.iter, env)
        self.consume(iterable, node)
        names = frozenset(target_names(node.target))
        self.bind(node.target, iterate(iterable), env, provenance)
        self.run_loop(LoopInfo(node, names, self.is_over_variables(node.iter, iterable, env)), env)

    def exec_while(self, node: cst.While, env: Env) -> None:
        self.eval(node.test, env)
        self.run_loop(LoopInfo(node, frozenset(), self.is_over_variables(node.test, None, env)), env)

    def run_loop(self, loop: LoopInfo, env: Env) -> None:
        """The body once (the analysis is not a fixed point over iterations), then the `else` block."""
        self.loops.append(loop)
        try:
            self.exec_suite(loop.node.body, env)
        finally:
            self.loops.pop()
        if loop.node.orelse is not None:
            self.exec_suite(loop.node.orelse.body, env)

    def exec_with(self, node: cst.With, env: Env) -> None:
        opened: list[TapeInfo] = []
        paused: list[TapeInfo] = []
        scopes = 0
        raises = any(self.is_raises_context(item.item) for item in node.items)
        for item in node.items:
            value, provenance = self.eval_tracked(item.item, env)
            if isinstance(value, TapeValue):
                if value.tape.with_node is None:
                    value.tape.with_node = node
                opened.append(value.tape)
            paused.extend(self.stopped_tapes(item.item, env))
            if self.is_multi_replica_scope(item.item, env):
                self.multi_replica_scopes.append(node)
                scopes += 1
            if item.asname is not None:
                if isinstance(value, TapeValue) and isinstance(item.asname.name, cst.Name):
                    value.tape.name = value.tape.name or item.asname.name.value
                self.bind(item.asname.name, value, env, provenance)
        saved_tapes = list(self.active_tapes)
        self.active_tapes = [t for t in self.active_tapes if t not in paused] + opened
        self.expecting_error += raises
        try:
            self.exec_suite(node.body, env)
        finally:
            self.expecting_error -= raises
            self.active_tapes = saved_tapes
            del self.multi_replica_scopes[len(self.multi_replica_scopes) - scopes:]

    def is_raises_context(self, expr: cst.BaseExpression) -> bool:
        if not isinstance(expr, cst.Call):
            return False
        name = terminal_name(expr.func) or ""
        if name.startswith("assertRaises"):
            return True
        return name == "raises" and self.imports.resolve(expr.func) == "pytest.raises"

    def stopped_tapes(self, expr: cst.BaseExpression, env: Env) -> list[TapeInfo]:
        """``with tape.stop_recording():`` pauses that tape."""
        if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) \
                and expr.func.attr.value == "stop_recording":
            value = self.eval_quiet(expr.func.value, env)
            if isinstance(value, TapeValue):
                return [value.tape]
        return []

    def exec_function_def(self, node: cst.FunctionDef, env: Env) -> None:
        for decorator in node.decorators:
            self.eval(decorator.decorator, env)
        for param in all_params(node.params):
            if param.default is not None:
                self.eval(param.default, env)
        if env.kind == "class":
            # methods see the enclosing scope, not the class body, as in Python
            function = FunctionValue(node, env.parent, env)
        else:
            function = FunctionValue(node, env, None)
        env.names[node.name.value] = function
        self.schedule(function)

    def exec_class_def(self, node: cst.ClassDef, env: Env) -> None:
        for decorator in node.decorators:
            self.eval(decorator.decorator, env)
        keras_class = None
        for base in node.bases:
            value = self.eval(base.value, env)
            qualified = self.imports.resolve(base.value)
            if isinstance(value, ClassValue) and value.keras_class:
                keras_class = value.keras_class
            elif qualified is not None and tfapi.keras_object_class(qualified):
                keras_class = tfapi.keras_object_class(qualified)
        for keyword in node.keywords:
            self.eval(keyword.value, env)
        class_env = Env("class", parent=env)
        class_env.keras_class = keras_class
        env.names[node.name.value] = ClassValue(node, keras_class)
        self.exec_suite(node.body, class_env)

    def visit_children(self, node: cst.CSTNode, env: Env) -> None:
        for child in node.children:
            if isinstance(child, cst.BaseExpression):
                self.eval(child, env)
            elif isinstance(child, cst.BaseSmallStatement):
                self.exec_small(child, env)
            elif isinstance(child, (cst.BaseSuite, cst.BaseStatement)):
                self.exec_statement(child, env)
            else:
                self.visit_children(child, env)

    # ---------------------------------------------------------------- binding
    def bind(self, target: cst.CSTNode, value: Optional[Value], env: Env, provenance=EMPTY) -> None:
        if isinstance(target, cst.Name):
            name = target.value
            env.names[name] = value
            env.provenance[name] = provenance
            env.bound_tapes[name] = self.binding_tapes if self.binding_tapes is not None else self.tapes_key
            if env.guarded:
                env.guarded = frozenset(k for k in env.guarded if k != name and not k.startswith(name + "["))
            if isinstance(value, OptimizerValue):
                value.info.keys.add((id(env.function_env()), name))
        elif isinstance(target, (cst.Tuple, cst.List)):
            elements = target.elements
            if isinstance(value, Seq):
                self.consume(value, target)
            for index, element in enumerate(elements):
                if isinstance(element, cst.StarredElement):
                    self.bind(element.value, value if isinstance(value, Seq) else None, env, provenance)
                    continue
                if isinstance(value, TupleValue) and len(value.items) == len(elements):
                    item = value.items[index]
                elif isinstance(value, Seq):
                    item = value.element
                else:
                    item = None
                self.bind(element.value, item, env, provenance)
        elif isinstance(target, cst.Attribute):
            self.bind_attribute(target, value, env, provenance)
        elif isinstance(target, cst.Subscript):
            base = self.eval(target.value, env)
            for element in target.slice:
                self.visit_children(element, env)
            if isinstance(base, Seq) and isinstance(value, GradElem):
                base.element = value  # `grads[i] = tf.clip_by_norm(g, 1.0)` changes the list in place
        elif isinstance(target, cst.StarredElement):
            self.bind(target.value, value, env, provenance)

    def bind_attribute(self, target: cst.Attribute, value: Optional[Value], env: Env, provenance) -> None:
        self.eval(target.value, env)
        key = self.binding_key(target, env)
        receiver = self.eval_quiet(target.value, env)
        info = receiver.info if isinstance(receiver, OptimizerValue) else None
        keras = receiver.class_name if isinstance(receiver, KerasObject) else None
        self.model.attribute_assignments.append(AttributeAssignment(
            target, target.attr.value, self.binding_key(target.value, env), info,
            expects_error=self.expects_error, receiver_keras=keras,
        ))
        if key is not None and key[0] == "self":
            class_env = env.function_env().class_env
            if class_env is not None:
                class_env.names[key[2]] = value
                class_env.provenance[key[2]] = provenance
                class_env.bound_tapes[key[2]] = self.tapes_key
                if isinstance(value, OptimizerValue):
                    value.info.keys.add(key)

    def binding_key(self, expr: cst.CSTNode, env: Env) -> Optional[tuple]:
        """Identity of the storage an expression names: a scope's variable or ``self.attr``."""
        if isinstance(expr, cst.Name):
            owner = env.owner_of(expr.value)
            scope = owner.function_env() if owner is not None else self.module_env
            return (id(scope), expr.value)
        function_env = env.function_env()
        if (
            isinstance(expr, cst.Attribute)
            and isinstance(expr.value, cst.Name)
            and function_env.self_name is not None
            and expr.value.value == function_env.self_name
            and function_env.class_env is not None
        ):
            return ("self", id(function_env.class_env), "self." + expr.attr.value)
        return None


_STATEMENTS = {
    cst.SimpleStatementLine: Analyzer.exec_simple_line,
    cst.SimpleStatementSuite: Analyzer.exec_simple_line,
    cst.If: Analyzer.exec_if,
    cst.For: Analyzer.exec_for,
    cst.While: Analyzer.exec_while,
    cst.With: Analyzer.exec_with,
    cst.FunctionDef: Analyzer.exec_function_def,
    cst.ClassDef: Analyzer.exec_class_def,
    cst.Try: Analyzer.exec_try,
    cst.TryStar: Analyzer.exec_try,
    cst.Match: Analyzer.exec_match,
}
