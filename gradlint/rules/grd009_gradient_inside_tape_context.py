"""GRD009: ``tape.gradient`` called inside that tape's own ``with`` block."""
from __future__ import annotations

from typing import Iterator

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel


class GradientInsideTapeContext(Rule):
    CODE = "GRD009"
    NAME = "gradient-inside-tape-context"
    SUMMARY = "tape.gradient called inside the tape's own with block"
    RUNTIME_TWINS = ()
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
        "Safe when nothing later in the block uses the result: the `gradient` statement moves right after the "
        "block, which computes the same gradients without recording them. Otherwise there is no fix."
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
                )
