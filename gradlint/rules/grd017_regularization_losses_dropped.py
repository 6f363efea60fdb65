"""GRD017 (opt-in): a custom training loop that never adds ``model.losses`` to its loss."""
from __future__ import annotations

from typing import Iterator

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel
from gradlint.triggers import TAPE_GRADIENTS


class RegularizationLossesDropped(Rule):
    CODE = "GRD017"
    NAME = "regularization-losses-dropped"
    SUMMARY = "Custom loop ignores model.losses while the file uses regularizers or add_loss"
    OPT_IN = True
    RUNTIME_TWINS = ()
    TRIGGERS = TAPE_GRADIENTS
    WHAT = (
        "Opt-in. In a file whose layers use `*_regularizer=` arguments or `add_loss`, flags "
        "`tape.gradient(loss, model.trainable_variables)` whose loss never reads `model.losses` (or calls "
        "`model.compute_loss`). `model.fit` adds them by itself and is not affected. Opt-in because the "
        "regularized model and the trained one are matched by file, not proven identical."
    )
    WHY = (
        "Regularization penalties and `add_loss` terms are collected in `model.losses`; only `fit` / "
        "`compute_loss` add them. A custom loop that omits them trains without weight decay or auxiliary "
        "losses — silently, since the code runs fine."
    )
    EXAMPLE = (
        "model = keras.Sequential([keras.layers.Dense(64, kernel_regularizer='l2')])\n"
        "with tf.GradientTape() as tape:\n"
        "    loss = loss_fn(y, model(x))\n"
        "grads = tape.gradient(loss, model.trainable_variables)"
    )
    USE_INSTEAD = (
        "model = keras.Sequential([keras.layers.Dense(64, kernel_regularizer='l2')])\n"
        "with tf.GradientTape() as tape:\n"
        "    loss = loss_fn(y, model(x)) + tf.add_n(model.losses)\n"
        "grads = tape.gradient(loss, model.trainable_variables)"
    )
    FIX_SAFETY = "No autofix: the loss changes on purpose."
    INVALID = (
        "import keras\n"
        "import tensorflow as tf\n"
        "model = keras.Sequential([keras.layers.Dense(4, kernel_regularizer='l2')])\n"
        "with tf.GradientTape() as tape:\n"
        "    loss = loss_fn(y, model(x))\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n",
    )
    VALID = (
        "import keras\n"
        "import tensorflow as tf\n"
        "model = keras.Sequential([keras.layers.Dense(4, kernel_regularizer='l2')])\n"
        "with tf.GradientTape() as tape:\n"
        "    loss = loss_fn(y, model(x)) + sum(model.losses)\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n",
        "import keras\n"
        "import tensorflow as tf\n"
        "model = keras.Sequential([keras.layers.Dense(4)])\n"
        "with tf.GradientTape() as tape:\n"
        "    loss = loss_fn(y, model(x))\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        if not model.regularizers:
            return
        for source in model.gradient_sources:
            if source.api != "tape.gradient" or not source.sources_owner:
                continue
            entries = source.target_provenance
            if not entries:
                continue
            reads_losses = any(e[0] == "attr" and e[1] == "losses" for e in entries) or any(
                e[0] == "call" and e[1].endswith(".compute_loss") for e in entries)
            if not reads_losses:
                yield self.report(
                    source.node,
                    f"this loss never adds `{source.sources_owner}.losses`, so the regularization penalties and "
                    "`add_loss` terms in this file do not train: add `tf.add_n(model.losses)` to the loss",
                )
