"""Bindings: names, ``self`` attributes and list items receiving values, and looking them up again."""
from __future__ import annotations

from typing import Optional

import libcst as cst

from gradlint.semantic.env import EMPTY, Env, merge
from gradlint.semantic.parts import Evaluates
from gradlint.semantic.records import AttributeAssignment
from gradlint.semantic.values import (
    FunctionValue,
    KerasObject,
    ListDisplay,
    OptimizerValue,
    Seq,
    TupleValue,
    Value,
    carries_gradient,
    written,
)
from gradlint.semantic.walk import WalkState


class Binder:
    """Binds assignment targets and resolves names and ``self.attr`` without re-evaluating them."""

    def __init__(self, state: WalkState, evaluator: Evaluates) -> None:
        self.state = state
        self.model = state.model
        self.evaluator = evaluator

    def bind(self, target: cst.CSTNode, value: Optional[Value], env: Env, provenance=EMPTY) -> None:
        state = self.state
        if isinstance(target, cst.Name):
            name = target.value
            env.names[name] = value
            env.provenance[name] = provenance
            env.bound_tapes[name] = state.binding_tapes if state.binding_tapes is not None else state.tapes_key
            if env.guarded:
                env.guarded = frozenset(k for k in env.guarded if k != name and not k.startswith(name + "["))
            if isinstance(value, OptimizerValue):
                value.info.keys.add((id(env.function_env()), name))
        elif isinstance(target, (cst.Tuple, cst.List)):
            elements = target.elements
            if isinstance(value, Seq):
                self.evaluator.record_iteration(value, target)
            items = value.items if isinstance(value, (TupleValue, Seq)) else None
            for index, element in enumerate(elements):
                if isinstance(element, cst.StarredElement):
                    self.bind(element.value, value if isinstance(value, Seq) else None, env, provenance)
                    continue
                if items is not None and len(items) == len(elements):
                    item = items[index]
                elif isinstance(value, Seq):
                    item = value.element
                else:
                    item = None
                self.bind(element.value, item, env, provenance)
        elif isinstance(target, cst.Attribute):
            self.bind_attribute(target, value, env, provenance)
        elif isinstance(target, cst.Subscript):
            base = self.evaluator.eval(target.value, env)
            for element in target.slice:
                self.evaluator.visit_children(element, env)
            self.write_item(target.value, base, value, env, provenance)
        elif isinstance(target, cst.StarredElement):
            self.bind(target.value, value, env, provenance)

    def write_item(self, container: cst.BaseExpression, base: Optional[Value], value: Optional[Value], env: Env,
                   provenance=EMPTY) -> None:
        """``grads[i] = clip(g)``, ``pairs.append((g, v))``: afterwards the list holds the written values."""
        if isinstance(base, Seq):
            if carries_gradient(value) or value is None:
                base.element = written(base.element, value)
                base.items = None
        elif carries_gradient(value) and (base is None or isinstance(base, ListDisplay)):
            self.rebind(container, Seq(value), env)
        if provenance:
            self.add_provenance(container, provenance, env)

    def rebind(self, expr: cst.BaseExpression, value: Value, env: Env) -> None:
        """Give the name or ``self.attr`` that ``expr`` stands for a new value, in the scope that owns it."""
        if isinstance(expr, cst.Name):
            owner = env.owner_of(expr.value) or env.function_env()
            owner.names[expr.value] = value
            return
        key = self.binding_key(expr, env)
        if key is not None and key[0] == "self":
            class_env = env.function_env().class_env
            if class_env is not None:
                class_env.names[key[2]] = value

    def add_provenance(self, expr: cst.BaseExpression, provenance, env: Env) -> None:
        """Values written into a container are part of what the container was computed from."""
        if isinstance(expr, cst.Name):
            owner = env.owner_of(expr.value)
            if owner is not None:
                owner.provenance[expr.value] = merge(owner.provenance.get(expr.value, EMPTY), provenance)

    def bind_attribute(self, target: cst.Attribute, value: Optional[Value], env: Env, provenance) -> None:
        self.evaluator.eval(target.value, env)
        key = self.binding_key(target, env)
        receiver = self.quiet(target.value, env)
        info = receiver.info if isinstance(receiver, OptimizerValue) else None
        keras = receiver.class_name if isinstance(receiver, KerasObject) else None
        state = self.state
        self.model.attribute_assignments.append(AttributeAssignment(
            target, target.attr.value, self.binding_key(target.value, env), info,
            expects_error=state.expects_error, receiver_keras=keras,
        ))
        if key is not None and key[0] == "self":
            class_env = env.function_env().class_env
            if class_env is not None:
                class_env.names[key[2]] = value
                class_env.provenance[key[2]] = provenance
                class_env.bound_tapes[key[2]] = state.tapes_key
                if isinstance(value, OptimizerValue):
                    value.info.keys.add(key)

    def binding_key(self, expr: cst.CSTNode, env: Env) -> Optional[tuple]:
        """Identity of the storage an expression names: a scope's variable or ``self.attr``."""
        if isinstance(expr, cst.Name):
            owner = env.owner_of(expr.value)
            scope = owner.function_env() if owner is not None else self.state.module_env
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

    def quiet(self, expr: Optional[cst.BaseExpression], env: Env) -> Optional[Value]:
        """Value of a name / ``self.attr`` without visiting (already visited) subexpressions."""
        if isinstance(expr, cst.Name):
            return env.lookup(expr.value)
        if expr is None:
            return None
        key = self.binding_key(expr, env)
        if key is not None and key[0] == "self":
            return self.class_attribute(env, key[2])
        return None

    @staticmethod
    def class_attribute(env: Env, dotted_self_attr: str) -> Optional[Value]:
        """Value of ``self.x``: assigned through ``self`` in a method, else a class-body attribute ``x``."""
        class_env = env.function_env().class_env
        if class_env is None:
            return None
        if dotted_self_attr in class_env.names:
            return class_env.names[dotted_self_attr]
        value = class_env.names.get(dotted_self_attr[5:])
        return None if isinstance(value, FunctionValue) else value

