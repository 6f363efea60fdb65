"""GRD001: per-gradient processing that fails on the ``None`` gradients of unconnected variables."""
from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from gradlint.fixes.edits import Fix, replace
from gradlint.fixes.tree import ancestors, child_toward, needs_parentheses_in_conditional, parent, parenthesize
from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel
from gradlint.semantic.records import ElementUse
from gradlint.semantic.syntax import assigned_names, expression_key, names_in, target_names, terminal_name
from gradlint.triggers import GRADIENT_SOURCES

_COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp)
_SCOPES = (cst.FunctionDef, cst.ClassDef, cst.Lambda)
# calls a guarded list may be passed to directly: they keep the None entries aligned or accept them
_NONE_TOLERANT_CONSUMERS = frozenset({
    "zip", "list", "tuple", "enumerate", "len", "apply_gradients", "clip_by_global_norm", "global_norm",
})


class UncheckedNoneGradient(Rule):
    CODE = "GRD001"
    NAME = "unchecked-none-gradient"
    SUMMARY = "Per-gradient operation on a gradient that may be None"
    RUNTIME_TWINS = ("GRD101",)
    TRIGGERS = GRADIENT_SOURCES
    FIX = "safe"
    WHAT = (
        "Flags operations that fail on `None` (`tf.clip_by_norm`, `tf.norm`, any other TensorFlow op taking "
        "the gradient as a tensor, `.numpy()`, `var.assign(g)` / `assign_add` / `assign_sub`, arithmetic such "
        "as `g * scale`) applied to a gradient from `tape.gradient`, `tf.gradients` or "
        "`optimizer.compute_gradients` that may be `None`, without a `None` check. A gradient may be None when "
        "the differentiated variables are a collection (`model.trainable_variables`, several models' "
        "variables, TF1 `tf.trainable_variables()`, collections, the default `var_list`) or a list of "
        "variables one of which the target is not seen to read. An explicit list (`[w, b]`, `[model.W, "
        "model.b]`) whose every variable is read while computing the target, directly, through intermediate "
        "values or through functions and methods of the same file (`model(x)` reading `self.W`), is silent. "
        "When a variable is certainly never read (an explicit list, or a layer a `keras.Model` subclass of "
        "the same file creates in `__init__` and never uses), the message says so. Gradients are followed "
        "through names, unpacking, indexing, comprehensions, `zip` (and helpers of the file that return "
        "`zip(...)`, or imported ones named like `zipsame`), lists filled with `append` / `extend` / `+=` / "
        "item writes, and parameters of functions of the file. One report per gradient value: after a use "
        "that would already have failed, later uses of the same value are not reported again. Unit tests "
        "inspecting a gradient (`.shape`, `.get_shape()`, `self.assert*(...)` in `test*` functions or test "
        "case classes) are not reported: a failure there is the test doing its job. The analysis reads one "
        "file at a time: gradients handed to a function of another module are not followed (an imported "
        "helper whose name contains `zip`, such as `zipsame`, is read as `zip`)."
    )
    WHY = (
        "These APIs return `None` for every variable the target does not depend on: a frozen branch, "
        "an unused layer, an embedding row not looked up. `tf.clip_by_norm(None, 1.0)` raises "
        "`ValueError: None values not supported`, and `None * 0.5` a `TypeError` — often only after a "
        "model change, in the middle of a training run. Calls that accept `None` "
        "(`tf.clip_by_global_norm`, `tf.linalg.global_norm`, `apply_gradients`) are not flagged."
    )
    EXAMPLE = (
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "grads = [tf.clip_by_norm(g, 1.0) for g in grads]\n"
        "optimizer.apply_gradients(zip(grads, model.trainable_variables))"
    )
    USE_INSTEAD = (
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "grads = [tf.clip_by_norm(g, 1.0) if g is not None else None for g in grads]\n"
        "optimizer.apply_gradients(zip(grads, model.trainable_variables))\n"
        "\n"
        "# or, when a zero update is what you want for unconnected variables:\n"
        "grads = tape.gradient(loss, model.trainable_variables,\n"
        "                      unconnected_gradients=tf.UnconnectedGradients.ZERO)"
    )
    FIX_SAFETY = (
        "Safe: in a list or dict comprehension the fix wraps the per-gradient expression as "
        "`op(g) if g is not None else None` (for TF1 pairs only the gradient's item: "
        "`(op(gv[0]) if gv[0] is not None else None, gv[1])`), which keeps gradients aligned with their "
        "variables; in a `for` loop it puts the statement with the operation, and the rest of the loop "
        "body, under `if g is not None:`. Nothing changes for connected variables. Uses in generator "
        "expressions, set comprehensions, lambdas, `while` loops, one-line loop bodies, comprehension "
        "filters, comprehensions passed straight to a call that would fail on the `None` (`tf.add_n([...])`), "
        "or outside any loop over the gradients get no fix: guard them by hand. Nor does a statement that has no "
        "effect (`tf.clip_by_norm(g, c)` whose result is thrown away): guarding it would keep a no-op."
    )
    INVALID = (
        "import tensorflow as tf\n"
        "with tf.GradientTape() as tape:\n"
        "    loss = model(x)\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "grads = [tf.clip_by_norm(g, 1.0) for g in grads]\n",
        "import tensorflow.compat.v1 as tf\n"
        "opt = tf.train.AdamOptimizer(0.01)\n"
        "gvs = opt.compute_gradients(loss)\n"
        "capped = [(tf.clip_by_value(gv[0], -1., 1.), gv[1]) for gv in gvs]\n",
        "import tensorflow as tf\n"
        "grads = tf.gradients(loss, params)\n"
        "for i in range(len(grads)):\n"
        "    grads[i] = grads[i] * 0.5\n",
    )
    VALID = (
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "grads = [tf.clip_by_norm(g, 1.0) for g in grads if g is not None]\n",
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)\n"
        "grads = [g * 0.5 for g in grads]\n",
        "import tensorflow as tf\n"
        "grads = tf.gradients(loss, params)\n"
        "clipped, norm = tf.clip_by_global_norm(grads, 5.0)\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        for use in model.element_uses:
            if use.expects_error or (use.inspection and use.context is not None and use.context.in_test):
                continue
            source = use.source
            line = model.line_of(source.node)
            remedy = "guard it with `if g is not None`"
            if source.api != "compute_gradients":
                remedy += " or pass `unconnected_gradients=tf.UnconnectedGradients.ZERO`"
            certain = use.certain_none
            if certain:
                listed = ", ".join(f"`{name}`" for name in certain[:3])
                plural = "s" if len(certain) > 1 else ""
                if not source.unused_layers:
                    cause = (f"the target of `{source.api}` (line {line}) never reads {listed}, so the "
                             f"gradient{plural} for {'them' if plural else 'it'} is None")
                else:
                    cause = (f"{listed} {'are layers' if plural else 'is a layer'} the model creates in "
                             f"`__init__` but never uses, so {'their' if plural else 'its'} gradients from "
                             f"`{source.api}` (line {line}) are None")
                message = f"{cause}; `{use.operation}` fails on None: {remedy}"
            else:
                message = (f"gradient from `{source.api}` (line {line}) may be None for an unconnected variable; "
                           f"`{use.operation}` fails on None: {remedy}")
            fix = None if not use.statement_has_effect else (lambda use=use: self.none_guard_fix(model, use))
            yield self.report(use.node, message, fix=fix)

    # ------------------------------------------------------------------ fix
    def none_guard_fix(self, model: SemanticModel, use: ElementUse) -> Optional[Fix]:
        """Guard the use with ``key is not None`` inside the comprehension or ``for`` loop that binds the
        gradient; None when no such place is clearly right."""
        module = model.module
        child: cst.CSTNode = use.node
        for scope in ancestors(module, use.node):
            if isinstance(scope, _SCOPES):
                return None
            if isinstance(scope, _COMPREHENSIONS):
                key = _guard_key(use.node, _comprehension_names(scope))
                if key is not None:
                    return self._comprehension_fix(module, scope, child, use, key)
            elif isinstance(scope, cst.For) and child is scope.body:
                key = _guard_key(use.node, frozenset(target_names(scope.target)))
                if key is not None:
                    return self._loop_fix(module, scope, use, key)
            child = scope
        return None

    def _comprehension_fix(self, module, comprehension, child, use, key: str) -> Optional[Fix]:
        if isinstance(comprehension, cst.DictComp):
            element = comprehension.value
        elif isinstance(comprehension, cst.ListComp):
            element = comprehension.elt
        else:  # a generator's consumer (sum, max, ...) may fail on None; a set loses alignment anyway
            return None
        if child is not element:
            return None  # the use is in a filter, an iterable or a dict key
        consumer = parent(module, comprehension)
        if isinstance(consumer, cst.Arg):
            call = parent(module, consumer)
            if not (isinstance(call, cst.Call) and terminal_name(call.func) in _NONE_TOLERANT_CONSUMERS):
                return None  # `tf.add_n([...])`: the None would fail there instead
        if isinstance(element, cst.Tuple):  # a (gradient, variable) pair: guard the item with the use
            item = child_toward(module, element, use.node)
            if not isinstance(item, cst.Element):
                return None
            element = item.value
        body = parenthesize(element) if needs_parentheses_in_conditional(element) else element
        guarded = cst.IfExp(test=_not_none(key), body=body, orelse=cst.Name("None"))
        return self.fix([replace(element, guarded)], f"keep None gradients as None: `... if {key} is not None else None`")

    def _loop_fix(self, module, loop: cst.For, use, key: str) -> Optional[Fix]:
        block = loop.body
        if not isinstance(block, cst.IndentedBlock):
            return None  # `for g in grads: f(g)` on one line
        statement = child_toward(module, block, use.node)
        statements = list(block.body)
        index = next((i for i, s in enumerate(statements) if s is statement), None)
        if index is None:
            return None
        if not isinstance(statement, cst.SimpleStatementLine) and \
                names_in(cst.parse_expression(key)) & assigned_names(statement):
            return None  # the gradient is rebound inside the statement, before the use
        moved = [statement.with_changes(leading_lines=()), *statements[index + 1:]]
        guard = cst.If(test=_not_none(key), body=cst.IndentedBlock(body=moved),
                       leading_lines=statement.leading_lines)
        new_block = block.with_changes(body=[*statements[:index], guard])
        return self.fix([replace(block, new_block)], f"skip None gradients: `if {key} is not None:`")


def _comprehension_names(node) -> frozenset[str]:
    names: set[str] = set()
    for_in = node.for_in
    while for_in is not None:
        names.update(target_names(for_in.target))
        for_in = for_in.inner_for_in
    return frozenset(names)


def _guard_key(node: cst.CSTNode, bound: frozenset[str]) -> Optional[str]:
    """The one gradient expression (``g``, ``gv[0]``, ``grads[i]``) in ``node`` built from ``bound`` names;
    None when there is none, or several, or one inside a nested scope."""
    keys: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, (*_SCOPES, *_COMPREHENSIONS)) and current is not node:
            if names_in(current) & bound:
                return None
            continue
        if isinstance(current, cst.Subscript):
            key = expression_key(current)
            if key is not None and names_in(current) & bound:
                keys.add(key)
                continue
        if isinstance(current, cst.Name):
            if current.value in bound:
                keys.add(current.value)
            continue
        if isinstance(current, cst.Attribute):
            stack.append(current.value)
        elif isinstance(current, cst.Arg):
            stack.append(current.value)
        else:
            stack.extend(current.children)
    return keys.pop() if len(keys) == 1 else None


def _not_none(key: str) -> cst.BaseExpression:
    return cst.parse_expression(f"{key} is not None")
