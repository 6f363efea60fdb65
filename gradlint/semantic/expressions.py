"""Expression evaluation: abstract values, guards, provenance, uses of possibly-None gradients."""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import libcst as cst

from gradlint.semantic import tfapi
from gradlint.semantic.env import EMPTY, Env, Provenance
from gradlint.semantic.parts import Binds, InterpretsCalls, RunsStatements
from gradlint.semantic.records import ElementUse, Iteration, OptimizerAttribute, StringTest
from gradlint.semantic.syntax import dotted_name, expression_key, guard_keys, negative_integer, parameter_names
from gradlint.semantic.values import (
    NONE,
    GradElem,
    KerasObject,
    LambdaValue,
    ListDisplay,
    NoneValue,
    OptimizerValue,
    Seq,
    StringsValue,
    TupleValue,
    Value,
    VarElem,
    VarList,
    derived,
    iterate,
)
from gradlint.semantic.walk import WalkState

_ORDERING = frozenset({cst.LessThan, cst.LessThanEqual, cst.GreaterThan, cst.GreaterThanEqual})
_VALUE_COMPARISONS = _ORDERING | {cst.Equal, cst.NotEqual}
# attributes that describe a tensor rather than compute from it: nothing flows from the tensor through them
_STATIC_ATTRIBUTES = frozenset({"shape", "dtype", "ndim", "device"})
_STRING_LITERALS = (cst.SimpleString, cst.ConcatenatedString)


class ExpressionEvaluator:
    """Evaluates expression nodes to abstract values, collecting provenance and recording uses."""

    def __init__(self, state: WalkState) -> None:
        self.state = state
        self.model = state.model
        self.binder: Binds
        self.calls: InterpretsCalls
        self.statements: RunsStatements

    def wire(self, binder: Binds, calls: InterpretsCalls, statements: RunsStatements) -> None:
        self.binder = binder
        self.calls = calls
        self.statements = statements

    # ------------------------------------------------------------ evaluation
    def eval_tracked(self, node: cst.BaseExpression, env: Env) -> tuple[Optional[Value], Provenance]:
        """Evaluate ``node`` and return its value and what it was computed from."""
        stack = self.state.provenance_stack
        stack.append(set())
        try:
            value = self.eval(node, env)
        finally:
            collected = frozenset(stack.pop())
        return value, collected

    def eval_quiet(self, expr: cst.BaseExpression, env: Env) -> Optional[Value]:
        return self.binder.quiet(expr, env)

    def eval(self, node: cst.BaseExpression, env: Env, *, as_callee: bool = False) -> Optional[Value]:
        # Dispatch on the exact node type: isinstance() against libcst's abstract base classes is slow.
        handler = _HANDLERS.get(type(node))
        if handler is None:
            self.visit_children(node, env)
            return None
        return handler(self, node, env, as_callee)

    def visit_children(self, node: cst.CSTNode, env: Env) -> None:
        self.statements.visit_children(node, env)

    def _eval_binary(self, node: cst.BinaryOperation, env: Env, as_callee: bool) -> Optional[Value]:
        left = self.eval(node.left, env)
        right = self.eval(node.right, env)
        return self.note_arithmetic(node, node.operator, ((node.left, left), (node.right, right)), env)

    def _eval_unary(self, node: cst.UnaryOperation, env: Env, as_callee: bool) -> Optional[Value]:
        operand = self.eval(node.expression, env)
        if isinstance(node.operator, cst.Not):
            return None
        return self.note_arithmetic(node, node.operator, ((node.expression, operand),), env)

    def _eval_boolean(self, node: cst.BooleanOperation, env: Env, as_callee: bool) -> None:
        self.eval(node.left, env)
        saved = env.guarded
        env.guarded = saved | guard_keys(node.left, isinstance(node.operator, cst.And))
        self.eval(node.right, env)
        env.guarded = saved
        return None

    def _eval_named(self, node: cst.NamedExpr, env: Env, as_callee: bool) -> Optional[Value]:
        value, provenance = self.eval_tracked(node.value, env)
        self.state.note_all(provenance)
        self.binder.bind(node.target, value, env, provenance)
        return value

    def _eval_lambda(self, node: cst.Lambda, env: Env, as_callee: bool) -> Value:
        return LambdaValue(node, env)

    def _eval_literal(self, node: cst.CSTNode, env: Env, as_callee: bool) -> None:
        return None

    def eval_chain_base(self, node: cst.BaseExpression, env: Env) -> Optional[Value]:
        """The object an attribute chain starts from (``model`` in ``model.W``), evaluated without noting
        it as read whole: only the whole chain is."""
        kind = type(node)
        if kind is cst.Name:
            return self.eval_name(node, env, whole=False)
        if kind is cst.Attribute:
            return self.eval_attribute(node, env, False, whole=False)
        return self.eval(node, env)

    def eval_name(self, node: cst.Name, env: Env, whole: bool = True) -> Optional[Value]:
        if node.value == "None":
            return NONE
        state = self.state
        if state.provenance_stack:
            if whole:
                state.note(("name", node.value))
            state.note_all(env.provenance_of(node.value))
        value = env.lookup(node.value)
        if isinstance(value, GradElem) and value.may_be_none and env.is_guarded(node.value):
            return value.checked()
        return value

    def eval_attribute(self, node: cst.Attribute, env: Env, as_callee: bool, whole: bool = True) -> Optional[Value]:
        attr = node.attr.value
        state = self.state
        if attr in _STATIC_ATTRIBUTES and not as_callee and state.provenance_stack:
            # `x.shape`, `x.dtype` are static facts about a tensor: no gradient flows through them
            state.open_collection()
            try:
                base = self.eval_chain_base(node.value, env)
            finally:
                state.close_collection()
            whole = False
        else:
            value_node = node.value
            kind = type(value_node)
            if kind is cst.Name:
                base = self.eval_name(value_node, env, whole=False)
            elif kind is cst.Attribute:
                base = self.eval_attribute(value_node, env, False, whole=False)
            else:
                base = self.eval(value_node, env)
        if state.provenance_stack:
            dotted = dotted_name(node) if whole else None
            if dotted is not None:
                state.note(("name", dotted))
            if attr == "losses":
                state.note(("attr", "losses"))
        if attr in tfapi.VARIABLE_COLLECTION_ATTRS and not as_callee:
            owner = dotted_name(node.value) or state.module.code_for_node(node.value)
            return VarList(f"{owner}.{tfapi.VARIABLE_COLLECTION_ATTRS[attr]}", owner=base)
        if isinstance(base, GradElem) and not as_callee:
            self.note_element_use(node, f".{attr}", ((node.value, base),), env,
                                  inspection=attr in tfapi.TENSOR_INSPECTIONS)
            return None
        if isinstance(base, OptimizerValue) and not as_callee:
            self.model.optimizer_attributes.append(
                OptimizerAttribute(node, attr, base.info, expects_error=state.expects_error))
        if attr == "optimizer" and isinstance(base, KerasObject):
            return self.calls.model_optimizer(node, base, env)
        key = self.binder.binding_key(node, env)
        if key is not None and key[0] == "self":
            class_env = env.function_env().class_env
            if class_env is not None and state.provenance_stack:
                state.note_all(class_env.provenance.get(key[2], EMPTY))
            value = self.binder.class_attribute(env, key[2])
            if value is None and attr == "model" and isinstance(base, KerasObject) and base.class_name == "Callback":
                return KerasObject("Model")  # a callback's `self.model`: the model being trained
            return value
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
            return base if isinstance(base, (Seq, VarList)) else None
        result: Optional[Value] = None
        if isinstance(base, (TupleValue, Seq)) and isinstance(index_node, cst.Integer):
            items = base.items
            position = int(index_node.value, 0)
            if items is not None and position < len(items):
                result = items[position]
            elif isinstance(base, Seq):
                result = base.element
        elif isinstance(base, (TupleValue, Seq)) and negative_integer(index_node) is not None:
            items = base.items
            position = negative_integer(index_node)
            if items is not None and -position <= len(items):
                result = items[position]
            elif isinstance(base, Seq):
                result = base.element
        elif isinstance(base, Seq):
            result = base.element
        elif isinstance(base, VarList):
            result = VarElem(base.text)
        if isinstance(result, GradElem) and result.may_be_none:
            key = expression_key(node)
            if key is not None and env.is_guarded(key):
                return result.checked()
        return result

    def eval_comparison(self, node: cst.Comparison, env: Env) -> None:
        state = self.state
        state.open_collection()
        try:
            values = [self.eval(node.left, env)]
            for comparison in node.comparisons:
                values.append(self.eval(comparison.comparator, env))
        finally:
            inputs = state.close_collection()  # a comparison's result carries no gradient from its operands
        operators = [type(c.operator) for c in node.comparisons]
        if any(op in _ORDERING for op in operators) and any(type(v) is GradElem for v in values):
            operands = [(node.left, values[0])] + [(c.comparator, v) for c, v in zip(node.comparisons, values[1:])]
            self.note_element_use(node, "comparison", operands, env)
        if any(op in _VALUE_COMPARISONS for op in operators):
            state.note_break(node, "a comparison", inputs)
        if len(node.comparisons) == 1:
            only = node.comparisons[0]
            self.note_string_test(node, only.operator, node.left, only.comparator, env)
        return None

    def note_string_test(self, node: cst.Comparison, operator, left, right, env: Env) -> None:
        """``x.attr == 'a'``, ``x.attr in CONSTANTS``, ``'a' in x.attr``: an attribute tested against strings."""
        kind = type(operator)
        if kind is cst.Equal or kind is cst.NotEqual:
            pairs = ((left, right, "=="), (right, left, "=="))
        elif kind is cst.In or kind is cst.NotIn:
            pairs = ((left, right, "in"), (right, left, "contains"))
        else:
            return
        for attribute, other, operation in pairs:
            if type(attribute) is not cst.Attribute:
                continue
            strings, literal = self.strings_of(other, env)
            if strings:
                self.record_string_test(node, attribute, strings, operation, literal, env)
                return

    def record_string_test(self, node: cst.CSTNode, attribute: cst.Attribute, strings, operation: str,
                           literal: Optional[cst.CSTNode], env: Env) -> None:
        self.model.string_tests.append(StringTest(
            node, attribute.attr.value, attribute.value, self.eval_quiet(attribute.value, env), tuple(strings),
            operation, literal_node=literal, expects_error=self.state.expects_error))

    def strings_of(self, expr: cst.BaseExpression, env: Env) -> tuple[list[str], Optional[cst.CSTNode]]:
        """The string constants an expression stands for (a literal, a display, a name bound to them)."""
        if isinstance(expr, _STRING_LITERALS) or isinstance(expr, (cst.Tuple, cst.List, cst.Set)):
            from gradlint.semantic.syntax import string_literals

            return string_literals(expr), expr
        if isinstance(expr, cst.Name):
            value = env.lookup(expr.value)
            if isinstance(value, StringsValue):
                return value.strings, value.node
        return [], None

    def eval_if_exp(self, node: cst.IfExp, env: Env) -> Optional[Value]:
        state = self.state
        state.open_collection()
        try:
            self.eval(node.test, env)
        finally:
            state.close_collection()
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
        carried = next((v for v in items if isinstance(v, (GradElem, TupleValue, Seq))), None)
        if isinstance(carried, GradElem) or (
            isinstance(carried, TupleValue) and any(isinstance(i, GradElem) for i in carried.items)
        ) or (isinstance(carried, Seq) and carried.gradient is not None):
            return Seq(carried, single_pair=single_pair)
        if single_pair is not None:
            return Seq(items[0], single_pair=single_pair)
        if isinstance(node, cst.List):
            return ListDisplay(node)
        return None

    def eval_comprehension(self, node, env: Env) -> Optional[Value]:
        comp_env = Env("comprehension", parent=env)
        for_in: Optional[cst.CompFor] = node.for_in
        first_iterable: Optional[Value] = None
        outermost = True
        state = self.state
        while for_in is not None:
            iterable = self.eval(for_in.iter, env if outermost else comp_env)
            self.record_iteration(iterable, for_in)
            if outermost:
                first_iterable, outermost = iterable, False
            self.binder.bind(for_in.target, iterate(iterable), comp_env)
            for condition in for_in.ifs:
                state.open_collection()
                try:
                    self.eval(condition.test, comp_env)
                finally:
                    state.close_collection()
                comp_env.guarded = comp_env.guarded | guard_keys(condition.test, True)
            for_in = for_in.inner_for_in
        if isinstance(node, cst.DictComp):
            self.eval(node.key, comp_env)
            self.eval(node.value, comp_env)
            return None
        element = self.eval(node.elt, comp_env)
        if isinstance(element, (GradElem, TupleValue)):
            vars_text = first_iterable.vars_text if isinstance(first_iterable, Seq) else None
            return Seq(element, is_iterator=isinstance(node, cst.GeneratorExp), vars_text=vars_text)
        return None

    # ------------------------------------------------------- gradient events
    def note_element_use(self, node: cst.CSTNode, operation: str, operands, env: Env,
                         inspection: bool = False) -> None:
        """An operation that fails on ``None`` applied to a gradient that may be ``None``.

        ``operands`` are (expression, value) pairs. Once the use has run, the expression is known not to
        be None on this path (the use would have failed): later uses of it are not reported again.
        """
        for expr, value in operands:
            if isinstance(value, GradElem) and value.may_be_none:
                state = self.state
                source = value.source
                certain = value.certain_none or (self.calls.unused_layers_of(source) if not value.derived else ())
                self.model.element_uses.append(ElementUse(
                    node, operation, source, guarded=False, expects_error=state.expects_error,
                    certain_none=certain, context=env.function_env().context, inspection=inspection,
                    statement_has_effect=not self.discarded_without_effect(node)))
                key = expression_key(expr) if expr is not None else None
                if key is not None:
                    env.guarded = env.guarded | {key}
                return

    def discarded_without_effect(self, node: cst.CSTNode) -> bool:
        """Is ``node`` an expression statement that computes a value and throws it away (a clip, arithmetic)?
        Calls that log or assign (``tf.summary.histogram``, ``v.assign``) have an effect."""
        if self.state.discarding is not node:
            return False
        if isinstance(node, cst.Call):
            return self.state.imports.resolve(node.func) in tfapi.PURE_CALLS
        return isinstance(node, (cst.BinaryOperation, cst.UnaryOperation, cst.Attribute, cst.Subscript))

    def note_arithmetic(self, node: cst.CSTNode, operator: cst.CSTNode, operands, env: Env) -> Optional[Value]:
        values = [value for _, value in operands]
        if isinstance(operator, (cst.Add, cst.AddAssign)) and len(values) == 2 and all(
                isinstance(v, (VarList, ListDisplay)) for v in values):
            return VarList(tfapi.normalize_variables(self.state.module.code_for_node(node)))
        if any(isinstance(v, GradElem) for v in values):
            self.note_element_use(node, _operator_symbol(operator), operands, env)
            return derived(values)
        return next((v for v in values if isinstance(v, Seq)), None)

    def record_iteration(self, value: Optional[Value], node: cst.CSTNode, *, lazy: bool = False,
                         apply: bool = False) -> None:
        """``value`` is iterated (or wrapped for iteration, ``lazy``) by ``node``."""
        if isinstance(value, (Seq, TupleValue)):
            self.model.iterations.append(Iteration(node, value, lazy=lazy, apply=apply))

    def lambda_guards(self, predicate: cst.BaseExpression) -> bool:
        if not isinstance(predicate, cst.Lambda):
            return False
        params = parameter_names(predicate.params)
        return bool(params) and params[0] in guard_keys(predicate.body, True)

    def apply_lambda(self, function: LambdaValue, arguments) -> Optional[Value]:
        env = Env("comprehension",
                  parent=function.env if isinstance(function.env, Env) else self.state.module_env)
        for name, value in zip(parameter_names(function.node.params), arguments):
            env.names[name] = value
        return self.eval(function.node.body, env)


_HANDLERS = {
    cst.Name: lambda self, node, env, as_callee: self.eval_name(node, env),
    cst.Call: lambda self, node, env, as_callee: self.calls.eval_call(node, env),
    cst.Attribute: lambda self, node, env, as_callee: self.eval_attribute(node, env, as_callee),
    cst.Subscript: lambda self, node, env, as_callee: self.eval_subscript(node, env),
    cst.BinaryOperation: ExpressionEvaluator._eval_binary,
    cst.UnaryOperation: ExpressionEvaluator._eval_unary,
    cst.BooleanOperation: ExpressionEvaluator._eval_boolean,
    cst.Comparison: lambda self, node, env, as_callee: self.eval_comparison(node, env),
    cst.IfExp: lambda self, node, env, as_callee: self.eval_if_exp(node, env),
    cst.Tuple: lambda self, node, env, as_callee: self.eval_display(node, env),
    cst.List: lambda self, node, env, as_callee: self.eval_display(node, env),
    cst.Set: lambda self, node, env, as_callee: self.eval_display(node, env),
    cst.ListComp: lambda self, node, env, as_callee: self.eval_comprehension(node, env),
    cst.GeneratorExp: lambda self, node, env, as_callee: self.eval_comprehension(node, env),
    cst.SetComp: lambda self, node, env, as_callee: self.eval_comprehension(node, env),
    cst.DictComp: lambda self, node, env, as_callee: self.eval_comprehension(node, env),
    cst.Lambda: ExpressionEvaluator._eval_lambda,
    cst.NamedExpr: ExpressionEvaluator._eval_named,
    cst.SimpleString: ExpressionEvaluator._eval_literal,
    cst.ConcatenatedString: ExpressionEvaluator._eval_literal,
    cst.Integer: ExpressionEvaluator._eval_literal,
    cst.Float: ExpressionEvaluator._eval_literal,
    cst.Imaginary: ExpressionEvaluator._eval_literal,
    cst.Ellipsis: ExpressionEvaluator._eval_literal,
}


def _operator_symbol(operator: cst.CSTNode) -> str:
    return getattr(operator, "_get_token", lambda: None)() or type(operator).__name__
