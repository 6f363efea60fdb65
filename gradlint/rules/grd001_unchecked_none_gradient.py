"""GRD001: per-gradient processing that fails on the ``None`` gradients of unconnected variables."""
from __future__ import annotations

from typing import Iterator

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel


class UncheckedNoneGradient(Rule):
    CODE = "GRD001"
    NAME = "unchecked-none-gradient"
    SUMMARY = "Per-gradient operation on a gradient that may be None"
    RUNTIME_TWINS = ("GRD101",)
    FIX = "safe"
    WHAT = (
        "Flags element-wise processing of gradients (`tf.clip_by_norm`, `tf.norm`, `tf.math.*`, "
        "`.numpy()`, arithmetic such as `g * scale`) applied to the elements of a gradient list from "
        "`tape.gradient`, `tf.gradients` or `optimizer.compute_gradients` without a `None` check."
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
        "Safe: the fix wraps the per-gradient expression as `op(g) if g is not None else None`, which "
        "keeps gradients aligned with their variables and changes nothing for connected variables."
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
            if use.expects_error:
                continue
            source = use.source
            line = model.line_of(source.node)
            remedy = "guard it with `if g is not None`"
            if source.api != "compute_gradients":
                remedy += " or pass `unconnected_gradients=tf.UnconnectedGradients.ZERO`"
            yield self.report(
                use.node,
                f"gradient from `{source.api}` (line {line}) may be None for an unconnected variable; "
                f"`{use.operation}` fails on None: {remedy}",
            )
