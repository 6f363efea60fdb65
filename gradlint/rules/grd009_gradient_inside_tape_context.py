"""GRD009: ``tape.gradient`` called inside that tape's own ``with`` block."""
from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from gradlint.fixes.edits import Fix, replace, replace_within
from gradlint.fixes.tree import enclosing_statement, identifiers, parent
from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel
from gradlint.semantic.records import GradientSource
from gradlint.semantic.syntax import assigned_names
from gradlint.triggers import TAPE_GRADIENTS


class GradientInsideTapeContext(Rule):
    CODE = "GRD009"
    NAME = "gradient-inside-tape-context"
    SUMMARY = "tape.gradient called inside the tape's own with block"
    RUNTIME_TWINS = ()
    TRIGGERS = TAPE_GRADIENTS
    FIX = "safe"
    WHAT = (
        "Flags `tape.gradient(...)` / `tape.jacobian(...)` on a persistent tape inside that tape's own "
        "`with` block. An inner tape's gradient inside an outer tape's block (gradient penalties, "
        "higher-order derivatives) and calls under `tape.stop_recording()` are not flagged, and neither are "
        "non-persistent tapes: TensorFlow stops a non-persistent tape at its first `gradient` call "
        "(`GradientTape.gradient` pops it), so nothing extra is recorded, and the tape cannot be used again."
    )
    WHY = (
        "A persistent tape keeps recording while its block is open, so it records the backward pass too: "
        "extra CPU and memory for every op of the gradient computation, which TensorFlow warns is "
        "'significantly less efficient'. Unless you want higher-order derivatives from that same tape, the "
        "call belongs after the block."
    )
    EXAMPLE = (
        "with tf.GradientTape(persistent=True) as tape:\n"
        "    loss = loss_fn(y, model(x))\n"
        "    grads = tape.gradient(loss, model.trainable_variables)\n"
        "optimizer.apply_gradients(zip(grads, model.trainable_variables))"
    )
    USE_INSTEAD = (
        "with tf.GradientTape(persistent=True) as tape:\n"
        "    loss = loss_fn(y, model(x))\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "optimizer.apply_gradients(zip(grads, model.trainable_variables))"
    )
    FIX_SAFETY = (
        "Safe when it holds: a statement `result = tape.gradient(...)` directly in the tape's block moves "
        "right after the block, which computes the same gradients without recording them, when nothing later "
        "in the block uses or rebinds the result, no other `gradient` call of the tape takes the result (a "
        "second derivative needs the first one recorded), nothing later in the block rebinds, assigns into, "
        "deletes or calls a method of what the call reads (the tape included: `tape.reset()`), or can leave "
        "the block early (return, raise, break, continue, yield). Otherwise there is no fix: a call nested in"
        " another statement or block, a `with` with several items, a call whose arguments call something, or "
        "a call that is the block's only statement."
    )
    INVALID = (
        "import tensorflow as tf\n"
        "with tf.GradientTape(persistent=True) as tape:\n"
        "    loss = f(x)\n"
        "    grads = tape.gradient(loss, model.trainable_variables)\n",
        "import tensorflow as tf\n"
        "with tf.GradientTape(persistent=True) as tape:\n"
        "    y = f(x)\n"
        "    dy = tape.gradient(y, x)\n"
        "    d2y = tape.gradient(dy, x)\n",
    )
    VALID = (
        "import tensorflow as tf\n"
        "with tf.GradientTape() as outer:\n"
        "    with tf.GradientTape() as inner:\n"
        "        inner.watch(x)\n"
        "        y = f(x)\n"
        "    dy = inner.gradient(y, x)\n"
        "d2y = outer.gradient(dy, x)\n",
        "import tensorflow as tf\n"
        "with tf.GradientTape(persistent=True) as tape:\n"
        "    loss = f(x)\n"
        "    with tape.stop_recording():\n"
        "        grads = tape.gradient(loss, model.trainable_variables)\n",
        "import tensorflow as tf\n"
        "def step(x):\n"
        "    with tf.GradientTape() as tape:\n"
        "        loss = f(x)\n"
        "        return tape.gradient(loss, model.trainable_variables)\n",
        "import tensorflow as tf\n"
        "with tf.GradientTape() as tape:\n"
        "    loss = f(x)\n"
        "    grads = tape.gradient(loss, model.trainable_variables)\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        for source in model.gradient_sources:
            if not source.inside_own_tape or source.tape is None:
                continue
            if source.tape.persistent:
                yield self.report(
                    source.node,
                    f"`{source.api}` inside its persistent tape's `with` block records the backward pass too "
                    "(more CPU and memory; TensorFlow warns it is much slower): move the call after the block",
                    fix=lambda source=source: self.move_out_fix(model, source),
                )

    # ------------------------------------------------------------------ fix
    def move_out_fix(self, model: SemanticModel, source: GradientSource) -> Optional[Fix]:
        """Move ``result = tape.gradient(...)`` right after the tape's ``with`` block when it is a statement of
        the block itself and nothing later in the block depends on it or changes what it reads."""
        module = model.module
        with_node = source.tape.with_node if source.tape is not None else None
        if with_node is None or len(with_node.items) != 1 or not isinstance(with_node.body, cst.IndentedBlock) \
                or not isinstance(parent(module, with_node), (cst.IndentedBlock, cst.Module)):
            return None
        statement = enclosing_statement(module, source.node)
        if not isinstance(statement, cst.SimpleStatementLine) or parent(module, statement) is not with_node.body \
                or len(statement.body) != 1:
            return None
        small = statement.body[0]
        if not isinstance(small, (cst.Assign, cst.AnnAssign)) or small.value is not source.node:
            return None  # only `result = tape.gradient(...)`: nothing else to reorder
        call = source.node
        if any(isinstance(node, cst.Call) for arg in call.args for node in _walk(arg.value)):
            return None  # an argument calls something: it would run later than it did
        body = list(with_node.body.body)
        if len(body) == 1:
            return None  # the block would be empty
        later = body[next(i for i, s in enumerate(body) if s is statement) + 1:]
        results = assigned_names(statement)
        if any(other.tape is source.tape and other is not source
               and any(identifiers(arg.value) & results for arg in other.node.args)
               for other in model.gradient_sources):
            return None  # differentiated again by this tape (second order): it must be recorded
        inputs = identifiers(call.func).union(*(
            identifiers(arg.value) for arg in call.args
            if arg.keyword is None or arg.keyword.value != "unconnected_gradients"))
        for other in later:
            if _leaves(other) or identifiers(other) & results:
                return None  # the rest of the block uses the result, or may not run to its end
            if (assigned_names(other) | _changed_roots(other)) & inputs:
                return None  # the rest of the block changes what the call reads (or the tape)
        rest = replace_within(with_node, {statement: cst.RemovalSentinel.REMOVE})
        return self.fix([replace(with_node, cst.FlattenSentinel([rest, statement]))],
                        f"move `{source.api}` after the tape's `with` block")


def _walk(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(current.children)


def _leaves(statement: cst.CSTNode) -> bool:
    """Can ``statement`` leave the block early (return, raise, break, continue) or suspend (yield, await)?"""
    return any(isinstance(node, (cst.Return, cst.Raise, cst.Break, cst.Continue, cst.Yield, cst.Await))
               for node in _walk(statement))


def _root(expr: cst.CSTNode) -> Optional[str]:
    while isinstance(expr, (cst.Attribute, cst.Subscript, cst.Call)):
        expr = expr.func if isinstance(expr, cst.Call) else expr.value
    return expr.value if isinstance(expr, cst.Name) else None


def _changed_roots(statement: cst.CSTNode) -> set[str]:
    """Names ``statement`` may change in place: whose attributes or items it assigns (``x.a = ...``,
    ``x[0] += ...``), deletes (``del x``), or whose methods it calls (``x.append(v)``, ``tape.reset()``)."""
    targets: list[cst.CSTNode] = []
    found: set[str] = set()
    for node in _walk(statement):
        if isinstance(node, cst.AssignTarget):
            targets.append(node.target)
        elif isinstance(node, (cst.AugAssign, cst.AnnAssign)):
            targets.append(node.target)
        elif isinstance(node, cst.Del):
            targets.append(node.target)
        elif isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
            root = _root(node.func)
            if root is not None:
                found.add(root)
    while targets:
        target = targets.pop()
        if isinstance(target, (cst.Tuple, cst.List)):
            targets.extend(e.value for e in target.elements)
        elif isinstance(target, cst.StarredElement):
            targets.append(target.value)
        else:
            root = _root(target)
            if root is not None:
                found.add(root)
    return found
