"""GRD010: the target of ``tape.gradient`` is computed where the tape is not recording."""
from __future__ import annotations

from typing import Iterator, Optional

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel
from gradlint.semantic.records import GradientSource
from gradlint.triggers import TAPE_GRADIENTS


def _owned_by(callee: str, owner: str) -> bool:
    return callee == owner or callee.startswith(owner + ".")


def diagnose(source: GradientSource) -> Optional[str]:
    """Why the target is not recorded by the source's tape, or None when it is (or cannot be told)."""
    tape = source.tape
    if tape is None or tape.implicit or tape.with_node is None or not source.api.startswith("tape."):
        return None
    recorded = [e for e in source.target_provenance if e[0] == "call" and id(tape) in e[2]]
    if recorded:
        target_outside = (
            source.target_bound_tapes is not None and id(tape) not in source.target_bound_tapes
        ) or (source.target_is_computation and id(tape) not in source.tapes_active)
        if target_outside:
            return "after-block"
    owner = source.sources_owner
    if owner:
        forward = [e for e in source.target_provenance if e[0] == "call" and _owned_by(e[1], owner)]
        if forward and not any(id(tape) in e[2] for e in forward):
            return "forward-before-block"
    return None


class TargetOutsideTape(Rule):
    CODE = "GRD010"
    NAME = "target-outside-tape"
    SUMMARY = "Gradient target computed outside the tape"
    RUNTIME_TWINS = ("GRD101",)
    TRIGGERS = TAPE_GRADIENTS
    WHAT = (
        "Flags `tape.gradient(target, ...)` when the target is computed where the tape is not recording: "
        "assigned after the `with` block from values recorded inside it (`with tape: logits = model(x)` then "
        "`loss = loss_fn(y, logits)`), computed inline in the `gradient` call after the block, or computed "
        "inside the block from a forward pass of the same model that ran before the block "
        "(`pred = model(x)` then `with tape: loss = loss_fn(y, pred)`), also when that result is carried "
        "into the block through a list filled before it. A slice taken in the `gradient` call itself "
        "(`tape.gradient(preds[:, k], ...)`) is computed after the block too. Calls on the model before the "
        "block whose results only reach the target as shapes or dtypes (`state.shape` to build specs) are "
        "not a forward pass."
    )
    WHY = (
        "A tape only differentiates operations it recorded. When the last step to the target, or the forward "
        "pass through the model, happened outside the block, there is no recorded path from the variables to "
        "the target and every gradient is `None`: the optimizer skips them and the model never trains. "
        "Inputs watched with `tape.watch(x)` and values computed before the block that do not come from the "
        "differentiated model are fine."
    )
    EXAMPLE = (
        "with tf.GradientTape() as tape:\n"
        "    logits = model(x)\n"
        "loss = loss_fn(y, logits)\n"
        "grads = tape.gradient(loss, model.trainable_variables)"
    )
    USE_INSTEAD = (
        "with tf.GradientTape() as tape:\n"
        "    logits = model(x)\n"
        "    loss = loss_fn(y, logits)\n"
        "grads = tape.gradient(loss, model.trainable_variables)"
    )
    FIX_SAFETY = "No autofix: moving code into the block changes what the tape records and keeps alive."
    INVALID = (
        "import tensorflow as tf\n"
        "with tf.GradientTape() as tape:\n"
        "    logits = model(x)\n"
        "loss = loss_fn(y, logits)\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n",
        "import tensorflow as tf\n"
        "pred = model(x)\n"
        "with tf.GradientTape() as tape:\n"
        "    loss = tf.reduce_mean(tf.square(pred - y))\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n",
        "import tensorflow as tf\n"
        "with tf.GradientTape() as tape:\n"
        "    a = model(x)\n"
        "grads = tape.gradient(tf.reduce_sum(a), model.trainable_variables)\n",
        "import tensorflow as tf\n"
        "with tf.GradientTape() as tape:\n"
        "    tape.watch(images)\n"
        "    preds = model(images)\n"
        "saliency = tape.gradient(preds[:, 3], images)\n",
    )
    VALID = (
        "import tensorflow as tf\n"
        "with tf.GradientTape() as tape:\n"
        "    logits = model(x)\n"
        "    loss = loss_fn(y, logits)\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n",
        "import tensorflow as tf\n"
        "features = encoder(x)\n"
        "with tf.GradientTape() as tape:\n"
        "    loss = loss_fn(y, head(features))\n"
        "grads = tape.gradient(loss, head.trainable_variables)\n",
        "import tensorflow as tf\n"
        "x = preprocess(images)\n"
        "with tf.GradientTape() as tape:\n"
        "    tape.watch(x)\n"
        "    y = model(x)\n"
        "saliency = tape.gradient(y, x)\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        for source in model.gradient_sources:
            reason = diagnose(source)
            if reason == "after-block":
                yield self.report(
                    source.node,
                    "the target is computed after the tape's `with` block, where nothing is recorded, so every "
                    "gradient is None: compute the loss inside the block",
                )
            elif reason == "forward-before-block":
                yield self.report(
                    source.node,
                    f"the forward pass of `{source.sources_owner}` ran before the tape started recording, so "
                    "the target has no recorded path to its variables and every gradient is None: call the "
                    "model inside the `with` block",
                )
