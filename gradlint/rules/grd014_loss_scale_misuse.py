"""GRD014: mixed-precision loss scaling applied on one side only, or with APIs Keras 3 removed."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel, tfapi
from gradlint.semantic.records import LossScaleCall

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
        "Unsafe (tf_keras only): inserting `grads = optimizer.get_unscaled_gradients(grads)` before "
        "`apply_gradients` changes every update by the loss scale — which is the bug being fixed."
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
