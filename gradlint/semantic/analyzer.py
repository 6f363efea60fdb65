"""The one traversal: walks a module in execution order and records what rules need.

An abstract interpreter over libcst nodes, made of parts that each do one job and share a
:class:`~gradlint.semantic.walk.WalkState`:

- :class:`Analyzer` (this module) runs statements in order and drives the walk;
- :class:`~gradlint.semantic.expressions.ExpressionEvaluator` evaluates expressions to abstract values;
- :class:`~gradlint.semantic.calls.CallInterpreter` gives calls into TensorFlow / Keras their meaning;
- :class:`~gradlint.semantic.binding.Binder` binds targets and looks bindings up.

Function bodies run after the code that defines them, with their parameters seeded from calls in the
same file; a function seeded again later is re-analysed a bounded number of times, and its records
replace the earlier ones (records are keyed by node).
"""
from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Optional

import libcst as cst

from gradlint.semantic import tfapi
from gradlint.semantic.binding import Binder
from gradlint.semantic.calls import CallInterpreter
from gradlint.semantic.env import Env, merge
from gradlint.semantic.expressions import ExpressionEvaluator
from gradlint.semantic.records import FunctionContext, LoopInfo, MethodDefinition, TapeInfo
from gradlint.semantic.summaries import Summaries
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
    ClassValue,
    FunctionValue,
    GradElem,
    InstanceValue,
    KerasObject,
    LambdaValue,
    ListDisplay,
    NoneValue,
    Seq,
    StringsValue,
    TapeValue,
    TupleValue,
    Value,
    carries_gradient,
    iterate,
)
from gradlint.semantic.walk import WalkState

_MAX_FUNCTION_PASSES = 3
_NOTHING_TO_DO = frozenset({cst.Pass, cst.Break, cst.Continue, cst.Global, cst.Nonlocal})
_STRING_LITERALS = frozenset({cst.SimpleString, cst.ConcatenatedString})
_DISPLAYS = frozenset({cst.Tuple, cst.List, cst.Set})


def _alias_root(expr: cst.BaseExpression) -> Optional[str]:
    """``x`` for ``x``, ``x[0]``, ``x.attr`` or a tuple of those: assignments that compute nothing new."""
    while isinstance(expr, (cst.Subscript, cst.Attribute)):
        expr = expr.value
    return expr.value if isinstance(expr, cst.Name) else None


def _string_constant(expr: Optional[cst.BaseExpression]) -> Optional[StringsValue]:
    """A literal string, or a tuple / list / set made only of literal strings."""
    kind = type(expr)
    if kind in _STRING_LITERALS:
        return StringsValue(expr)
    if kind in _DISPLAYS and expr.elements and all(type(e.value) in _STRING_LITERALS for e in expr.elements):
        return StringsValue(expr)
    return None


class Analyzer:
    """Builds the facts of a :class:`~gradlint.semantic.model.SemanticModel`: the statement walker."""

    def __init__(self, module: cst.Module, model) -> None:
        self.module = module
        self.model = model
        self.state = WalkState(module, model)
        self.summaries = Summaries(module, model.imports, self.state.module_env, model.source)
        self.evaluator = ExpressionEvaluator(self.state)
        self.binder = Binder(self.state, self.evaluator)
        self.calls = CallInterpreter(self.state, self.evaluator, self.binder, self, self.summaries)
        self.evaluator.wire(self.binder, self.calls, self)
        self.pending: deque[FunctionValue] = deque()
        self.seeds: dict[int, dict[str, Value]] = {}
        self.passes: dict[int, int] = {}
        self.queued: set[int] = set()
        self.replica_functions: set[int] = set()
        self.envs: list[Env] = []  # keeps scope objects alive so their ids stay unique

    # ----------------------------------------------------------------- driver
    def run(self) -> None:
        try:
            self.exec_block(self.module.body, self.state.module_env)
            while self.pending:
                function = self.pending.popleft()
                self.queued.discard(id(function.node))
                self.analyze_function(function)
        finally:
            self.unwire()

    def unwire(self) -> None:
        """The parts refer to each other while they walk; once the walk is done, dropping those references
        lets reference counting free the analysis (the model keeps only its records), instead of leaving a
        cycle for the garbage collector."""
        self.evaluator.wire(None, None, None)  # type: ignore[arg-type]
        self.binder.evaluator = None  # type: ignore[assignment]
        self.calls.evaluator = self.calls.binder = self.calls.functions = None  # type: ignore[assignment]
        # scopes hold the functions and classes bound in them, which hold their scopes: empty them
        for env in (self.state.module_env, *self.envs):
            env.names.clear()
            env.provenance.clear()
            env.class_value = None
        self.envs.clear()

    def analyze_function(self, function: FunctionValue) -> None:
        key = id(function.node)
        self.passes[key] = self.passes.get(key, 0) + 1
        node = function.node
        params = parameter_names(node.params)
        class_env = function.class_env
        self_name = params[0] if class_env is not None and params and not is_staticmethod(node) else None
        env = Env("function", parent=function.env, class_env=class_env, self_name=self_name)
        self.envs.append(env)
        cls = class_env.class_value if class_env is not None else None
        env.context = FunctionContext(id(env), node, cls)
        seeds = self.seeds.get(key, {})
        for param in all_params(node.params):
            name = param.name.value
            seeded = seeds.get(name)
            if seeded is None and param.default is not None:
                seeded = _string_constant(param.default)
            env.names[name] = seeded
        if self_name is not None and cls is not None:
            env.names[self_name] = KerasObject(cls.keras_class, cls) if cls.keras_class else InstanceValue(cls)
        saved = self.state.enter_function(key in self.replica_functions)
        try:
            self.exec_block(node.body.body, env)
        finally:
            self.state.leave_function(saved)

    def schedule(self, function: FunctionValue) -> None:
        key = id(function.node)
        if key in self.queued or self.passes.get(key, 0) >= _MAX_FUNCTION_PASSES:
            return
        self.queued.add(key)
        self.pending.append(function)

    def seed_function(self, function: FunctionValue, positional, keywords, skip_self: bool) -> None:
        params = parameter_names(function.node.params)
        if skip_self and params:
            params = params[1:]
        seeds = self.seeds.setdefault(id(function.node), {})
        changed = False
        for name, value in list(zip(params, positional)) + [(k, v) for k, v in keywords.items() if k in params]:
            if value is not None and not isinstance(value, (NoneValue, FunctionValue, LambdaValue)) \
                    and seeds.get(name) is None:
                seeds[name] = value
                changed = True
        if changed and self.passes.get(id(function.node), 0) > 0:
            self.schedule(function)

    def mark_replica_function(self, function: FunctionValue) -> None:
        self.replica_functions.add(id(function.node))
        if self.passes.get(id(function.node), 0) > 0:
            self.schedule(function)

    # ------------------------------------------------------------- statements
    def exec_block(self, statements, env: Env) -> None:
        saved_guards, depth = env.guarded, len(self.state.branches)
        frame = [statements, 0]
        block_stack = self.state.block_stack
        block_stack.append(frame)
        try:
            for index, statement in enumerate(statements):
                frame[1] = index
                self.exec_statement(statement, env)
        finally:
            block_stack.pop()
        env.guarded = saved_guards
        del self.state.branches[depth:]

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
                self.evaluator.eval(handler.type, env)
            self.exec_suite(handler.body, env)
        if node.orelse is not None:
            self.exec_suite(node.orelse.body, env)
        if node.finalbody is not None:
            self.exec_suite(node.finalbody.body, env)

    def exec_match(self, node: cst.Match, env: Env) -> None:
        self.evaluator.eval(node.subject, env)
        for index, case in enumerate(node.cases):
            self.state.branches.append((id(node), index))
            if case.guard is not None:
                self.evaluator.eval(case.guard, env)
            self.exec_suite(case.body, env)
            self.state.branches.pop()

    def exec_small(self, node: cst.CSTNode, env: Env) -> None:
        kind = type(node)
        evaluator = self.evaluator
        if kind is cst.Expr:
            state = self.state
            state.discarding = node.value
            try:
                evaluator.eval(node.value, env)
            finally:
                state.discarding = None
        elif kind is cst.Assign:
            self.exec_assign(node, env)
        elif kind is cst.AnnAssign:
            if node.value is not None:
                value, provenance = evaluator.eval_tracked(node.value, env)
                self.binder.bind(node.target, value, env, provenance)
        elif kind is cst.AugAssign:
            self.exec_aug_assign(node, env)
        elif kind is cst.Return:
            if node.value is not None:
                evaluator.eval(node.value, env)
        elif kind is cst.Assert:
            evaluator.eval(node.test, env)
            env.guarded = env.guarded | guard_keys(node.test, True)
        elif kind is cst.Import:
            self.model.imports.add_import(node)
        elif kind is cst.ImportFrom:
            self.model.imports.add_import_from(node)
        elif kind in _NOTHING_TO_DO:
            return
        else:  # Raise, Del, ...
            self.visit_children(node, env)

    def exec_assign(self, node: cst.Assign, env: Env) -> None:
        state = self.state
        state.pending_clips = []
        value, provenance = self.evaluator.eval_tracked(node.value, env)
        constant = _string_constant(node.value)
        if constant is not None:
            value = constant
        root = _alias_root(node.value)
        # `out, aux = out` or `y = x` computes nothing: the new names keep the tapes that recorded the value
        state.binding_tapes = env.tapes_when_bound(root) if root is not None else None
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
        for clip in state.pending_clips:
            clip.result_named = named
            clip.result_name = result_name
        state.pending_clips = []
        try:
            for target in node.targets:
                self.binder.bind(target.target, value, env, provenance)
        finally:
            state.binding_tapes = None

    def exec_aug_assign(self, node: cst.AugAssign, env: Env) -> None:
        evaluator = self.evaluator
        target, target_provenance = evaluator.eval_tracked(node.target, env)
        value, provenance = evaluator.eval_tracked(node.value, env)
        if isinstance(node.operator, cst.AddAssign) and isinstance(target, (Seq, ListDisplay)) \
                and isinstance(value, Seq) and carries_gradient(value):
            # `pairs += [(g, v)]` / `grads += more`: the list now holds those values too
            self.binder.write_item(node.target, target, value.element, env, provenance)
            return
        result = evaluator.note_arithmetic(node, node.operator, ((node.target, target), (node.value, value)), env)
        if isinstance(node.target, cst.Name):
            keep = target if result is None and not isinstance(target, GradElem) else result
            self.binder.bind(node.target, keep, env, merge(target_provenance, provenance))

    def exec_if(self, node: cst.If, env: Env) -> None:
        self.evaluator.eval(node.test, env)
        branches = self.state.branches
        saved = env.guarded
        env.guarded = saved | guard_keys(node.test, True)
        branches.append((id(node), 0))
        self.exec_suite(node.body, env)
        branches.pop()
        env.guarded = saved | guard_keys(node.test, False)
        branches.append((id(node), 1))
        if isinstance(node.orelse, cst.If):
            self.exec_if(node.orelse, env)
        elif isinstance(node.orelse, cst.Else):
            self.exec_suite(node.orelse.body, env)
        branches.pop()
        env.guarded = saved
        if terminates(node.body):
            # the rest of the enclosing block runs only when the test was false: an implicit `else`
            env.guarded = saved | guard_keys(node.test, False)
            branches.append((id(node), 1))

    def exec_for(self, node: cst.For, env: Env) -> None:
        iterable, provenance = self.evaluator.eval_tracked(node.iter, env)
        self.evaluator.record_iteration(iterable, node)
        names = frozenset(target_names(node.target))
        self.binder.bind(node.target, iterate(iterable), env, provenance)
        self.run_loop(LoopInfo(node, names, self.calls.is_over_variables(node.iter, iterable, env)), env)

    def exec_while(self, node: cst.While, env: Env) -> None:
        self.evaluator.eval(node.test, env)
        self.run_loop(LoopInfo(node, frozenset(), self.calls.is_over_variables(node.test, None, env)), env)

    def run_loop(self, loop: LoopInfo, env: Env) -> None:
        """The body once (the analysis is not a fixed point over iterations), then the `else` block."""
        loops = self.state.loops
        loops.append(loop)
        try:
            self.exec_suite(loop.node.body, env)
        finally:
            loops.pop()
        if loop.node.orelse is not None:
            self.exec_suite(loop.node.orelse.body, env)

    def exec_with(self, node: cst.With, env: Env) -> None:
        state = self.state
        opened: list[TapeInfo] = []
        paused: list[TapeInfo] = []
        scopes = 0
        raises = any(self.is_raises_context(item.item) for item in node.items)
        for item in node.items:
            value, provenance = self.evaluator.eval_tracked(item.item, env)
            if isinstance(value, TapeValue):
                if value.tape.with_node is None:
                    value.tape.with_node = node
                opened.append(value.tape)
            paused.extend(self.stopped_tapes(item.item, env))
            if self.calls.is_multi_replica_scope(item.item, env):
                state.multi_replica_scopes.append(node)
                scopes += 1
            if item.asname is not None:
                if isinstance(value, TapeValue) and isinstance(item.asname.name, cst.Name):
                    value.tape.name = value.tape.name or item.asname.name.value
                self.binder.bind(item.asname.name, value, env, provenance)
        saved_tapes = list(state.active_tapes)
        state.active_tapes = [t for t in state.active_tapes if t not in paused] + opened
        state.expecting_error += raises
        try:
            self.exec_suite(node.body, env)
        finally:
            state.expecting_error -= raises
            state.active_tapes = saved_tapes
            del state.multi_replica_scopes[len(state.multi_replica_scopes) - scopes:]

    def is_raises_context(self, expr: cst.BaseExpression) -> bool:
        if not isinstance(expr, cst.Call):
            return False
        name = terminal_name(expr.func) or ""
        if name.startswith("assertRaises"):
            return True
        return name == "raises" and self.model.imports.resolve(expr.func) == "pytest.raises"

    def stopped_tapes(self, expr: cst.BaseExpression, env: Env) -> list[TapeInfo]:
        """``with tape.stop_recording():`` pauses that tape."""
        if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) \
                and expr.func.attr.value == "stop_recording":
            value = self.binder.quiet(expr.func.value, env)
            if isinstance(value, TapeValue):
                return [value.tape]
        return []

    def exec_function_def(self, node: cst.FunctionDef, env: Env) -> None:
        for decorator in node.decorators:
            self.evaluator.eval(decorator.decorator, env)
        for param in all_params(node.params):
            if param.default is not None:
                self.evaluator.eval(param.default, env)
        if env.kind == "class":
            # methods see the enclosing scope, not the class body, as in Python
            function = FunctionValue(node, env.parent, env)
            cls = env.class_value
            if cls is not None and cls.optimizer_base is not None:
                self.model.method_definitions.append(MethodDefinition(node, node.name.value, cls.optimizer_base))
        else:
            function = FunctionValue(node, env, None)
        env.names[node.name.value] = function
        self.schedule(function)

    def exec_class_def(self, node: cst.ClassDef, env: Env) -> None:
        imports = self.model.imports
        for decorator in node.decorators:
            self.evaluator.eval(decorator.decorator, env)
        keras_class = None
        bases: list[str] = []
        for base in node.bases:
            value = self.evaluator.eval(base.value, env)
            qualified = imports.resolve(base.value)
            if isinstance(value, ClassValue):
                keras_class = keras_class or value.keras_class
                bases.extend(value.bases)
            elif qualified is not None:
                bases.append(qualified)
                keras_class = (keras_class or tfapi.keras_object_class(qualified)
                               or tfapi.keras_callback_class(qualified))
        for keyword in node.keywords:
            self.evaluator.eval(keyword.value, env)
        if keras_class is None and _overrides_train_step(node) and any(
                b.rpartition(".")[2].endswith("Model") for b in bases):
            keras_class = "Model"  # a subclass of a model class imported from elsewhere, overriding `train_step`
        class_env = Env("class", parent=env)
        self.envs.append(class_env)
        class_env.keras_class = keras_class
        optimizer_base = next((b for b in bases if tfapi.optimizer_kind(b) or tfapi.is_tf1_optimizer_base(b)), None)
        cls = ClassValue(node, keras_class, tuple(bases), class_env, optimizer_base)
        class_env.class_value = cls
        env.names[node.name.value] = cls
        self.exec_suite(node.body, class_env)

    def visit_children(self, node: cst.CSTNode, env: Env) -> None:
        for child in node.children:
            if isinstance(child, cst.BaseExpression):
                self.evaluator.eval(child, env)
            elif isinstance(child, cst.BaseSmallStatement):
                self.exec_small(child, env)
            elif isinstance(child, (cst.BaseSuite, cst.BaseStatement)):
                self.exec_statement(child, env)
            else:
                self.visit_children(child, env)


def _overrides_train_step(node: cst.ClassDef) -> bool:
    return any(isinstance(statement, cst.FunctionDef) and statement.name.value in ("train_step", "test_step")
               for statement in node.body.body)


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
