"""The one traversal: walks a module in execution order and records what rules need.

An abstract interpreter over libcst nodes. Statements run in order; expressions evaluate to
abstract values (``values.py``); function bodies run after the code that defines them, with their
parameters seeded from calls in the same file. Every node is visited once per analysis of its
scope (a function may be re-analysed a bounded number of times when a later call seeds it).
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Optional

import libcst as cst

from gradlint.semantic import tfapi
from gradlint.semantic.imports import ImportMap
from gradlint.semantic.records import (
    AttributeAssignment,
    CompileCall,
    ElementUse,
    GradientSource,
    LoopInfo,
    OptimizerCall,
    OptimizerInfo,
    TapeInfo,
)
from gradlint.semantic.syntax import (
    call_argument,
    dotted_name,
    expression_key,
    guard_keys,
    is_none,
    literal_true,
    names_in,
    target_names,
    terminal_name,
    terminates,
)
from gradlint.semantic.values import (
    NONE,
    FunctionValue,
    GradElem,
    LambdaValue,
    ListDisplay,
    NoneValue,
    OptimizerValue,
    Seq,
    TapeValue,
    TupleValue,
    Value,
    VarList,
    iterate,
    materialize,
)

_MAX_FUNCTION_PASSES = 3
_INTOLERANT_BUILTINS = frozenset({
    "builtins.float", "builtins.int", "builtins.abs", "builtins.round", "builtins.len",
    "builtins.sum", "builtins.max", "builtins.min",
})
_ORDERING = (cst.LessThan, cst.LessThanEqual, cst.GreaterThan, cst.GreaterThanEqual)
_TAPE_METHODS = frozenset({"gradient", "jacobian", "batch_jacobian"})


class Env:
    """A scope's bindings plus the guards that hold at the current point of the walk."""

    def __init__(self, kind: str, parent: Optional["Env"] = None, class_env: Optional["Env"] = None,
                 self_name: Optional[str] = None) -> None:
        self.kind = kind
        self.parent = parent
        self.class_env = class_env
        self.self_name = self_name
        self.names: dict[str, Optional[Value]] = {}
        self.guarded: frozenset[str] = frozenset()

    def owner_of(self, name: str) -> Optional["Env"]:
        env: Optional[Env] = self
        while env is not None:
            if name in env.names:
                return env
            env = env.parent
        return None

    def lookup(self, name: str) -> Optional[Value]:
        owner = self.owner_of(name)
        return owner.names[name] if owner is not None else None

    def is_guarded(self, key: str) -> bool:
        env: Optional[Env] = self
        while env is not None and env.kind == "comprehension":
            if key in env.guarded:
                return True
            env = env.parent
        return env is not None and key in env.guarded

    def function_env(self) -> "Env":
        env = self
        while env.kind == "comprehension" and env.parent is not None:
            env = env.parent
        return env


class Analyzer:
    """Builds the facts of a :class:`~gradlint.semantic.model.SemanticModel`."""

    def __init__(self, module: cst.Module, model) -> None:
        self.module = module
        self.model = model
        self.imports: ImportMap = model.imports
        self.module_env = Env("module")
        self.loops: list[LoopInfo] = []
        self.active_tapes: list[TapeInfo] = []
        self.pending: list[FunctionValue] = []
        self.seeds: dict[int, dict[str, Value]] = {}
        self.passes: dict[int, int] = {}
        self.queued: set[int] = set()
        self.envs: list[Env] = []  # keeps scope objects alive so their ids stay unique
        self.expecting_error = 0  # depth of `with pytest.raises(...)` blocks: code there fails on purpose

    # ----------------------------------------------------------------- driver
    def run(self) -> None:
        self.exec_block(self.module.body, self.module_env)
        while self.pending:
            function = self.pending.pop(0)
            self.queued.discard(id(function.node))
            self.analyze_function(function)

    def analyze_function(self, function: FunctionValue) -> None:
        key = id(function.node)
        self.passes[key] = self.passes.get(key, 0) + 1
        node = function.node
        params = _parameter_names(node.params)
        self_name = params[0] if function.class_env is not None and params and not _is_static(node) else None
        env = Env("function", parent=function.env, class_env=function.class_env, self_name=self_name)
        self.envs.append(env)
        seeds = self.seeds.get(key, {})
        for name in params:
            env.names[name] = seeds.get(name)
        saved_loops, saved_tapes = self.loops, self.active_tapes
        self.loops, self.active_tapes = [], []
        try:
            self.exec_block(node.body.body, env)
        finally:
            self.loops, self.active_tapes = saved_loops, saved_tapes

    def schedule(self, function: FunctionValue) -> None:
        key = id(function.node)
        if key in self.queued or self.passes.get(key, 0) >= _MAX_FUNCTION_PASSES:
            return
        self.queued.add(key)
        self.pending.append(function)

    # ------------------------------------------------------------- statements
    def exec_block(self, statements, env: Env) -> None:
        saved = env.guarded
        for statement in statements:
            self.exec_statement(statement, env)
        env.guarded = saved

    def exec_suite(self, suite: cst.BaseSuite, env: Env) -> None:
        self.exec_block(suite.body, env)

    def exec_statement(self, node: cst.CSTNode, env: Env) -> None:
        if isinstance(node, cst.SimpleStatementLine):
            for small in node.body:
                self.exec_small(small, env)
        elif isinstance(node, cst.If):
            self.exec_if(node, env)
        elif isinstance(node, cst.For):
            self.exec_for(node, env)
        elif isinstance(node, cst.While):
            self.exec_while(node, env)
        elif isinstance(node, cst.With):
            self.exec_with(node, env)
        elif isinstance(node, cst.FunctionDef):
            self.exec_function_def(node, env)
        elif isinstance(node, cst.ClassDef):
            self.exec_class_def(node, env)
        elif isinstance(node, (cst.Try, cst.TryStar)):
            self.exec_suite(node.body, env)
            for handler in node.handlers:
                if handler.type is not None:
                    self.eval(handler.type, env)
                self.exec_suite(handler.body, env)
            if node.orelse is not None:
                self.exec_suite(node.orelse.body, env)
            if node.finalbody is not None:
                self.exec_suite(node.finalbody.body, env)
        elif isinstance(node, cst.Match):
            self.eval(node.subject, env)
            for case in node.cases:
                if case.guard is not None:
                    self.eval(case.guard, env)
                self.exec_suite(case.body, env)
        elif isinstance(node, cst.SimpleStatementSuite):
            for small in node.body:
                self.exec_small(small, env)
        else:
            self.visit_children(node, env)

    def exec_small(self, node: cst.CSTNode, env: Env) -> None:
        if isinstance(node, cst.Expr):
            self.eval(node.value, env)
        elif isinstance(node, cst.Assign):
            value = self.eval(node.value, env)
            for target in node.targets:
                self.bind(target.target, value, env)
        elif isinstance(node, cst.AnnAssign):
            if node.value is not None:
                self.bind(node.target, self.eval(node.value, env), env)
        elif isinstance(node, cst.AugAssign):
            target = self.eval(node.target, env)
            value = self.eval(node.value, env)
            self.note_arithmetic(node, node.operator, (target, value), env)
        elif isinstance(node, cst.Return):
            if node.value is not None:
                self.eval(node.value, env)
        elif isinstance(node, cst.Assert):
            self.eval(node.test, env)
            env.guarded = env.guarded | guard_keys(node.test, True)
        elif isinstance(node, cst.Import):
            self.imports.add_import(node)
        elif isinstance(node, cst.ImportFrom):
            self.imports.add_import_from(node)
        elif isinstance(node, (cst.Pass, cst.Break, cst.Continue, cst.Global, cst.Nonlocal)):
            return
        else:  # Raise, Del, ...
            self.visit_children(node, env)

    def exec_if(self, node: cst.If, env: Env) -> None:
        self.eval(node.test, env)
        saved = env.guarded
        env.guarded = saved | guard_keys(node.test, True)
        self.exec_suite(node.body, env)
        env.guarded = saved | guard_keys(node.test, False)
        if isinstance(node.orelse, cst.If):
            self.exec_if(node.orelse, env)
        elif isinstance(node.orelse, cst.Else):
            self.exec_suite(node.orelse.body, env)
        env.guarded = saved
        if terminates(node.body):
            env.guarded = saved | guard_keys(node.test, False)

    def exec_for(self, node: cst.For, env: Env) -> None:
        iterable = self.eval(node.iter, env)
        names = frozenset(target_names(node.target))
        self.bind(node.target, iterate(iterable), env)
        loop = LoopInfo(node, names, self.is_over_variables(node.iter, iterable, env))
        self.loops.append(loop)
        try:
            self.exec_suite(node.body, env)
        finally:
            self.loops.pop()
        if node.orelse is not None:
            self.exec_suite(node.orelse.body, env)

    def exec_while(self, node: cst.While, env: Env) -> None:
        self.eval(node.test, env)
        loop = LoopInfo(node, frozenset(), self.is_over_variables(node.test, None, env))
        self.loops.append(loop)
        try:
            self.exec_suite(node.body, env)
        finally:
            self.loops.pop()
        if node.orelse is not None:
            self.exec_suite(node.orelse.body, env)

    def exec_with(self, node: cst.With, env: Env) -> None:
        opened: list[TapeInfo] = []
        raises = any(self.is_raises_context(item.item) for item in node.items)
        for item in node.items:
            value = self.eval(item.item, env)
            if isinstance(value, TapeValue):
                if value.tape.with_node is None:
                    value.tape.with_node = node
                opened.append(value.tape)
            if item.asname is not None:
                if isinstance(value, TapeValue) and isinstance(item.asname.name, cst.Name):
                    value.tape.name = value.tape.name or item.asname.name.value
                self.bind(item.asname.name, value, env)
        self.active_tapes.extend(opened)
        self.expecting_error += raises
        try:
            self.exec_suite(node.body, env)
        finally:
            self.expecting_error -= raises
            del self.active_tapes[len(self.active_tapes) - len(opened):]

    def is_raises_context(self, expr: cst.BaseExpression) -> bool:
        if not isinstance(expr, cst.Call):
            return False
        name = terminal_name(expr.func) or ""
        if name.startswith("assertRaises"):
            return True
        return name == "raises" and self.imports.resolve(expr.func) == "pytest.raises"

    def exec_function_def(self, node: cst.FunctionDef, env: Env) -> None:
        for decorator in node.decorators:
            self.eval(decorator.decorator, env)
        for param in _all_params(node.params):
            if param.default is not None:
                self.eval(param.default, env)
        function = FunctionValue(node, env, env if env.kind == "class" else None)
        if env.kind == "class":
            env.names[node.name.value] = function
            # methods see the module/enclosing scope, not the class body, as Python does
            function.env = env.parent
            function.class_env = env
        else:
            env.names[node.name.value] = function
        self.schedule(function)

    def exec_class_def(self, node: cst.ClassDef, env: Env) -> None:
        for decorator in node.decorators:
            self.eval(decorator.decorator, env)
        for base in node.bases:
            self.eval(base.value, env)
        for keyword in node.keywords:
            self.eval(keyword.value, env)
        class_env = Env("class", parent=env)
        env.names[node.name.value] = None
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
    def bind(self, target: cst.CSTNode, value: Optional[Value], env: Env) -> None:
        if isinstance(target, cst.Name):
            name = target.value
            env.names[name] = value
            if env.guarded:
                env.guarded = frozenset(k for k in env.guarded if k != name and not k.startswith(name + "["))
            if isinstance(value, OptimizerValue):
                value.info.keys.add((id(env.function_env()), name))
        elif isinstance(target, (cst.Tuple, cst.List)):
            elements = target.elements
            for index, element in enumerate(elements):
                if isinstance(element, cst.StarredElement):
                    self.bind(element.value, value if isinstance(value, Seq) else None, env)
                    continue
                if isinstance(value, TupleValue) and len(value.items) == len(elements):
                    item = value.items[index]
                elif isinstance(value, Seq):
                    item = value.element
                else:
                    item = None
                self.bind(element.value, item, env)
        elif isinstance(target, cst.Attribute):
            self.eval(target.value, env)
            key = self.binding_key(target, env)
            receiver = self.eval_quiet(target.value, env)
            info = receiver.info if isinstance(receiver, OptimizerValue) else None
            self.model.attribute_assignments.append(
                AttributeAssignment(target, target.attr.value, self.binding_key(target.value, env), info,
                                    expects_error=self.expecting_error > 0)
            )
            if key is not None and key[0] == "self":
                class_env = env.function_env().class_env
                if class_env is not None:
                    class_env.names[key[2]] = value
                    if isinstance(value, OptimizerValue):
                        value.info.keys.add(key)
        elif isinstance(target, cst.Subscript):
            self.eval(target.value, env)
            for element in target.slice:
                self.visit_children(element, env)
        elif isinstance(target, cst.StarredElement):
            self.bind(target.value, value, env)

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

    # ------------------------------------------------------------ expressions
    def eval_quiet(self, expr: cst.BaseExpression, env: Env) -> Optional[Value]:
        """Value of a name / ``self.attr`` without visiting (already visited) subexpressions."""
        if isinstance(expr, cst.Name):
            return env.lookup(expr.value)
        key = self.binding_key(expr, env)
        if key is not None and key[0] == "self":
            return _class_attribute(env, key[2])
        return None

    def eval(self, node: cst.BaseExpression, env: Env, *, as_callee: bool = False) -> Optional[Value]:
        if isinstance(node, cst.Name):
            return self.eval_name(node, env)
        if isinstance(node, cst.Call):
            return self.eval_call(node, env)
        if isinstance(node, cst.Attribute):
            return self.eval_attribute(node, env, as_callee)
        if isinstance(node, cst.Subscript):
            return self.eval_subscript(node, env)
        if isinstance(node, cst.BinaryOperation):
            left = self.eval(node.left, env)
            right = self.eval(node.right, env)
            return self.note_arithmetic(node, node.operator, (left, right), env)
        if isinstance(node, cst.UnaryOperation):
            operand = self.eval(node.expression, env)
            if isinstance(node.operator, cst.Not):
                return None
            return self.note_arithmetic(node, node.operator, (operand,), env)
        if isinstance(node, cst.BooleanOperation):
            self.eval(node.left, env)
            saved = env.guarded
            env.guarded = saved | guard_keys(node.left, isinstance(node.operator, cst.And))
            self.eval(node.right, env)
            env.guarded = saved
            return None
        if isinstance(node, cst.Comparison):
            values = [self.eval(node.left, env)]
            for comparison in node.comparisons:
                values.append(self.eval(comparison.comparator, env))
            if any(isinstance(c.operator, _ORDERING) for c in node.comparisons):
                self.note_element_use(node, "comparison", values, env)
            return None
        if isinstance(node, cst.IfExp):
            return self.eval_if_exp(node, env)
        if isinstance(node, (cst.Tuple, cst.List, cst.Set)):
            return self.eval_display(node, env)
        if isinstance(node, (cst.ListComp, cst.GeneratorExp, cst.SetComp, cst.DictComp)):
            return self.eval_comprehension(node, env)
        if isinstance(node, cst.Lambda):
            return LambdaValue(node, env)
        if isinstance(node, cst.NamedExpr):
            value = self.eval(node.value, env)
            self.bind(node.target, value, env)
            return value
        if isinstance(node, (cst.SimpleString, cst.Integer, cst.Float, cst.Imaginary, cst.Ellipsis)):
            return None
        self.visit_children(node, env)
        return None

    def eval_name(self, node: cst.Name, env: Env) -> Optional[Value]:
        if node.value == "None":
            return NONE
        value = env.lookup(node.value)
        if isinstance(value, GradElem) and value.may_be_none and env.is_guarded(node.value):
            return value.checked()
        return value

    def eval_attribute(self, node: cst.Attribute, env: Env, as_callee: bool) -> Optional[Value]:
        base = self.eval(node.value, env)
        attr = node.attr.value
        if attr in tfapi.VARIABLE_COLLECTION_ATTRS and not as_callee:
            owner = dotted_name(node.value) or self.module.code_for_node(node.value)
            return VarList(f"{owner}.{tfapi.VARIABLE_COLLECTION_ATTRS[attr]}")
        if isinstance(base, GradElem) and not as_callee:
            self.note_element_use(node, f".{attr}", (base,), env, receiver_node=node.value)
            return None
        key = self.binding_key(node, env)
        if key is not None and key[0] == "self":
            return _class_attribute(env, key[2])
        return None

    def eval_subscript(self, node: cst.Subscript, env: Env) -> Optional[Value]:
        base = self.eval(node.value, env)
        index_node: Optional[cst.BaseExpression] = None
        is_slice = False
        for element in node.slice:
            if isinstance(element.slice, cst.Index):
                index_node = element.slice.value
                self.eval(index_node, env)
            else:
                is_slice = True
                self.visit_children(element.slice, env)
        if is_slice:
            return base if isinstance(base, Seq) else None
        result: Optional[Value] = None
        if isinstance(base, TupleValue) and isinstance(index_node, cst.Integer):
            position = int(index_node.value, 0)
            result = base.items[position] if position < len(base.items) else None
        elif isinstance(base, TupleValue) and _negative_integer(index_node) is not None:
            position = _negative_integer(index_node)
            result = base.items[position] if -position <= len(base.items) else None
        elif isinstance(base, Seq):
            result = base.element
        if isinstance(result, GradElem) and result.may_be_none:
            key = expression_key(node)
            if key is not None and env.is_guarded(key):
                return result.checked()
        return result

    def eval_if_exp(self, node: cst.IfExp, env: Env) -> Optional[Value]:
        self.eval(node.test, env)
        saved = env.guarded
        env.guarded = saved | guard_keys(node.test, True)
        body = self.eval(node.body, env)
        env.guarded = saved | guard_keys(node.test, False)
        orelse = self.eval(node.orelse, env)
        env.guarded = saved
        grads = [v for v in (body, orelse) if isinstance(v, GradElem)]
        if grads:
            may_be_none = any(v.may_be_none for v in grads) or any(isinstance(v, NoneValue) for v in (body, orelse))
            return replace(grads[0], may_be_none=may_be_none)
        if orelse is None or orelse is body or isinstance(orelse, NoneValue):
            return body
        return orelse if body is None or isinstance(body, NoneValue) else None

    def eval_display(self, node: cst.Tuple | cst.List | cst.Set, env: Env) -> Optional[Value]:
        items = [self.eval(element.value, env) for element in node.elements]
        if isinstance(node, cst.Tuple):
            return TupleValue(tuple(items))
        single_pair = None
        if isinstance(node, cst.List) and len(node.elements) == 1:
            only = node.elements[0].value
            if isinstance(only, cst.Tuple) and len(only.elements) == 2:
                single_pair = (only.elements[0].value, only.elements[1].value)
        carried = next((v for v in items if isinstance(v, (GradElem, TupleValue, VarList))), None)
        if isinstance(carried, GradElem) or (
            isinstance(carried, TupleValue) and any(isinstance(i, GradElem) for i in carried.items)
        ):
            return Seq(carried, single_pair=single_pair)
        if single_pair is not None:
            return Seq(items[0], single_pair=single_pair)
        if isinstance(node, cst.List):
            return ListDisplay(self.module.code_for_node(node), tuple(e.value for e in node.elements))
        return None

    def eval_comprehension(self, node, env: Env) -> Optional[Value]:
        comp_env = Env("comprehension", parent=env)
        comp_env.guarded = frozenset()
        for_in: Optional[cst.CompFor] = node.for_in
        first_iterable: Optional[Value] = None
        outermost = True
        while for_in is not None:
            iterable = self.eval(for_in.iter, env if outermost else comp_env)
            if outermost:
                first_iterable, outermost = iterable, False
            self.bind(for_in.target, iterate(iterable), comp_env)
            for condition in for_in.ifs:
                self.eval(condition.test, comp_env)
                comp_env.guarded = comp_env.guarded | guard_keys(condition.test, True)
            for_in = for_in.inner_for_in
        if isinstance(node, cst.DictComp):
            self.eval(node.key, comp_env)
            element = self.eval(node.value, comp_env)
            return None
        element = self.eval(node.elt, comp_env)
        if isinstance(element, (GradElem, TupleValue)):
            vars_text = first_iterable.vars_text if isinstance(first_iterable, Seq) else None
            return Seq(element, is_iterator=isinstance(node, cst.GeneratorExp), vars_text=vars_text)
        return None

    # ------------------------------------------------------------------ calls
    def eval_call(self, node: cst.Call, env: Env) -> Optional[Value]:
        func = node.func
        qualified = self.imports.resolve(func, _Shadowing(env))
        receiver: Optional[Value] = None
        method: Optional[str] = None
        callee: Optional[Value] = None
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            receiver = self.eval(func.value, env)
            if isinstance(receiver, GradElem):
                self.note_element_use(node, f".{method}()", (receiver,), env, receiver_node=func.value)
            callee = self.eval_quiet(func, env)
        else:
            callee = self.eval(func, env, as_callee=True)

        positional: list[Optional[Value]] = []
        keywords: dict[str, Optional[Value]] = {}
        for arg in node.args:
            value = self.eval(arg.value, env)
            if arg.keyword is not None:
                keywords[arg.keyword.value] = value
            elif not arg.star:
                positional.append(value)
        arguments = positional + list(keywords.values())

        if qualified is not None:
            result = self.eval_api_call(node, qualified, positional, keywords, env)
            if result is not _NOT_HANDLED:
                return result
            if _none_intolerant(qualified):
                self.note_element_use(node, _short(qualified), arguments, env)
            if any(isinstance(v, GradElem) for v in arguments):
                return _derived(arguments)
            return None

        if method is not None:
            handled = self.eval_method_call(node, func, method, receiver, positional, keywords, env)
            if handled is not _NOT_HANDLED:
                return handled
            if isinstance(receiver, GradElem):
                return _derived((receiver,))
            return None

        if isinstance(callee, FunctionValue):
            self.seed_function(callee, node, positional, keywords, skip_self=False)
        elif isinstance(callee, LambdaValue):
            return self.apply_lambda(callee, positional)
        return None

    def eval_api_call(self, node: cst.Call, qualified: str, positional, keywords, env: Env):
        if qualified == tfapi.GRADIENT_TAPE or tfapi.is_internal_tape(qualified):
            persistent = literal_true(call_argument(node, 0, "persistent"))
            tape = TapeInfo(node, None, persistent)
            self.model.tapes.append(tape)
            return TapeValue(tape)
        if qualified in tfapi.GRADIENT_FUNCTIONS:
            source = self.new_source(node, "tf.gradients", None,
                                     call_argument(node, 0, "ys"), call_argument(node, 1, "xs"))
            return Seq(GradElem(source, source.may_be_none))
        if qualified == tfapi.CLIP_BY_GLOBAL_NORM:
            grads = positional[0] if positional else keywords.get("t_list")
            clipped = materialize(grads) if isinstance(grads, Seq) else None
            return TupleValue((clipped, None))
        kind = tfapi.optimizer_kind(qualified)
        if kind is not None:
            info = OptimizerInfo(node, qualified, kind, stateless=tfapi.is_stateless_tf1_optimizer(qualified),
                                 loops=tuple(self.loops))
            self.model.optimizers.append(info)
            return OptimizerValue(info)
        if qualified in tfapi.VARIABLE_COLLECTION_CALLS:
            return VarList(self.module.code_for_node(node))
        if qualified.startswith("builtins."):
            return self.eval_builtin(node, qualified[9:], positional, keywords, env)
        return _NOT_HANDLED

    def eval_builtin(self, node: cst.Call, name: str, positional, keywords, env: Env):
        if name == "zip":
            if not positional:
                return Seq(None, is_iterator=True)
            vars_text = None
            if len(positional) == 2 and len(node.args) == 2:
                reversed_order = _is_gradients(positional[1]) and not _is_gradients(positional[0])
                index = 0 if reversed_order else 1
                vars_text = self.variables_text(node.args[index].value, positional[index])
            single_pair = None
            if len(node.args) == 2 and all(_single_item_list(a.value) for a in node.args):
                single_pair = (node.args[0].value.elements[0].value, node.args[1].value.elements[0].value)
            return Seq(TupleValue(tuple(iterate(v) for v in positional)), is_iterator=True,
                       vars_text=vars_text, single_pair=single_pair)
        if name in ("list", "tuple", "sorted"):
            return materialize(positional[0]) if positional else None
        if name == "reversed":
            return positional[0] if positional else None
        if name == "enumerate":
            if not positional:
                return None
            return Seq(TupleValue((None, iterate(positional[0]))), is_iterator=True)
        if name == "filter":
            if len(positional) == 2 and isinstance(positional[1], Seq):
                predicate = node.args[0].value
                element = positional[1].element
                if isinstance(element, GradElem) and (is_none(predicate) or self.lambda_guards(predicate)):
                    element = element.checked()
                return replace(positional[1], element=element, is_iterator=True)
            return None
        if name == "map":
            if len(positional) >= 2 and isinstance(positional[0], LambdaValue):
                result = self.apply_lambda(positional[0], [iterate(v) for v in positional[1:]])
                return Seq(result, is_iterator=True) if result is not None else None
            return None
        if name in _INTOLERANT_BUILTINS or "builtins." + name in _INTOLERANT_BUILTINS:
            self.note_element_use(node, f"{name}()", positional, env)
        return None

    def eval_method_call(self, node: cst.Call, func: cst.Attribute, method: str, receiver, positional,
                         keywords, env: Env):
        if method in _TAPE_METHODS or method == "watch":
            tape = self.tape_for(func.value, receiver, env)
            if tape is None:
                return _NOT_HANDLED
            if method == "watch":
                watched = node.args[0].value if node.args else None
                elements = [e.value for e in watched.elements] if isinstance(watched, (cst.List, cst.Tuple)) \
                    else [watched] if watched is not None else []
                tape.watched.update(k for k in map(expression_key, elements) if k is not None)
                return None
            source = self.new_source(node, f"tape.{method}", tape,
                                     call_argument(node, 0, "target"), call_argument(node, 1, "sources"))
            if method == "batch_jacobian":
                return None
            return Seq(GradElem(source, source.may_be_none))
        if method == "compute_gradients":
            info = self.optimizer_for(func.value, receiver, env, force=True)
            var_list = call_argument(node, 1, "var_list")
            source = self.new_source(node, "compute_gradients", None, call_argument(node, 0, "loss"), var_list)
            vars_text = self.variables_text(var_list, None) if var_list is not None else "<all trainable>"
            del info
            return Seq(TupleValue((GradElem(source, source.may_be_none), None)), vars_text=vars_text)
        if method in ("apply_gradients", "apply", "minimize", "build"):
            force = method == "apply_gradients" or _looks_like(func.value, "opt")
            info = self.optimizer_for(func.value, receiver, env, force=force)
            if info is None:
                return _NOT_HANDLED
            self.record_optimizer_call(node, method, info, positional, keywords, env)
            return None
        if method == "compile":
            by_keyword = call_argument(node, None, "optimizer")
            optimizer_node = by_keyword if by_keyword is not None else call_argument(node, 0, None)
            if optimizer_node is not None and not isinstance(optimizer_node, (cst.SimpleString, cst.Call)):
                value = self.eval_quiet(optimizer_node, env)
                info = self.optimizer_for(optimizer_node, value, env, force=by_keyword is not None)
                if info is not None:
                    self.model.compile_calls.append(CompileCall(
                        node, self.module.code_for_node(func.value), func.value, info, tuple(self.loops),
                        expects_error=self.expecting_error > 0))
            return None
        callee = self.method_function(func, env)
        if callee is not None:
            self.seed_function(callee, node, positional, keywords, skip_self=True)
            return None
        return _NOT_HANDLED

    # --------------------------------------------------------------- helpers
    def new_source(self, node: cst.Call, api: str, tape: Optional[TapeInfo], target, sources) -> GradientSource:
        unconnected = call_argument(node, None, "unconnected_gradients")
        may_be_none = (
            not _is_zero_unconnected(unconnected)
            and not _all_watched(tape, sources)
            and (api == "compute_gradients" and sources is None or self.may_include_unconnected(sources))
        )
        source = GradientSource(
            node, api, may_be_none, tape=tape, target=target, sources=sources,
            inside_own_tape=tape is not None and tape in self.active_tapes, loops=tuple(self.loops),
        )
        self.model.gradient_sources.append(source)
        return source

    def may_include_unconnected(self, sources: Optional[cst.BaseExpression]) -> bool:
        """Can the differentiated sources contain variables the target does not use?

        Variable collections (``model.trainable_variables``, ``tf.trainable_variables()``, names such as
        ``params`` / ``var_list``) and explicit lists of several variables can. A single tensor the user
        picked (``tape.gradient(y, x)``, ``tf.gradients(loss, [logits])``) is a deliberate derivative.
        """
        if sources is None:
            return False
        stack = [sources]
        while stack:
            current = stack.pop()
            if isinstance(current, cst.Attribute) and current.attr.value in tfapi.VARIABLE_COLLECTION_ATTRS:
                return True
            if isinstance(current, (cst.List, cst.Tuple)):
                if len(current.elements) >= 2 or any(isinstance(e, cst.StarredElement) for e in current.elements):
                    return True
                continue  # one tensor listed explicitly
            elif isinstance(current, cst.BinaryOperation):
                stack.extend((current.left, current.right))
            elif isinstance(current, cst.Call):
                name = self.imports.resolve(current.func)
                if name in tfapi.VARIABLE_COLLECTION_CALLS or name in ("builtins.list", "builtins.tuple"):
                    return True
            elif isinstance(current, (cst.Name, cst.Attribute)):
                return _collection_like_name(terminal_name(current) or "")
        return False

    def tape_for(self, expr: cst.BaseExpression, value: Optional[Value], env: Env) -> Optional[TapeInfo]:
        """The tape an expression holds; a name containing 'tape' used as one becomes an implicit tape."""
        if isinstance(value, TapeValue):
            return value.tape
        if not _looks_like(expr, "tape"):
            return None
        tape = TapeInfo(expr, terminal_name(expr), persistent=False, implicit=True)
        if isinstance(expr, cst.Name):
            owner = env.owner_of(expr.value) or env.function_env()
            owner.names[expr.value] = TapeValue(tape)
        return tape

    def optimizer_for(self, expr: cst.BaseExpression, value: Optional[Value], env: Env, force: bool):
        """The optimizer an expression holds; names used as optimizers become implicit optimizers."""
        if isinstance(value, OptimizerValue):
            return value.info
        if not force:
            return None
        key = self.binding_key(expr, env)
        if key is None:
            return None
        info = self.model.optimizer_by_key.get(key)
        if info is None:
            info = OptimizerInfo(expr, None, None, implicit=True)
            info.keys.add(key)
            self.model.optimizers.append(info)
        self.model.optimizer_by_key[key] = info
        if key[0] == "self":
            class_env = env.function_env().class_env
            if class_env is not None:
                class_env.names[key[2]] = OptimizerValue(info)
        elif isinstance(expr, cst.Name):
            owner = env.owner_of(expr.value) or self.module_env
            owner.names[expr.value] = OptimizerValue(info)
        return info

    def record_optimizer_call(self, node: cst.Call, method: str, info: OptimizerInfo, positional, keywords,
                              env: Env) -> None:
        for key in info.keys:
            self.model.optimizer_by_key.setdefault(key, info)
        vars_text: Optional[str] = None
        single_pair = None
        if method == "apply_gradients":
            pairs = positional[0] if positional else keywords.get("grads_and_vars")
            if isinstance(pairs, Seq):
                vars_text = pairs.vars_text
                single_pair = pairs.single_pair
        elif method == "apply":
            grads_node = call_argument(node, 0, "grads")
            vars_node = call_argument(node, 1, "trainable_variables")
            if vars_node is not None:
                vars_text = self.variables_text(vars_node, self.eval_quiet(vars_node, env))
                if _single_item_list(grads_node) and _single_item_list(vars_node):
                    single_pair = (grads_node.elements[0].value, vars_node.elements[0].value)
        elif method == "minimize":
            position = None if info.kind == tfapi.KIND_TF1 else 1
            vars_node = call_argument(node, position, "var_list")
            if vars_node is None:
                vars_text = "<all trainable>"
            else:
                vars_text = self.variables_text(vars_node, self.eval_quiet(vars_node, env))
                if _single_item_list(vars_node):
                    single_pair = (node.args[0].value, vars_node.elements[0].value)
        elif method == "build":
            vars_node = call_argument(node, 0, "var_list")
            if vars_node is not None:
                vars_text = self.variables_text(vars_node, self.eval_quiet(vars_node, env))
        self.model.optimizer_calls.append(OptimizerCall(
            node, method, info, vars_text, single_pair, tuple(self.loops), id(env.function_env()),
            expects_error=self.expecting_error > 0))

    def variables_text(self, node: Optional[cst.BaseExpression], value: Optional[Value]) -> Optional[str]:
        """Canonical text of a variable-list expression, or None when it cannot be compared."""
        if node is None:
            return None
        if isinstance(value, (VarList, ListDisplay)):
            return _normalize(value.text)
        if isinstance(node, cst.Attribute) and node.attr.value in tfapi.VARIABLE_COLLECTION_ATTRS:
            owner = dotted_name(node.value) or self.module.code_for_node(node.value)
            return f"{owner}.{tfapi.VARIABLE_COLLECTION_ATTRS[node.attr.value]}"
        if isinstance(node, (cst.List, cst.Tuple, cst.BinaryOperation, cst.Call)):
            return _normalize(self.module.code_for_node(node))
        return None

    def is_over_variables(self, expr: cst.BaseExpression, value: Optional[Value], env: Env) -> bool:
        """Does a loop header iterate over gradients or variables (rather than batches/epochs)?"""
        if isinstance(value, (VarList,)) or (isinstance(value, Seq) and (
                value.gradient is not None or isinstance(value.element, TupleValue) and value.vars_text)):
            return True
        stack = [expr]
        while stack:
            current = stack.pop()
            if isinstance(current, cst.Attribute) and current.attr.value in tfapi.VARIABLE_COLLECTION_ATTRS:
                return True
            if isinstance(current, cst.Name):
                bound = env.lookup(current.value)
                if isinstance(bound, VarList) or (isinstance(bound, Seq) and bound.gradient is not None):
                    return True
            stack.extend(current.children)
        return False

    def note_element_use(self, node: cst.CSTNode, operation: str, values, env: Env, receiver_node=None) -> None:
        for value in values:
            if isinstance(value, GradElem) and value.may_be_none:
                self.model.element_uses.append(ElementUse(node, operation, value.source, guarded=False,
                                                          expects_error=self.expecting_error > 0))
                return

    def note_arithmetic(self, node: cst.CSTNode, operator: cst.CSTNode, values, env: Env) -> Optional[Value]:
        if isinstance(operator, (cst.Add, cst.AddAssign)) and all(
                isinstance(v, (VarList, ListDisplay)) for v in values if v is not None) and len(values) == 2 \
                and all(v is not None for v in values):
            return VarList(_normalize(self.module.code_for_node(node)))
        if any(isinstance(v, GradElem) for v in values):
            self.note_element_use(node, _operator_symbol(operator), values, env)
            return _derived(values)
        return next((v for v in values if isinstance(v, Seq)), None)

    def lambda_guards(self, predicate: cst.BaseExpression) -> bool:
        if not isinstance(predicate, cst.Lambda):
            return False
        params = _parameter_names(predicate.params)
        return bool(params) and params[0] in guard_keys(predicate.body, True)

    def apply_lambda(self, function: LambdaValue, arguments) -> Optional[Value]:
        env = Env("comprehension", parent=function.env if isinstance(function.env, Env) else self.module_env)
        for name, value in zip(_parameter_names(function.node.params), arguments):
            env.names[name] = value
        return self.eval(function.node.body, env)

    def method_function(self, func: cst.Attribute, env: Env) -> Optional[FunctionValue]:
        function_env = env.function_env()
        if (isinstance(func.value, cst.Name) and function_env.self_name == func.value.value
                and function_env.class_env is not None):
            candidate = function_env.class_env.names.get(func.attr.value)
            if isinstance(candidate, FunctionValue):
                return candidate
        return None

    def seed_function(self, function: FunctionValue, node: cst.Call, positional, keywords, skip_self: bool) -> None:
        params = _parameter_names(function.node.params)
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


class _NotHandled:
    pass


_NOT_HANDLED = _NotHandled()


def _derived(values) -> Optional[GradElem]:
    for value in values:
        if isinstance(value, GradElem):
            return GradElem(value.source, may_be_none=False, derived=True)
    return None


def _is_gradients(value: Optional[Value]) -> bool:
    return isinstance(value, Seq) and value.gradient is not None


def _none_intolerant(qualified: str) -> bool:
    if qualified in tfapi.NONE_TOLERANT_CALLS:
        return False
    if qualified in _INTOLERANT_BUILTINS:
        return True
    return qualified.startswith(tfapi.NONE_INTOLERANT_NAMESPACES)


def _short(qualified: str) -> str:
    for long, short in (("tensorflow.", "tf."), ("numpy.", "np.")):
        if qualified.startswith(long):
            return short + qualified[len(long):]
    return qualified


def _operator_symbol(operator: cst.CSTNode) -> str:
    return getattr(operator, "_get_token", lambda: None)() or type(operator).__name__


_COLLECTION_NAME = re.compile(r"var|param|weight|trainable|s$", re.IGNORECASE)


def _collection_like_name(name: str) -> bool:
    """``params``, ``var_list``, ``tvars``, ``weights``: names that usually hold several variables."""
    return _COLLECTION_NAME.search(name) is not None


def _all_watched(tape: Optional[TapeInfo], sources: Optional[cst.BaseExpression]) -> bool:
    """Sources that are exactly tensors the user watched on this tape (inputs, not model variables)."""
    if tape is None or sources is None or not tape.watched:
        return False
    elements = [e.value for e in sources.elements] if isinstance(sources, (cst.List, cst.Tuple)) else [sources]
    return bool(elements) and all(expression_key(e) in tape.watched for e in elements)


def _is_zero_unconnected(expr: Optional[cst.BaseExpression]) -> bool:
    if expr is None:
        return False
    if isinstance(expr, cst.SimpleString):
        return expr.evaluated_value.lower() == "zero"
    name = dotted_name(expr)
    return name is not None and name.upper().endswith(".ZERO")


def _single_item_list(expr: Optional[cst.BaseExpression]) -> bool:
    return isinstance(expr, (cst.List, cst.Tuple)) and len(expr.elements) == 1 \
        and not isinstance(expr.elements[0], cst.StarredElement)


def _negative_integer(expr) -> Optional[int]:
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Minus) \
            and isinstance(expr.expression, cst.Integer):
        return -int(expr.expression.value, 0)
    return None


def _looks_like(expr: cst.BaseExpression, word: str) -> bool:
    name = terminal_name(expr)
    return name is not None and word in name.lower()


_ALIAS_ATTRS = re.compile(r"\.(trainable_weights|non_trainable_weights|weights)\b")


def _normalize(text: str) -> str:
    """Whitespace-free text with attribute aliases unified (``weights`` -> ``variables``)."""
    normalized = "".join(text.split())
    return _ALIAS_ATTRS.sub(lambda m: "." + tfapi.VARIABLE_COLLECTION_ATTRS[m.group(1)], normalized)


def _all_params(params: cst.Parameters):
    yield from params.posonly_params
    yield from params.params
    if isinstance(params.star_arg, cst.Param):
        yield params.star_arg
    yield from params.kwonly_params
    if params.star_kwarg is not None:
        yield params.star_kwarg


def _parameter_names(params: cst.Parameters) -> list[str]:
    return [p.name.value for p in (*params.posonly_params, *params.params)] + \
        [p.name.value for p in params.kwonly_params]


def _is_static(node: cst.FunctionDef) -> bool:
    return any(dotted_name(d.decorator) in ("staticmethod",) for d in node.decorators)


def _class_attribute(env: Env, dotted_self_attr: str) -> Optional[Value]:
    """Value of ``self.x``: assigned through ``self`` in a method, else a class-body attribute ``x``."""
    class_env = env.function_env().class_env
    if class_env is None:
        return None
    if dotted_self_attr in class_env.names:
        return class_env.names[dotted_self_attr]
    value = class_env.names.get(dotted_self_attr[5:])
    return None if isinstance(value, FunctionValue) else value


class _Shadowing:
    """``name in _Shadowing(env)``: is ``name`` bound in a function/class scope (hiding an import)?"""

    __slots__ = ("env",)

    def __init__(self, env: Env) -> None:
        self.env = env

    def __contains__(self, name: str) -> bool:
        current: Optional[Env] = self.env
        while current is not None and current.kind != "module":
            if name in current.names:
                return True
            current = current.parent
        return False


__all__ = ["Analyzer", "Env", "names_in"]
