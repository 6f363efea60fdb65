"""GRD004: the ``(clipped, norm)`` pair of ``tf.clip_by_global_norm`` used as the gradient list."""
from __future__ import annotations

from typing import Iterator

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel


class ClipGlobalNormNotUnpacked(Rule):
    CODE = "GRD004"
    NAME = "clip-global-norm-not-unpacked"
    SUMMARY = "Result of tf.clip_by_global_norm used without unpacking"
    RUNTIME_TWINS = ()
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
        "Safe: `grads = tf.clip_by_global_norm(...)` becomes `grads, _ = tf.clip_by_global_norm(...)`; code "
        "that used the pair as gradients could not have worked."
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
        for misuse in model.global_clip_misuses:
            yield self.report(
                misuse.node,
                "`tf.clip_by_global_norm` returns `(clipped_gradients, global_norm)`; this name holds the pair "
                f"and is used as the gradient list on line {model.line_of(misuse.use)} (Keras fails with a "
                "shape error in Pack): unpack it, `grads, _ = tf.clip_by_global_norm(...)`",
            )
