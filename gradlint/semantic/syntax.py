"""Small syntactic helpers over libcst nodes (no semantics, no state)."""
from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst


def dotted_name(expr: cst.CSTNode) -> Optional[str]:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts: list[str] = []
    while isinstance(expr, cst.Attribute):
        parts.append(expr.attr.value)
        expr = expr.value
    if isinstance(expr, cst.Name):
        parts.append(expr.value)
        return ".".join(reversed(parts))
    return None


def terminal_name(expr: cst.CSTNode) -> Optional[str]:
    """The last identifier of a Name/Attribute chain (``self.g_opt`` -> ``g_opt``)."""
    if isinstance(expr, cst.Attribute):
        return expr.attr.value
    if isinstance(expr, cst.Name):
        return expr.value
    return None


def target_names(target: cst.CSTNode) -> Iterator[str]:
    """Names bound by an assignment / for target."""
    if isinstance(target, cst.Name):
        yield target.value
    elif isinstance(target, (cst.Tuple, cst.List)):
        for element in target.elements:
            yield from target_names(element.value)
    elif isinstance(target, cst.StarredElement):
        yield from target_names(target.value)


def names_in(node: cst.CSTNode) -> set[str]:
    """Every variable-like identifier spelled in ``node`` (names, parameters, imports; not attribute
    names after a dot, nor keyword-argument names)."""
    found: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, cst.Name):
            found.add(current.value)
        elif isinstance(current, cst.Attribute):
            stack.append(current.value)  # skip the attribute identifier itself
        elif isinstance(current, cst.Arg):
            stack.append(current.value)  # skip a keyword argument's name
        else:
            stack.extend(current.children)
    return found


def assigned_names(block: cst.CSTNode) -> frozenset[str]:
    """Names bound anywhere inside ``block`` (assignments, augmented assignments, for targets, walrus)."""
    found: set[str] = set()
    stack = [block]
    while stack:
        current = stack.pop()
        if isinstance(current, cst.AssignTarget):
            found.update(target_names(current.target))
        elif isinstance(current, (cst.AugAssign, cst.AnnAssign)):
            found.update(target_names(current.target))
        elif isinstance(current, (cst.For, cst.CompFor)):
            found.update(target_names(current.target))
        elif isinstance(current, cst.NamedExpr):
            found.update(target_names(current.target))
        if isinstance(current, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            continue
        stack.extend(current.children)
    return frozenset(found)


def is_none(expr: cst.CSTNode) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "None"


def literal_true(expr: Optional[cst.CSTNode]) -> bool:
    return isinstance(expr, cst.Name) and expr.value == "True"


def block_statements(body: cst.BaseSuite) -> tuple:
    """Statements of an indented block or a one-line suite."""
    return tuple(body.body)


def terminates(body: cst.BaseSuite) -> bool:
    """True when the block always leaves (ends in continue/break/return/raise)."""
    statements = block_statements(body)
    if not statements:
        return False
    last = statements[-1]
    if isinstance(last, cst.SimpleStatementLine):
        if not last.body:
            return False
        last = last.body[-1]
    return isinstance(last, (cst.Continue, cst.Break, cst.Return, cst.Raise))


def call_argument(call: cst.Call, position: Optional[int], keyword: Optional[str]) -> Optional[cst.BaseExpression]:
    """The argument passed by ``keyword`` or at ``position`` (positional, before any keyword)."""
    index = 0
    for arg in call.args:
        if arg.keyword is not None:
            if keyword is not None and arg.keyword.value == keyword:
                return arg.value
            continue
        if arg.star:
            return None
        if position is not None and index == position:
            return arg.value
        index += 1
    return None


def guard_keys(test: cst.BaseExpression, when_true: bool) -> frozenset[str]:
    """Expressions known to be not ``None`` when ``test`` is true (``when_true``) or false.

    Keys are the normalized source text of the guarded expression (``g``, ``gv[0]``, ``grads[i]``).
    """
    if isinstance(test, cst.Comparison) and len(test.comparisons) == 1:
        comparison = test.comparisons[0]
        operator = comparison.operator
        left, right = test.left, comparison.comparator
        subject = left if is_none(right) else right if is_none(left) else None
        if subject is not None:
            key = expression_key(subject)
            if key is not None:
                if isinstance(operator, (cst.IsNot, cst.NotEqual)) and when_true:
                    return frozenset({key})
                if isinstance(operator, (cst.Is, cst.Equal)) and not when_true:
                    return frozenset({key})
        return frozenset()
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        return guard_keys(test.expression, not when_true)
    if isinstance(test, cst.BooleanOperation):
        if isinstance(test.operator, cst.And) and when_true:
            return guard_keys(test.left, True) | guard_keys(test.right, True)
        if isinstance(test.operator, cst.Or) and not when_true:
            return guard_keys(test.left, False) | guard_keys(test.right, False)
        return frozenset()
    if when_true and isinstance(test, cst.Call) and dotted_name(test.func) == "isinstance" and test.args:
        key = expression_key(test.args[0].value)
        return frozenset({key}) if key else frozenset()
    return frozenset()


def expression_key(expr: cst.CSTNode) -> Optional[str]:
    """Normalized text of a name, attribute chain or simple subscript, used to match guards to uses."""
    dotted = dotted_name(expr)
    if dotted is not None:
        return dotted
    if isinstance(expr, cst.Subscript) and len(expr.slice) == 1:
        base = expression_key(expr.value)
        element = expr.slice[0].slice
        if base is None or not isinstance(element, cst.Index):
            return None
        value = element.value
        if isinstance(value, cst.Integer):
            return f"{base}[{value.value}]"
        inner = expression_key(value)
        if inner is not None:
            return f"{base}[{inner}]"
        if isinstance(value, cst.UnaryOperation) and isinstance(value.expression, cst.Integer):
            return f"{base}[-{value.expression.value}]"
    return None


def single_item_list(expr: Optional[cst.BaseExpression]) -> bool:
    """``[x]`` or ``(x,)``."""
    return isinstance(expr, (cst.List, cst.Tuple)) and len(expr.elements) == 1 \
        and not isinstance(expr.elements[0], cst.StarredElement)


def negative_integer(expr) -> Optional[int]:
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Minus) \
            and isinstance(expr.expression, cst.Integer):
        return -int(expr.expression.value, 0)
    return None


def looks_like(expr: cst.BaseExpression, word: str) -> bool:
    """Does the last identifier of ``expr`` contain ``word`` (``self.d_optimizer`` looks like ``opt``)?"""
    name = terminal_name(expr)
    return name is not None and word in name.lower()


def all_params(params: cst.Parameters) -> Iterator[cst.Param]:
    yield from params.posonly_params
    yield from params.params
    if isinstance(params.star_arg, cst.Param):
        yield params.star_arg
    yield from params.kwonly_params
    if params.star_kwarg is not None:
        yield params.star_kwarg


def parameter_names(params: cst.Parameters) -> list[str]:
    """Names that positional and keyword arguments bind, in order."""
    return [p.name.value for p in (*params.posonly_params, *params.params)] + \
        [p.name.value for p in params.kwonly_params]


def is_staticmethod(node: cst.FunctionDef) -> bool:
    return any(dotted_name(d.decorator) == "staticmethod" for d in node.decorators)


def string_literals(expr: cst.CSTNode) -> list[str]:
    """Values of a string literal, or of the string literals in a list/tuple/set display."""
    if isinstance(expr, cst.SimpleString):
        value = expr.evaluated_value
        return [value] if isinstance(value, str) else []
    if isinstance(expr, (cst.List, cst.Tuple, cst.Set)):
        return [v for e in expr.elements for v in string_literals(e.value)]
    return []
