"""GRD004: the ``(clipped, norm)`` pair of ``tf.clip_by_global_norm`` used as the gradient list."""
from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from gradlint.fixes.edits import Fix, replace
from gradlint.fixes.tree import fresh_name
from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel
from gradlint.semantic.values import TupleValue
from gradlint.triggers import any_of


class ClipGlobalNormNotUnpacked(Rule):
    CODE = "GRD004"
    NAME = "clip-global-norm-not-unpacked"
    SUMMARY = "Result of tf.clip_by_global_norm used without unpacking"
    RUNTIME_TWINS = ()
    TRIGGERS = any_of("call", "clip_by_global_norm")
    FIX = "safe"
    WHAT = (
        "Flags `grads = tf.clip_by_global_norm(grads, clip_norm)` when `grads` is then used as a list of "
        "gradients: zipped with variables, iterated, or passed to `apply_gradients` / `apply`."
    )
    WHY = (
        "`tf.clip_by_global_norm` returns a pair `(list_clipped, global_norm)`. Bound to one name, that pair "
        "is zipped with the variables as if it were the gradients: the first variable receives the whole "
        "clipped list and the second the norm. Keras then fails with a shape error inside `Pack`, far from "
        "the line that caused it."
    )
    EXAMPLE = (
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "grads = tf.clip_by_global_norm(grads, 5.0)\n"
        "optimizer.apply_gradients(zip(grads, model.trainable_variables))"
    )
    USE_INSTEAD = (
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "grads, _ = tf.clip_by_global_norm(grads, 5.0)\n"
        "optimizer.apply_gradients(zip(grads, model.trainable_variables))"
    )
    FIX_SAFETY = (
        "Safe: `grads = tf.clip_by_global_norm(...)` becomes `grads, _ = tf.clip_by_global_norm(...)` "
        "(`grads, global_norm = ...` when the module calls a function named `_`, such as gettext's); code "
        "that used the pair as gradients could not have worked. Only a single plain name target is fixed: "
        "chained (`a = b = ...`) or parenthesized targets get no fix."
    )
    INVALID = (
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "grads = tf.clip_by_global_norm(grads, 1.0)\n"
        "opt.apply_gradients(zip(grads, model.trainable_variables))\n",
        "import tensorflow as tf\n"
        "clipped = tf.clip_by_global_norm(tf.gradients(loss, params), 1.0)\n"
        "norms = [tf.norm(g) for g in clipped]\n",
    )
    VALID = (
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "grads, norm = tf.clip_by_global_norm(grads, 1.0)\n"
        "opt.apply_gradients(zip(grads, model.trainable_variables))\n",
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "grads = tf.clip_by_global_norm(grads, 1.0)[0]\n"
        "opt.apply_gradients(zip(grads, model.trainable_variables))\n",
        "import tensorflow as tf\n"
        "result = tf.clip_by_global_norm(grads, 1.0)\n"
        "tf.summary.scalar('global_norm', result[1])\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        reported: set[int] = set()
        for iteration in model.iterations:
            pair = iteration.value
            if not isinstance(pair, TupleValue) or pair.assigned_in is None or id(pair.assigned_in) in reported:
                continue
            reported.add(id(pair.assigned_in))
            yield self.report(
                pair.assigned_in,
                "`tf.clip_by_global_norm` returns `(clipped_gradients, global_norm)`; this name holds the pair "
                f"and is used as the gradient list on line {model.line_of(iteration.node)} (Keras fails with a "
                "shape error in Pack): unpack it, `grads, _ = tf.clip_by_global_norm(...)`",
                fix=lambda assign=pair.assigned_in: self.unpack_fix(model, assign),
            )

    # ------------------------------------------------------------------ fix
    def unpack_fix(self, model: SemanticModel, assign: cst.Assign) -> Optional[Fix]:
        """``grads = tf.clip_by_global_norm(...)`` -> ``grads, _ = ...``; only for one plain name target."""
        if len(assign.targets) != 1 or not isinstance(assign.targets[0].target, cst.Name):
            return None
        target = assign.targets[0].target
        if target.lpar or target.rpar:
            return None
        # `_` is the usual throw-away name, unless the module calls a function named `_` (gettext)
        other = fresh_name(model.module, assign, "global_norm") if _calls_underscore(model.module) else "_"
        pair = cst.Tuple([cst.Element(target, comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))),
                          cst.Element(cst.Name(other))], lpar=[], rpar=[])
        return self.fix([replace(target, pair)], f"unpack the pair: `{target.value}, {other} = ...`")


def _calls_underscore(module: cst.Module) -> bool:
    stack: list[cst.CSTNode] = [module]
    while stack:
        current = stack.pop()
        if isinstance(current, cst.Call) and isinstance(current.func, cst.Name) and current.func.value == "_":
            return True
        stack.extend(current.children)
    return False
