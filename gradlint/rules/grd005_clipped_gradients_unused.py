"""GRD005: gradients are clipped, but the unclipped list is what reaches the optimizer."""
from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from gradlint.fixes.edits import Fix, replace
from gradlint.fixes.tree import child_toward, parent
from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel
from gradlint.semantic.records import ClipCall, OptimizerCall
from gradlint.semantic.syntax import assigned_names, call_argument, is_none, names_in, terminal_name
from gradlint.triggers import Word, any_of

_APPLY = frozenset({"apply_gradients", "apply"})
_BLOCKS = (cst.IndentedBlock, cst.Module)


class ClippedGradientsUnused(Rule):
    CODE = "GRD005"
    NAME = "clipped-gradients-unused"
    SUMMARY = "Gradients are clipped but the unclipped ones are applied"
    RUNTIME_TWINS = ("GRD105", "GRD110")
    TRIGGERS = any_of("call", "clip_by_global_norm") + any_of("discarded_call", "clip_by_norm", "clip_by_value") \
        + tuple((Word("call", clip), apply) for clip in ("clip_by_norm", "clip_by_value")
        for apply in (Word("call", "apply_gradients"), Word("optimizer_call", "apply")))
    FIX = "unsafe"
    WHAT = (
        "Flags `apply_gradients` / `apply` given a gradient list whose clipped version "
        "(`tf.clip_by_global_norm`, or per-gradient `tf.clip_by_norm` / `tf.clip_by_value`) was computed and "
        "bound to a name earlier in the same function, but is not the list applied; and a clip whose result "
        "is thrown away, a bare expression statement such as `for g in grads: tf.clip_by_norm(g, 5.0)`. "
        "Clipped values written back into the list (`grads[i] = tf.clip_by_norm(g, c)`, "
        "`pairs[i] = (tf.clip_by_norm(g, c), v)`, `clipped.append(...)`) count as applied."
    )
    WHY = (
        "The clipping silently does nothing: the optimizer receives the raw gradients, so the exploding "
        "gradients the clip was written for still reach the weights, while the code reads as protected. "
        "TensorFlow ops return new tensors and never change their inputs, so a clip that is not assigned "
        "does nothing at all. Computing only the norm for logging (`_, norm = tf.clip_by_global_norm(...)` or "
        "`tf.linalg.global_norm(grads)`) is not flagged."
    )
    EXAMPLE = (
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "clipped, norm = tf.clip_by_global_norm(grads, 1.0)\n"
        "optimizer.apply_gradients(zip(grads, model.trainable_variables))"
    )
    USE_INSTEAD = (
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "clipped, norm = tf.clip_by_global_norm(grads, 1.0)\n"
        "optimizer.apply_gradients(zip(clipped, model.trainable_variables))"
    )
    FIX_SAFETY = (
        "Unsafe: the unclipped list's name in the `apply_gradients(zip(grads, ...))` / `apply(grads, ...)` call "
        "is replaced with the name the clipped list was bound to (`clipped` in `clipped, norm = "
        "tf.clip_by_global_norm(grads, c)`, `capped` in `capped = [tf.clip_by_norm(g, c) for g in grads]`), "
        "which changes the update whenever the clip is active — what the code meant, but the numbers the "
        "program computes change. No fix when that is not clear: a comprehension with a filter (`if g is not "
        "None`: fewer items than variables), a clip in another branch or loop than the call, the clipped name "
        "rebound in between, or gradients passed other than as a plain name in `zip(...)` / `apply(...)`. "
        "A clip whose result is thrown away gets no fix: where the clipped values should go is for the author "
        "to write."
    )
    INVALID = (
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "clipped, norm = tf.clip_by_global_norm(grads, 1.0)\n"
        "opt.apply_gradients(zip(grads, model.trainable_variables))\n",
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "capped = [tf.clip_by_norm(g, 1.0) for g in grads if g is not None]\n"
        "opt.apply(grads, model.trainable_variables)\n",
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "for g in grads:\n"
        "    tf.clip_by_norm(g, 15.0)\n"
        "opt.apply_gradients(zip(grads, model.trainable_variables))\n",
    )
    VALID = (
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "_, norm = tf.clip_by_global_norm(grads, 1.0)\n"
        "tf.summary.scalar('grad_norm', norm)\n"
        "opt.apply_gradients(zip(grads, model.trainable_variables))\n",
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "grads, norm = tf.clip_by_global_norm(grads, 1.0)\n"
        "opt.apply_gradients(zip(grads, model.trainable_variables))\n",
        "import tensorflow as tf\n"
        "pairs = opt.compute_gradients(loss)\n"
        "for i, (g, v) in enumerate(pairs):\n"
        "    if g is not None:\n"
        "        pairs[i] = (tf.clip_by_norm(g, 10.0), v)\n"
        "opt.apply_gradients(pairs)\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        for clip in model.clip_calls:
            if clip.discarded:
                yield self.report(
                    clip.node,
                    f"the result of `{clip.api}` is thrown away: TensorFlow ops return new tensors and never "
                    "change their inputs, so this clipping does nothing: assign the clipped values and apply them",
                )
        clips = [c for c in model.clip_calls if c.result_named and c.input_lineage is not None]
        if not clips:
            return
        for call in model.optimizer_calls:
            gradient = call.gradient
            if call.method not in _APPLY or gradient is None or gradient.clipped or call.expects_error:
                continue
            for clip in clips:
                # positions cost a pass over the file: compare lines only for a real candidate
                if clip.scope == call.scope and clip.input_lineage == gradient.lineage \
                        and model.line_of(clip.node) <= model.line_of(call.node):
                    yield self.report(
                        call.node,
                        f"these gradients were clipped on line {model.line_of(clip.node)}, but the unclipped "
                        "list is applied, so the clipping does nothing: apply the clipped gradients",
                        fix=lambda call=call, clip=clip: self.apply_clipped_fix(model, call, clip),
                    )
                    break

    # ------------------------------------------------------------------ fix
    def apply_clipped_fix(self, model: SemanticModel, call: OptimizerCall, clip: ClipCall) -> Optional[Fix]:
        """Replace the unclipped list's name in the apply call with the name the clipped list was bound to;
        None unless the clip's assignment clearly binds the whole, aligned clipped list to that name and the
        name still holds it at the call."""
        module = model.module
        name = clip.result_name
        if name is None:
            return None
        bound = _clip_assignment(module, clip.node, name)
        if bound is None:
            return None
        assign, unclipped = bound
        if unclipped == name:
            return None
        applied = _applied_name(call.node, call.method, unclipped)
        if applied is None:
            return None
        statement = parent(module, assign)
        block = parent(module, statement) if isinstance(statement, cst.SimpleStatementLine) else None
        if not isinstance(block, _BLOCKS) or len(statement.body) != 1:
            return None
        top = child_toward(module, block, call.node)  # the statement of the same block that holds the call
        if top is None:
            return None
        body = list(block.body)
        first = next(i for i, s in enumerate(body) if s is statement)
        last = next((i for i, s in enumerate(body) if s is top), -1)
        if last <= first:
            return None  # the call is not after the clip in the clip's block (another branch, a loop, ...)
        if any(name in assigned_names(s) or _deletes(s, name) for s in body[first + 1:last + 1]):
            return None  # the clipped name is rebound before the call
        return self.fix([replace(applied, cst.Name(name, lpar=applied.lpar, rpar=applied.rpar))],
                        f"apply the clipped gradients: `{unclipped}` -> `{name}`")


def _clip_assignment(module: cst.Module, clip: cst.Call, name: str) -> Optional[tuple[cst.Assign, str]]:
    """(the assignment, the unclipped list's name) when the assignment binds ``name`` to the whole clipped
    list: ``name, norm = tf.clip_by_global_norm(grads, c)``, or ``name = [clip(g, c) for g in grads]``
    (optionally ``clip(g, c) if g is not None else None``) without a filter."""
    above = parent(module, clip)
    if isinstance(above, cst.Assign) and above.value is clip:
        if terminal_name(clip.func) != "clip_by_global_norm" or len(above.targets) != 1:
            return None
        target = above.targets[0].target
        if not isinstance(target, (cst.Tuple, cst.List)) or len(target.elements) != 2 \
                or any(isinstance(e, cst.StarredElement) for e in target.elements):
            return None
        head = target.elements[0].value
        unclipped = call_argument(clip, 0, "t_list")
        if isinstance(head, cst.Name) and head.value == name and isinstance(unclipped, cst.Name):
            return above, unclipped.value
        return None
    element: cst.CSTNode = clip
    if isinstance(above, cst.IfExp) and above.body is clip and is_none(above.orelse):
        element, above = above, parent(module, above)
    if not isinstance(above, cst.ListComp) or above.elt is not element:
        return None
    comprehension = above.for_in
    if comprehension.ifs or comprehension.inner_for_in is not None or comprehension.asynchronous is not None:
        return None  # filtered or nested: not one clipped gradient per gradient
    loop_name = comprehension.target
    clipped = call_argument(clip, 0, "t")
    if not (isinstance(loop_name, cst.Name) and isinstance(clipped, cst.Name) and clipped.value == loop_name.value
            and isinstance(comprehension.iter, cst.Name)):
        return None
    assign = parent(module, above)
    if not isinstance(assign, cst.Assign) or assign.value is not above or len(assign.targets) != 1:
        return None
    target = assign.targets[0].target
    if not (isinstance(target, cst.Name) and target.value == name):
        return None
    return assign, comprehension.iter.value


def _applied_name(call: cst.Call, method: str, unclipped: str) -> Optional[cst.Name]:
    """The ``unclipped`` name passed as the gradients: ``apply_gradients(zip(grads, vs))`` or
    ``apply(grads, vs)``."""
    if method == "apply":
        grads = call_argument(call, 0, "grads")
        return grads if isinstance(grads, cst.Name) and grads.value == unclipped else None
    pairs = call_argument(call, 0, "grads_and_vars")
    if not (isinstance(pairs, cst.Call) and isinstance(pairs.func, cst.Name) and pairs.func.value == "zip"
            and len(pairs.args) == 2 and all(a.keyword is None and not a.star for a in pairs.args)):
        return None
    matches = [a.value for a in pairs.args if isinstance(a.value, cst.Name) and a.value.value == unclipped]
    return matches[0] if len(matches) == 1 else None


def _deletes(statement: cst.CSTNode, name: str) -> bool:
    stack = [statement]
    while stack:
        current = stack.pop()
        if isinstance(current, cst.Del) and name in names_in(current.target):
            return True
        stack.extend(current.children)
    return False
