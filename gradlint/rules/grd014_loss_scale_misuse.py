"""GRD014: mixed-precision loss scaling applied on one side only, or with APIs Keras 3 removed."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Optional

import libcst as cst

from gradlint.fixes.edits import Fix, insert_before
from gradlint.fixes.tree import child_toward, parent
from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel, tfapi
from gradlint.semantic.records import LossScaleCall
from gradlint.semantic.syntax import assigned_names, call_argument
from gradlint.triggers import any_of

_REMOVED_IN_KERAS_3 = frozenset({"get_scaled_loss", "get_unscaled_gradients"})


def _keras3(call: LossScaleCall, model: SemanticModel) -> bool:
    info = call.optimizer
    if info is not None and info.kind is not None:
        return info.kind == tfapi.KIND_KERAS and not info.legacy and model.target_keras == 3
    return model.target_keras == 3 and not model.imports.uses_tf1_or_legacy_keras


class LossScaleMisuse(Rule):
    CODE = "GRD014"
    NAME = "loss-scale-misuse"
    SUMMARY = "Mixed-precision loss scaling used on one side only, or with removed APIs"
    RUNTIME_TWINS = ("GRD104", "GRD105")
    TRIGGERS = any_of("call", "scale_loss", "get_scaled_loss", "get_unscaled_gradients")
    FIX = "unsafe"
    WHAT = (
        "Flags, for a `LossScaleOptimizer`: `get_scaled_loss` without `get_unscaled_gradients` in the same "
        "function, or the reverse (tf_keras / Keras 2); `get_scaled_loss` / `get_unscaled_gradients` on "
        "Keras 3, where they no longer exist; and clipping of gradients that are still scaled."
    )
    WHY = (
        "With a scaled loss and no unscaling, every step is 2**15 times too large and the model diverges; "
        "unscaling unscaled gradients makes steps vanish. Keras 3 replaced both calls with `scale_loss`, and "
        "its `apply` unscales by itself, so a manual unscale divides twice. A clip bound applied to scaled "
        "gradients is 2**15 times too small a bound: clipping is always active."
    )
    EXAMPLE = (
        "with tf.GradientTape() as tape:\n"
        "    loss = loss_fn(y, model(x))\n"
        "    scaled_loss = optimizer.get_scaled_loss(loss)\n"
        "grads = tape.gradient(scaled_loss, model.trainable_variables)\n"
        "optimizer.apply_gradients(zip(grads, model.trainable_variables))"
    )
    USE_INSTEAD = (
        "with tf.GradientTape() as tape:\n"
        "    loss = loss_fn(y, model(x))\n"
        "    scaled_loss = optimizer.scale_loss(loss)   # Keras 3\n"
        "grads = tape.gradient(scaled_loss, model.trainable_variables)\n"
        "optimizer.apply_gradients(zip(grads, model.trainable_variables))  # unscales itself"
    )
    FIX_SAFETY = (
        "Unsafe (tf_keras / Keras 2 only): for `get_scaled_loss` without `get_unscaled_gradients`, "
        "`grads = opt.get_unscaled_gradients(grads)` (with the code's own names) is inserted right before "
        "the `opt.apply_gradients(zip(grads, ...))` that applies the gradients of the scaled loss, which "
        "changes every update by the loss scale — the bug being fixed. Only when the optimizer and the "
        "gradient list are plain names, that call is the function's only one applying scaled gradients, and "
        "it is a statement of the block that computed the gradients (not in a loop or branch of its own). "
        "The other findings (the reverse case, Keras 3's removed methods, clipping scaled gradients) have "
        "no fix."
    )
    INVALID = (
        "import tf_keras\n"
        "opt = tf_keras.mixed_precision.LossScaleOptimizer(tf_keras.optimizers.Adam())\n"
        "def step(x, y):\n"
        "    with tf.GradientTape() as tape:\n"
        "        scaled = opt.get_scaled_loss(loss_fn(y, model(x)))\n"
        "    grads = tape.gradient(scaled, model.trainable_variables)\n"
        "    opt.apply_gradients(zip(grads, model.trainable_variables))\n",
        "import keras\n"
        "opt = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.Adam())\n"
        "def step(x, y):\n"
        "    with tf.GradientTape() as tape:\n"
        "        scaled = opt.get_scaled_loss(loss_fn(y, model(x)))\n"
        "    grads = opt.get_unscaled_gradients(tape.gradient(scaled, model.trainable_variables))\n",
        "import keras\n"
        "import tensorflow as tf\n"
        "opt = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.Adam())\n"
        "def step(x, y):\n"
        "    with tf.GradientTape() as tape:\n"
        "        scaled = opt.scale_loss(loss_fn(y, model(x)))\n"
        "    grads = tape.gradient(scaled, model.trainable_variables)\n"
        "    grads, _ = tf.clip_by_global_norm(grads, 1.0)\n"
        "    opt.apply_gradients(zip(grads, model.trainable_variables))\n",
    )
    VALID = (
        "import tf_keras\n"
        "opt = tf_keras.mixed_precision.LossScaleOptimizer(tf_keras.optimizers.Adam())\n"
        "def step(x, y):\n"
        "    with tf.GradientTape() as tape:\n"
        "        scaled = opt.get_scaled_loss(loss_fn(y, model(x)))\n"
        "    grads = opt.get_unscaled_gradients(tape.gradient(scaled, model.trainable_variables))\n"
        "    grads, _ = tf.clip_by_global_norm(grads, 1.0)\n"
        "    opt.apply_gradients(zip(grads, model.trainable_variables))\n",
        "import keras\n"
        "opt = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.Adam())\n"
        "def step(x, y):\n"
        "    with tf.GradientTape() as tape:\n"
        "        scaled = opt.scale_loss(loss_fn(y, model(x)))\n"
        "    grads = tape.gradient(scaled, model.trainable_variables)\n"
        "    opt.apply_gradients(zip(grads, model.trainable_variables))\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        by_scope: dict[object, set[str]] = defaultdict(set)
        calls = list(model.loss_scale_calls)
        for call in calls:
            by_scope[call.scope].add(call.method)
        for call in calls:
            if call.method == "scale_loss":
                continue
            if _keras3(call, model):
                if call.method in _REMOVED_IN_KERAS_3:
                    yield self.report(
                        call.node,
                        f"Keras 3's LossScaleOptimizer has no `{call.method}` (AttributeError): scale with "
                        "`optimizer.scale_loss(loss)`; `apply_gradients` unscales by itself",
                    )
                continue
            methods = by_scope[call.scope]
            if call.method == "get_scaled_loss" and "get_unscaled_gradients" not in methods:
                yield self.report(
                    call.node,
                    "the loss is scaled but the gradients are never unscaled with `get_unscaled_gradients`: "
                    "every update is the loss scale (2**15) times too large",
                    fix=lambda call=call: self.unscale_fix(model, call),
                )
            elif call.method == "get_unscaled_gradients" and "get_scaled_loss" not in methods:
                yield self.report(
                    call.node,
                    "gradients are unscaled but the loss was never scaled with `get_scaled_loss`: every "
                    "update is the loss scale (2**15) times too small",
                )
        for clip in model.clip_calls:
            if clip.input_scaled:
                yield self.report(
                    clip.node,
                    "these gradients are still loss-scaled: the clip bound applies to values 2**15 times too "
                    "large, so clipping is always active; clip after unscaling (or let the optimizer clip "
                    "with `global_clipnorm=`)",
                )

    # ------------------------------------------------------------------ fix
    def unscale_fix(self, model: SemanticModel, scaled: LossScaleCall) -> Optional[Fix]:
        """``grads = opt.get_unscaled_gradients(grads)`` before the one ``opt.apply_gradients(zip(grads, ...))``
        of this function that applies gradients of the scaled loss; None unless the optimizer and the gradient
        list are plain names and the apply call is a statement of the block that computed the gradients."""
        module = model.module
        receiver = scaled.node.func.value if isinstance(scaled.node.func, cst.Attribute) else None
        if not isinstance(receiver, cst.Name):
            return None
        applies = [c for c in model.optimizer_calls
                   if c.method == "apply_gradients" and c.scope == scaled.scope and not c.expects_error
                   and getattr(c.gradient, "scaled", False)]
        if len(applies) != 1:
            return None  # none, or several: which one to unscale for is not clear
        call = applies[0]
        func = call.node.func
        if not (isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name)
                and func.value.value == receiver.value):
            return None  # another optimizer object
        pairs = call_argument(call.node, 0, "grads_and_vars")
        if not (isinstance(pairs, cst.Call) and isinstance(pairs.func, cst.Name) and pairs.func.value == "zip"
                and len(pairs.args) == 2 and all(a.keyword is None and not a.star for a in pairs.args)
                and isinstance(pairs.args[0].value, cst.Name)):
            return None
        grads = pairs.args[0].value.value
        expr = parent(module, call.node)
        line = parent(module, expr) if isinstance(expr, cst.Expr) else None
        block = parent(module, line) if isinstance(line, cst.SimpleStatementLine) and len(line.body) == 1 else None
        if not isinstance(block, (cst.IndentedBlock, cst.Module)):
            return None  # not a statement of its own
        body = list(block.body)
        computed = child_toward(module, block, call.gradient.source.node)
        start = next((i for i, s in enumerate(body) if s is computed), None)
        end = next(i for i, s in enumerate(body) if s is line)
        if start is None or start >= end or grads not in assigned_names(computed):
            return None  # computed in another block (a loop would unscale them again), or not bound to `grads`
        unscale = cst.parse_statement(f"{grads} = {receiver.value}.get_unscaled_gradients({grads})\n")
        return self.fix([insert_before(line, unscale)],
                        f"unscale before applying: `{grads} = {receiver.value}.get_unscaled_gradients({grads})`")
