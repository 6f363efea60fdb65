"""GRD005: gradients are clipped, but the unclipped list is what reaches the optimizer."""
from __future__ import annotations

from typing import Iterator

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel

_APPLY = frozenset({"apply_gradients", "apply"})


class ClippedGradientsUnused(Rule):
    CODE = "GRD005"
    NAME = "clipped-gradients-unused"
    SUMMARY = "Gradients are clipped but the unclipped ones are applied"
    RUNTIME_TWINS = ("GRD105",)
    FIX = "unsafe"
    WHAT = (
        "Flags `apply_gradients` / `apply` given a gradient list whose clipped version "
        "(`tf.clip_by_global_norm`, or per-gradient `tf.clip_by_norm` / `tf.clip_by_value`) was computed and "
        "bound to a name earlier in the same function, but is not the list applied."
    )
    WHY = (
        "The clipping silently does nothing: the optimizer receives the raw gradients, so the exploding "
        "gradients the clip was written for still reach the weights, while the code reads as protected. "
        "Computing only the norm for logging (`_, norm = tf.clip_by_global_norm(...)` or "
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
        "Unsafe: applying the clipped list changes the update whenever the clip is active — which is what "
        "the code meant, but the numbers the program computes change."
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
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        clips = [c for c in model.clip_calls if c.result_named and c.input_lineage is not None]
        if not clips:
            return
        for call in model.optimizer_calls:
            gradient = call.gradient
            if call.method not in _APPLY or gradient is None or gradient.clipped or call.expects_error:
                continue
            line = model.line_of(call.node)
            for clip in clips:
                if clip.scope == call.scope and clip.input_lineage == gradient.lineage \
                        and model.line_of(clip.node) <= line:
                    yield self.report(
                        call.node,
                        f"these gradients were clipped on line {model.line_of(clip.node)}, but the unclipped "
                        "list is applied, so the clipping does nothing: apply the clipped gradients",
                    )
                    break
