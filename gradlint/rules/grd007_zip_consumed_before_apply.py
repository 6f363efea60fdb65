"""GRD007: a zip/map iterator of (gradient, variable) pairs consumed before it reaches the optimizer."""
from __future__ import annotations

from typing import Iterator

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel


class ZipConsumedBeforeApply(Rule):
    CODE = "GRD007"
    NAME = "zip-consumed-before-apply"
    SUMMARY = "zip/map iterator consumed before apply_gradients"
    RUNTIME_TWINS = ("GRD102",)
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
        "Safe: `pairs = zip(...)` becomes `pairs = list(zip(...))`, which iterates the same pairs as often as "
        "the code asks."
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
        for reuse in model.iterator_reuses:
            yield self.report(
                reuse.node,
                f"this iterator of (gradient, variable) pairs was already consumed on line "
                f"{model.line_of(reuse.consumed_by)}, so nothing is left to apply (Keras 3 raises 'not enough "
                "values to unpack', legacy Keras applies nothing): build it with `list(zip(...))`",
            )
