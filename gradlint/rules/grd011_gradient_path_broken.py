"""GRD011: inside the tape, the only path from the variables to the target has no gradient."""
from __future__ import annotations

from typing import Iterator

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel
from gradlint.semantic.records import GradientSource
from gradlint.triggers import TAPE_GRADIENTS


def _live(source: GradientSource, tape_id: int) -> bool:
    """Does some recorded, differentiable path lead from the sources to the target?"""
    entries = source.target_provenance
    owner = source.sources_owner
    if owner:
        return any(
            (e[0] == "call" and tape_id in e[2] and (e[1] == owner or e[1].startswith(owner + ".")))
            or (e[0] == "name" and (e[1] == owner or e[1].startswith(owner + ".")))
            for e in entries
        )
    if source.sources_names and source.sources_text is not None:
        names = source.sources_names
        return any(e[0] == "name" and (e[1] in names or any(e[1].startswith(n + ".") for n in names))
                   for e in entries)
    return any(e[0] == "name" or (e[0] == "call" and tape_id in e[2]) for e in entries)


class GradientPathBroken(Rule):
    CODE = "GRD011"
    NAME = "gradient-path-broken"
    SUMMARY = "Non-differentiable op on the only path to the gradient target"
    RUNTIME_TWINS = ("GRD101",)
    TRIGGERS = TAPE_GRADIENTS
    WHAT = (
        "Flags, inside a tape, an operation with no gradient on the way from the model to the target: "
        "`.numpy()`, `np.*`, `float()` / `int()` / `round()`, `model.predict(...)`, `tf.py_function` / "
        "`tf.numpy_function`, `tf.argmax` / `tf.argmin` / `tf.round`, comparisons, and `tf.cast` to an integer "
        "or bool dtype — when no other differentiable path from the variables reaches the target. Values "
        "collected in a list inside the tape (`losses.append(float(...))`, then `tf.reduce_mean(losses)`) "
        "keep what they were computed from; a mask cast to the logits' dtype (`tf.cast(mask, logits.dtype)`) "
        "is differentiable."
    )
    WHY = (
        "These operations leave TensorFlow's graph or have no gradient, so the tape sees no path from the "
        "variables to the loss: `tape.gradient` returns `None` for every variable, and training silently does "
        "nothing. `tf.stop_gradient` on part of the target (target networks), conditions of `tf.where`, masks "
        "and indices, and the same ops on values that never reach the target (metrics, logging) are fine."
    )
    EXAMPLE = (
        "with tf.GradientTape() as tape:\n"
        "    probabilities = model(x)\n"
        "    predicted = tf.argmax(probabilities, axis=-1)\n"
        "    loss = tf.reduce_mean(tf.cast(predicted != y, tf.float32))\n"
        "grads = tape.gradient(loss, model.trainable_variables)"
    )
    USE_INSTEAD = (
        "with tf.GradientTape() as tape:\n"
        "    logits = model(x)\n"
        "    loss = tf.reduce_mean(\n"
        "        tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))\n"
        "grads = tape.gradient(loss, model.trainable_variables)"
    )
    FIX_SAFETY = "No autofix: a differentiable replacement (a surrogate loss) is a modelling decision."
    INVALID = (
        "import tensorflow as tf\n"
        "with tf.GradientTape() as tape:\n"
        "    loss = float(tf.reduce_mean(model(x)))\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n",
        "import numpy as np\n"
        "import tensorflow as tf\n"
        "with tf.GradientTape() as tape:\n"
        "    out = model(x).numpy()\n"
        "    loss = np.mean((out - y) ** 2)\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n",
        "import tensorflow as tf\n"
        "with tf.GradientTape() as tape:\n"
        "    pred = model.predict(x)\n"
        "    loss = tf.reduce_mean(tf.square(pred - y))\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n",
        "import tensorflow as tf\n"
        "with tf.GradientTape() as tape:\n"
        "    losses = []\n"
        "    for x, y in batch:\n"
        "        losses.append(float(tf.reduce_mean(tf.square(model(x) - y))))\n"
        "    loss = tf.reduce_mean(losses)\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n",
    )
    VALID = (
        "import tensorflow as tf\n"
        "with tf.GradientTape() as tape:\n"
        "    q = model(s)\n"
        "    target = r + 0.99 * tf.stop_gradient(tf.reduce_max(target_model(s2), axis=1))\n"
        "    loss = tf.reduce_mean(tf.square(target - q))\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n",
        "import tensorflow as tf\n"
        "with tf.GradientTape() as tape:\n"
        "    logits = model(x)\n"
        "    loss = loss_fn(y, logits)\n"
        "    accuracy = float(tf.reduce_mean(tf.cast(tf.argmax(logits, -1) == y, tf.float32)))\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n",
        "import tensorflow as tf\n"
        "with tf.GradientTape() as tape:\n"
        "    per_example = loss_fn(y, model(x))\n"
        "    mask = tf.cast(weights > 0, tf.float32)\n"
        "    loss = tf.reduce_sum(tf.where(per_example > 10.0, 10.0, per_example) * mask)\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        reported: set[int] = set()
        for source in model.gradient_sources:
            tape = source.tape
            if tape is None or tape.implicit or not source.api.startswith("tape."):
                continue
            breaks = [e for e in source.target_provenance if e[0] == "break" and id(tape) in e[3]]
            if not breaks or _live(source, id(tape)):
                continue
            line = model.line_of(source.node)
            for _, node_id, description, _ in breaks:
                if node_id in reported:
                    continue
                reported.add(node_id)
                yield self.report(
                    model.nodes[node_id],
                    f"{description} has no gradient, and the target of `{source.api}` (line {line}) reaches the "
                    "variables only through it, so every gradient is None: keep the loss in differentiable "
                    "TensorFlow ops (use `tf.stop_gradient` where no gradient is wanted)",
                )
