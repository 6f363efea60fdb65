"""GRD007: a zip/map iterator of (gradient, variable) pairs consumed before it reaches the optimizer."""
from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from gradlint.fixes.edits import Fix, replace
from gradlint.fixes.tree import ancestors, enclosing_scope
from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel
from gradlint.semantic.records import Iteration
from gradlint.semantic.syntax import all_params, target_names
from gradlint.semantic.values import Seq
from gradlint.triggers import any_of

_ITERATOR_BUILTINS = frozenset({"zip", "map", "filter", "enumerate"})


class ZipConsumedBeforeApply(Rule):
    CODE = "GRD007"
    NAME = "zip-consumed-before-apply"
    SUMMARY = "zip/map iterator consumed before apply_gradients"
    RUNTIME_TWINS = ("GRD102",)
    TRIGGERS = any_of("call", "apply_gradients")
    FIX = "safe"
    WHAT = (
        "Flags `apply_gradients(pairs)` where `pairs` is a one-shot iterator (`zip(...)`, `map(...)`, a "
        "generator expression, `filter`, `enumerate`) that was already iterated — by a logging loop, a "
        "comprehension, `list(pairs)`, or an earlier `apply_gradients`."
    )
    WHY = (
        "In Python 3 `zip` returns an iterator that is empty after one pass. Keras 3 then raises 'not enough "
        "values to unpack'; legacy Keras optimizers silently apply nothing, and the model stops training "
        "without an error."
    )
    EXAMPLE = (
        "pairs = zip(grads, model.trainable_variables)\n"
        "for g, v in pairs:\n"
        "    tf.summary.histogram(v.path, g)\n"
        "optimizer.apply_gradients(pairs)"
    )
    USE_INSTEAD = (
        "pairs = list(zip(grads, model.trainable_variables))\n"
        "for g, v in pairs:\n"
        "    tf.summary.histogram(v.path, g)\n"
        "optimizer.apply_gradients(pairs)"
    )
    FIX_SAFETY = (
        "Safe: `pairs = zip(...)` becomes `pairs = list(zip(...))` (likewise for `map`, `filter` and "
        "`enumerate`), which iterates the same pairs as often as the code asks. Only when the assignment binds "
        "the call itself to one name: iterators built elsewhere (generator expressions, `iter(...)`, a call "
        "in another statement), names passed to `next(...)`, and code where `zip` / `list` is not the builtin "
        "(bound in the function, an enclosing function or the module) get no fix."
    )
    INVALID = (
        "import tensorflow as tf\n"
        "pairs = zip(grads, model.trainable_variables)\n"
        "names = [v.path for g, v in pairs]\n"
        "opt.apply_gradients(pairs)\n",
        "import tensorflow as tf\n"
        "pairs = zip(grads, model.trainable_variables)\n"
        "opt.apply_gradients(pairs)\n"
        "ema_opt.apply_gradients(pairs)\n",
    )
    VALID = (
        "import tensorflow as tf\n"
        "pairs = list(zip(grads, model.trainable_variables))\n"
        "names = [v.path for g, v in pairs]\n"
        "opt.apply_gradients(pairs)\n",
        "import tensorflow as tf\n"
        "for g, v in zip(grads, model.trainable_variables):\n"
        "    tf.summary.histogram(v.path, g)\n"
        "opt.apply_gradients(zip(grads, model.trainable_variables))\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        first_use: dict[int, Iteration] = {}
        for iteration in model.iterations:
            value = iteration.value
            if iteration.lazy or not isinstance(value, Seq) or not value.is_iterator:
                continue
            first = first_use.setdefault(id(value), iteration)
            if first is iteration or not iteration.apply or value.created_by is None:
                continue
            yield self.report(
                iteration.node,
                f"this iterator of (gradient, variable) pairs was already consumed on line "
                f"{model.line_of(first.node)}, so nothing is left to apply (Keras 3 raises 'not enough "
                "values to unpack', legacy Keras applies nothing): build it with `list(zip(...))`",
                fix=lambda value=value: self.list_fix(model, value),
            )

    # ------------------------------------------------------------------ fix
    def list_fix(self, model: SemanticModel, iterator: Seq) -> Optional[Fix]:
        """``pairs = zip(...)`` -> ``pairs = list(zip(...))`` when the assignment binds the call itself."""
        assign, call = iterator.assigned_in, iterator.created_by
        if assign is None or call is None or assign.value is not call:
            return None
        if not isinstance(call.func, cst.Name) or call.func.value not in _ITERATOR_BUILTINS:
            return None
        if len(assign.targets) != 1 or not isinstance(assign.targets[0].target, cst.Name):
            return None
        name = assign.targets[0].target.value
        scope = enclosing_scope(model.module, assign)
        if _shadowed(model.module, assign, call.func.value) or _advanced_by_next(scope, name):
            return None  # not the builtin, or the code relies on it being an iterator
        wrapped = cst.Call(func=cst.Name("list"), args=[cst.Arg(call.with_changes(lpar=[], rpar=[]))],
                           lpar=call.lpar, rpar=call.rpar)
        return self.fix([replace(call, wrapped)], f"make `{name}` a list: `{name} = list({call.func.value}(...))`")


def _walk(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(current.children)


def _shadowed(module: cst.Module, assign: cst.Assign, builtin: str) -> bool:
    """Is ``builtin`` (or ``list``) bound where ``assign`` looks names up: in its function, an enclosing
    function, or the module's top level (def, class, import, parameter, assignment, loop target)?"""
    names = {builtin, "list"}
    scopes = [a for a in ancestors(module, assign) if isinstance(a, (cst.FunctionDef, cst.Lambda))]
    for scope in [*scopes, module]:
        if isinstance(scope, (cst.FunctionDef, cst.Lambda)):
            if {p.name.value for p in all_params(scope.params)} & names:
                return True
            start: cst.CSTNode = scope.body
        else:
            start = scope
        stack = [start]
        while stack:
            node = stack.pop()
            if _binds(node) & names:
                return True
            if not isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda, cst.ListComp, cst.SetComp,
                                     cst.DictComp, cst.GeneratorExp)):
                stack.extend(node.children)  # other scopes bind their own names
    return False


def _binds(node: cst.CSTNode) -> set[str]:
    """The names ``node`` itself binds in the scope it runs in."""
    if isinstance(node, (cst.FunctionDef, cst.ClassDef)):
        return {node.name.value}
    if isinstance(node, cst.ImportAlias):
        alias = node.asname.name if node.asname is not None else node.name
        while isinstance(alias, cst.Attribute):  # `import a.b` binds `a`
            alias = alias.value
        return {alias.value} if isinstance(alias, cst.Name) else set()
    if isinstance(node, cst.WithItem):
        return set(target_names(node.asname.name)) if node.asname is not None else set()
    if isinstance(node, (cst.AssignTarget, cst.AugAssign, cst.AnnAssign, cst.For, cst.NamedExpr)):
        return set(target_names(node.target))
    return set()


def _advanced_by_next(scope: cst.CSTNode, name: str) -> bool:
    """``next(name)`` somewhere in the scope: a list would raise TypeError there."""
    for node in _walk(scope):
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Name) and node.func.value == "next" \
                and any(isinstance(arg.value, cst.Name) and arg.value.value == name for arg in node.args):
            return True
    return False
