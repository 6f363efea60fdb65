"""GRD003: ``apply_gradients`` called once per variable inside a loop."""
from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from gradlint.fixes.edits import Fix, replace, replace_within, subtree_ids
from gradlint.fixes.tree import fresh_name, parent
from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel
from gradlint.semantic.records import LoopInfo, OptimizerCall
from gradlint.semantic.syntax import dotted_name, names_in
from gradlint.triggers import OPTIMIZER_STEPS

_APPLY_METHODS = frozenset({"apply_gradients", "apply", "minimize"})


class ApplyGradientsPerVariable(Rule):
    CODE = "GRD003"
    NAME = "apply-gradients-per-variable"
    SUMMARY = "apply_gradients called once per variable inside a loop"
    RUNTIME_TWINS = ("GRD103",)
    TRIGGERS = OPTIMIZER_STEPS
    FIX = "unsafe"
    WHAT = (
        "Flags `apply_gradients` / `apply` / `minimize` called inside a `for` or `while` loop over "
        "gradients or variables with a single (gradient, variable) pair: `[(g, v)]`, "
        "`zip([grads[i]], [vars[i]])`, `apply([g], [v])`, `minimize(loss, var_list=[v])`. The optimizer may be "
        "built in the file, a function parameter (`def step(opt, grads, variables)`), `self.optimizer` of a "
        "Keras model (in `train_step`), `self.model.optimizer` of a callback, or an alias of one; a loop over "
        "`zip(grads, variables)` counts as a loop over variables even when both are unknown parameters."
    )
    WHY = (
        "Every call advances `optimizer.iterations`. With N variables one training step becomes N "
        "optimizer steps: Adam's bias correction and learning-rate schedules run N times too fast, and "
        "the result depends on variable order. Keras 3 also raises 'Unknown variable' on the second "
        "variable unless the optimizer was built with all of them first."
    )
    EXAMPLE = (
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "for grad, var in zip(grads, model.trainable_variables):\n"
        "    if var.path in wanted:\n"
        "        optimizer.apply_gradients([(grad, var)])"
    )
    USE_INSTEAD = (
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "pairs = [(grad, var) for grad, var in zip(grads, model.trainable_variables)\n"
        "         if var.path in wanted]\n"
        "optimizer.apply_gradients(pairs)"
    )
    FIX_SAFETY = (
        "Unsafe: the fix collects the pairs in a list (`grads_and_vars.append((grad, var))` where the call "
        "was, so the loop's filter conditions still apply) and calls `apply_gradients(grads_and_vars)` "
        "once after the loop -- under `if grads_and_vars:` when the loop filters, so a step that selects "
        "no variable still applies nothing. That changes how many optimizer steps a training step takes, "
        "which is the point, but it changes the numbers the program computes. Only applied with "
        "`--unsafe-fixes`, and only for an `apply_gradients(...)` statement that is the last thing a `for` "
        "loop's iteration does (possibly under `if`), on an optimizer and arguments the loop does not "
        "change; `apply` / `minimize` calls, `while` loops, loops with `else` or `return`, and calls whose "
        "result is used get no fix."
    )
    INVALID = (
        "import tensorflow as tf\n"
        "optimizer = tf.keras.optimizers.Adam()\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "for var, grad in zip(model.trainable_variables, grads):\n"
        "    optimizer.apply_gradients([(grad, var)])\n",
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "variables = model.trainable_variables\n"
        "for i in range(len(grads)):\n"
        "    opt.apply_gradients(zip([grads[i]], [variables[i]]))\n",
        "import tensorflow.compat.v1 as tf\n"
        "opt = tf.train.AdamOptimizer()\n"
        "for v in tf.trainable_variables():\n"
        "    train_ops.append(opt.minimize(loss, var_list=[v]))\n",
    )
    VALID = (
        "import tensorflow as tf\n"
        "optimizer = tf.keras.optimizers.Adam()\n"
        "for x, y in dataset:\n"
        "    with tf.GradientTape() as tape:\n"
        "        loss = loss_fn(y, model(x))\n"
        "    grads = tape.gradient(loss, [w])\n"
        "    optimizer.apply_gradients([(grads[0], w)])\n",
        "import tensorflow as tf\n"
        "for model, opt in [(gen, g_opt), (disc, d_opt)]:\n"
        "    grads = tape.gradient(loss, model.trainable_variables)\n"
        "    opt.apply_gradients(zip(grads, model.trainable_variables))\n",
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "pairs = [(g, v) for g, v in zip(grads, model.trainable_variables) if v.trainable]\n"
        "optimizer.apply_gradients(pairs)\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        for call in model.optimizer_calls:
            if call.method not in _APPLY_METHODS or call.single_pair is None or not call.loops \
                    or call.expects_error:
                continue
            gradient, variable = call.single_pair
            used = names_in(variable) if call.method == "minimize" else names_in(gradient) | names_in(variable)
            for loop in reversed(call.loops):
                if loop.over_variables and used & loop.varying_names:
                    yield self.report(
                        call.node,
                        f"`{call.method}` once per variable inside a loop: every call advances "
                        "`optimizer.iterations`, so Adam's bias correction and learning-rate schedules run "
                        "once per variable (Keras 3 raises 'Unknown variable' unless built first): collect "
                        "the pairs and call it once after the loop",
                        fix=lambda call=call, loop=loop: self.apply_once_fix(model, call, loop),
                    )
                    break

    # ------------------------------------------------------------------ fix
    def apply_once_fix(self, model: SemanticModel, call: OptimizerCall, loop: LoopInfo) -> Optional[Fix]:
        """``grads_and_vars = []`` before the loop, ``grads_and_vars.append((g, v))`` instead of the call
        (of every such call in the loop: one list), one ``opt.apply_gradients(grads_and_vars)`` after the
        loop; None unless that is clearly right."""
        module = model.module
        loop_node = loop.node
        if not isinstance(loop_node, cst.For) or loop_node.orelse is not None or _leaves_function(loop_node.body):
            return None
        if not isinstance(parent(module, loop_node), (cst.IndentedBlock, cst.Module)):
            return None
        inside_loop = subtree_ids(loop_node.body)
        group = [c for c in model.optimizer_calls if id(c.node) in inside_loop and c.method in _APPLY_METHODS]
        if call not in group:
            return None
        conditional = len(group) > 1 or _has_jump(loop_node.body)
        appends: dict[cst.CSTNode, cst.CSTNode] = {}
        shapes = set()
        name = fresh_name(module, loop_node, "grads_and_vars")
        first_call: Optional[cst.Call] = None
        first_arg: Optional[cst.Arg] = None
        for member in sorted(group, key=lambda c: _start(model, c.node)):
            planned = _plan(module, member, loop, loop_node)
            if planned is None:
                return None
            pairs_arg, under_if = planned
            conditional = conditional or under_if
            gradient, variable = member.single_pair  # type: ignore[misc]
            pair = cst.Tuple([cst.Element(gradient), cst.Element(variable)])
            appends[member.node] = cst.Call(func=cst.Attribute(cst.Name(name), cst.Name("append")),
                                            args=[cst.Arg(pair)])
            shapes.add(_call_shape(module, member.node, pairs_arg))
            if first_call is None:
                first_call, first_arg = member.node, pairs_arg
        if len(shapes) != 1 or first_call is None:
            return None  # different optimizers or arguments: one list cannot replace them
        new_loop = replace_within(loop_node, appends).with_changes(leading_lines=())
        start = cst.parse_statement(f"{name} = []\n").with_changes(leading_lines=loop_node.leading_lines)
        once = first_call.with_changes(args=[arg.with_changes(value=cst.Name(name)) if arg is first_arg else arg
                                             for arg in first_call.args])
        after: cst.BaseStatement = cst.SimpleStatementLine([cst.Expr(once)])
        if conditional:
            after = cst.If(test=cst.Name(name), body=cst.IndentedBlock([after]))
        return self.fix([replace(loop_node, cst.FlattenSentinel([start, new_loop, after]))],
                        f"collect the pairs in `{name}` and call `apply_gradients` once after the loop")


def _start(model: SemanticModel, node: cst.CSTNode) -> tuple[int, int]:
    start = model.position(node).start
    return start.line, start.column


def _plan(module: cst.Module, call: OptimizerCall, loop: LoopInfo, loop_node: cst.For):
    """(the pairs argument, whether an ``if`` is in between) for a call the fix can turn into an append."""
    node = call.node
    if call.method != "apply_gradients" or call.single_pair is None or call.expects_error \
            or not call.loops or call.loops[-1].node is not loop_node:
        return None
    under_if = _last_in_iteration(module, node, loop_node)
    if under_if is None:
        return None
    receiver = node.func.value if isinstance(node.func, cst.Attribute) else None
    if receiver is None or dotted_name(receiver) is None or names_in(receiver) & loop.varying_names:
        return None  # the optimizer must be the same object on every iteration
    pairs_arg = _pairs_argument(node)
    if pairs_arg is None:
        return None
    gradient, variable = call.single_pair
    inside = subtree_ids(pairs_arg.value)
    if id(gradient) not in inside or id(variable) not in inside:
        return None  # the pair was built elsewhere (`opt.apply_gradients(pair)`)
    if any(arg is not pairs_arg and (arg.star or names_in(arg.value) & loop.varying_names) for arg in node.args):
        return None
    return pairs_arg, under_if


def _call_shape(module: cst.Module, call: cst.Call, pairs_arg: cst.Arg) -> tuple:
    """What must agree between calls that share one list: the receiver and the other arguments."""
    others = tuple("".join(module.code_for_node(arg.value).split()) + f"={arg.keyword.value if arg.keyword else ''}"
                   for arg in call.args if arg is not pairs_arg)
    keyword = pairs_arg.keyword.value if pairs_arg.keyword else None
    return ("".join(module.code_for_node(call.func).split()), keyword, others)


def _pairs_argument(call: cst.Call) -> Optional[cst.Arg]:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == "grads_and_vars":
            return arg
    first = call.args[0] if call.args else None
    if first is not None and first.keyword is None and not first.star:
        return first
    return None


def _last_in_iteration(module: cst.Module, call: cst.Call, loop: cst.For) -> Optional[bool]:
    """Is ``call`` an expression statement that is the last thing an iteration of ``loop`` runs, with only
    ``if`` / ``elif`` / ``else`` between? None if not; otherwise whether an ``if`` is in between."""
    conditional = False
    current = parent(module, call)
    if not isinstance(current, cst.Expr):
        return None
    while current is not loop:
        above = parent(module, current)
        if above is None:
            return None
        if isinstance(above, (cst.SimpleStatementLine, cst.SimpleStatementSuite, cst.IndentedBlock)):
            if above.body[-1] is not current:
                return None  # something runs after the call in this iteration
        elif isinstance(above, cst.If):
            conditional = True
            if current is above.test:
                return None
        elif isinstance(above, cst.Else):
            pass
        elif above is loop:
            if current is not loop.body:
                return None
        elif not isinstance(above, cst.Expr):
            return None
        current = above
    return conditional


def _scoped_nodes(block: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """Nodes of ``block`` outside nested functions, lambdas and classes."""
    stack = [block]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            continue
        stack.extend(current.children)


def _leaves_function(block: cst.CSTNode) -> bool:
    return any(isinstance(n, (cst.Return, cst.Yield, cst.Raise)) for n in _scoped_nodes(block))


def _has_jump(block: cst.CSTNode) -> bool:
    return any(isinstance(n, (cst.Continue, cst.Break)) for n in _scoped_nodes(block))
