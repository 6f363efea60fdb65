"""Expression evaluation: abstract values, guards, provenance, uses of possibly-None gradients."""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import libcst as cst

from gradlint.semantic import tfapi
from gradlint.semantic.env import EMPTY, Env, Provenance
from gradlint.semantic.records import ElementUse, IteratorReuse
from gradlint.semantic.syntax import (
    dotted_name,
    expression_key,
    guard_keys,
    negative_integer,
    parameter_names,
)
from gradlint.semantic.values import (
    NONE,
    FunctionValue,
    GradElem,
    LambdaValue,
    ListDisplay,
    NoneValue,
    Seq,
    TupleValue,
    Value,
    VarElem,
    VarList,
    iterate,
)

_ORDERING = (cst.LessThan, cst.LessThanEqual, cst.GreaterThan, cst.GreaterThanEqual)
_VALUE_COMPARISONS = _ORDERING + (cst.Equal, cst.NotEqual)


class ExpressionEvaluator:
    """Mixin of :class:`~gradlint.semantic.analyzer.Analyzer`: evaluates expression nodes."""

    # ------------------------------------------------------------- provenance
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

    def eval_tracked(self, node: cst.BaseExpression, env: Env) -> tuple[Optional[Value], Provenance]:
        """Evaluate ``node`` and return its value and what it was computed from."""
        self.provenance_stack.append(set())
        try:
            value = self.eval(node, env)
        finally:
            collected = self.provenance_stack.pop()
        return value, frozenset(collected)

    # ------------------------------------------------------------ evaluation
    def eval_quiet(self, expr: cst.BaseExpression, env: Env) -> Optional[Value]:
        """Value of a name / ``self.attr`` without visiting (already visited) subexpressions."""
        if isinstance(expr, cst.Name):
            return env.lookup(expr.value)
        key = self.binding_key(expr, env)
        if key is not None and key[0] == "self":
            return _class_attribute(env, key[2])
        return None

    def eval(self, node: cst.BaseExpression, env: Env, *, as_callee: bool = False) -> Optional[Value]:
        # Dispatch on the exact node type: isinstance() against libcst's abstract base classes is slow.
        handler = _HANDLERS.get(type(node))
        if handler is None:
            self.visit_children(node, env)
            return None
        return handler(self, node, env, as_callee)

    def _eval_binary(self, node: cst.BinaryOperation, env: Env, as_callee: bool) -> Optional[Value]:
        left = self.eval(node.left, env)
        right = self.eval(node.right, env)
        return self.note_arithmetic(node, node.operator, (left, right), env)

    def _eval_unary(self, node: cst.UnaryOperation, env: Env, as_callee: bool) -> Optional[Value]:
        operand = self.eval(node.expression, env)
        if isinstance(node.operator, cst.Not):
            return None
        return self.note_arithmetic(node, node.operator, (operand,), env)

    def _eval_boolean(self, node: cst.BooleanOperation, env: Env, as_callee: bool) -> None:
        self.eval(node.left, env)
        saved = env.guarded
        env.guarded = saved | guard_keys(node.left, isinstance(node.operator, cst.And))
        self.eval(node.right, env)
        env.guarded = saved
        return None

    def _eval_named(self, node: cst.NamedExpr, env: Env, as_callee: bool) -> Optional[Value]:
        value, provenance = self.eval_tracked(node.value, env)
        self.note_all(provenance)
        self.bind(node.target, value, env, provenance)
        return value

    def _eval_lambda(self, node: cst.Lambda, env: Env, as_callee: bool) -> Value:
        return LambdaValue(node, env)

    def _eval_literal(self, node: cst.CSTNode, env: Env, as_callee: bool) -> None:
        return None

    def eval_name(self, node: cst.Name, env: Env) -> Optional[Value]:
        if node.value == "None":
            return NONE
        if self.provenance_stack:
            self.note(("name", node.value))
            self.note_all(env.provenance_of(node.value))
        value = env.lookup(node.value)
        if isinstance(value, GradElem) and value.may_be_none and env.is_guarded(node.value):
            return value.checked()
        return value

    def eval_attribute(self, node: cst.Attribute, env: Env, as_callee: bool) -> Optional[Value]:
        base = self.eval(node.value, env)
        attr = node.attr.value
        if self.provenance_stack:
            dotted = dotted_name(node)
            if dotted is not None:
                self.note(("name", dotted))
            if attr == "losses":
                self.note(("attr", "losses"))
        if attr in tfapi.VARIABLE_COLLECTION_ATTRS and not as_callee:
            owner = dotted_name(node.value) or self.module.code_for_node(node.value)
            return VarList(f"{owner}.{tfapi.VARIABLE_COLLECTION_ATTRS[attr]}")
        if isinstance(base, GradElem) and not as_callee:
            self.note_element_use(node, f".{attr}", (base,), env)
            return None
        key = self.binding_key(node, env)
        if key is not None and key[0] == "self":
            class_env = env.function_env().class_env
            if class_env is not None and self.provenance_stack:
                self.note_all(class_env.provenance.get(key[2], EMPTY))
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
            return base if isinstance(base, (Seq, VarList)) else None
        result: Optional[Value] = None
        if isinstance(base, TupleValue) and isinstance(index_node, cst.Integer):
            position = int(index_node.value, 0)
            result = base.items[position] if position < len(base.items) else None
        elif isinstance(base, TupleValue) and negative_integer(index_node) is not None:
            position = negative_integer(index_node)
            result = base.items[position] if -position <= len(base.items) else None
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
        self.provenance_stack.append(set())
        try:
            values = [self.eval(node.left, env)]
            for comparison in node.comparisons:
                values.append(self.eval(comparison.comparator, env))
        finally:
            inputs = self.provenance_stack.pop()  # a comparison's result carries no gradient from its operands
        operators = [c.operator for c in node.comparisons]
        if any(isinstance(op, _ORDERING) for op in operators):
            self.note_element_use(node, "comparison", values, env)
        if any(isinstance(op, _VALUE_COMPARISONS) for op in operators):
            self.note_break(node, "a comparison", inputs)
        self.note_name_filter(node, env)
        return None

    def eval_if_exp(self, node: cst.IfExp, env: Env) -> Optional[Value]:
        self.provenance_stack.append(set())
        try:
            self.eval(node.test, env)
        finally:
            self.provenance_stack.pop()
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
        carried = next((v for v in items if isinstance(v, (GradElem, TupleValue))), None)
        if isinstance(carried, GradElem) or (
            isinstance(carried, TupleValue) and any(isinstance(i, GradElem) for i in carried.items)
        ):
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
        while for_in is not None:
            iterable = self.eval(for_in.iter, env if outermost else comp_env)
            self.consume(iterable, for_in)
            if outermost:
                first_iterable, outermost = iterable, False
            self.bind(for_in.target, iterate(iterable), comp_env)
            for condition in for_in.ifs:
                self.provenance_stack.append(set())
                try:
                    self.eval(condition.test, comp_env)
                finally:
                    self.provenance_stack.pop()
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
    def note_element_use(self, node: cst.CSTNode, operation: str, values, env: Env) -> None:
        """An operation that fails on ``None`` applied to a gradient that may be ``None``."""
        for value in values:
            if isinstance(value, GradElem) and value.may_be_none:
                self.model.element_uses.append(ElementUse(node, operation, value.source, guarded=False,
                                                          expects_error=self.expects_error))
                return

    def note_arithmetic(self, node: cst.CSTNode, operator: cst.CSTNode, values, env: Env) -> Optional[Value]:
        if isinstance(operator, (cst.Add, cst.AddAssign)) and len(values) == 2 and all(
                isinstance(v, (VarList, ListDisplay)) for v in values):
            return VarList(tfapi.normalize_variables(self.module.code_for_node(node)))
        if any(isinstance(v, GradElem) for v in values):
            self.note_element_use(node, _operator_symbol(operator), values, env)
            return _derived(values)
        return next((v for v in values if isinstance(v, Seq)), None)

    def consume(self, value: Optional[Value], consumer: cst.CSTNode) -> None:
        """Iterating a one-shot iterator (zip, map, generator) exhausts it."""
        self.check_global_clip_result(value, consumer)
        if not isinstance(value, Seq) or not value.is_iterator:
            return
        is_apply = isinstance(consumer, cst.Call)
        if value.consumed_by is not None and is_apply and value.created_by is not None:
            self.model.iterator_reuses.append(
                IteratorReuse(consumer, value.created_by, value.assigned_in, value.consumed_by))
        if value.consumed_by is None:
            value.consumed_by = consumer

    def lambda_guards(self, predicate: cst.BaseExpression) -> bool:
        if not isinstance(predicate, cst.Lambda):
            return False
        params = parameter_names(predicate.params)
        return bool(params) and params[0] in guard_keys(predicate.body, True)

    def apply_lambda(self, function: LambdaValue, arguments) -> Optional[Value]:
        env = Env("comprehension", parent=function.env if isinstance(function.env, Env) else self.module_env)
        for name, value in zip(parameter_names(function.node.params), arguments):
            env.names[name] = value
        return self.eval(function.node.body, env)


_HANDLERS = {
    cst.Name: lambda self, node, env, as_callee: self.eval_name(node, env),
    cst.Call: lambda self, node, env, as_callee: self.eval_call(node, env),
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


def _derived(values) -> Optional[GradElem]:
    """The result of an operation on a gradient: a new, non-None gradient of the same source."""
    for value in values:
        if isinstance(value, GradElem):
            return GradElem(value.source, may_be_none=False, derived=True, scaled=value.scaled)
    return None


def _operator_symbol(operator: cst.CSTNode) -> str:
    return getattr(operator, "_get_token", lambda: None)() or type(operator).__name__


def _class_attribute(env: Env, dotted_self_attr: str) -> Optional[Value]:
    """Value of ``self.x``: assigned through ``self`` in a method, else a class-body attribute ``x``."""
    class_env = env.function_env().class_env
    if class_env is None:
        return None
    if dotted_self_attr in class_env.names:
        return class_env.names[dotted_self_attr]
    value = class_env.names.get(dotted_self_attr[5:])
    return None if isinstance(value, FunctionValue) else value
