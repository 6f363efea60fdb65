"""GRD018 (opt-in): ``tf.reduce_mean`` of the loss inside a ``strategy.run`` replica function."""
from __future__ import annotations

from typing import Iterator

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel
from gradlint.triggers import TAPE_GRADIENTS


class DistributedMeanLoss(Rule):
    CODE = "GRD018"
    NAME = "distributed-mean-loss"
    SUMMARY = "Per-replica tf.reduce_mean of the loss inside strategy.run"
    OPT_IN = True
    RUNTIME_TWINS = ("GRD105",)
    TRIGGERS = TAPE_GRADIENTS
    WHAT = (
        "Opt-in. Flags `tf.reduce_mean` on the way to the target of `tape.gradient` inside a function run "
        "by `strategy.run(...)`. Silent when the loss uses `tf.nn.compute_average_loss(..., "
        "global_batch_size=...)`. Opt-in because a mean over something other than the batch is fine."
    )
    WHY = (
        "Each replica sees `global_batch / N` examples. Averaging over the per-replica batch and then summing "
        "gradients across replicas makes the update N times too large (or, with a mean all-reduce, "
        "weights examples unevenly when the last batch is short)."
    )
    EXAMPLE = (
        "def replica_step(x, y):\n"
        "    with tf.GradientTape() as tape:\n"
        "        loss = tf.reduce_mean(loss_fn(y, model(x)))\n"
        "    grads = tape.gradient(loss, model.trainable_variables)\n"
        "strategy.run(replica_step, args=(x, y))"
    )
    USE_INSTEAD = (
        "def replica_step(x, y):\n"
        "    with tf.GradientTape() as tape:\n"
        "        per_example = loss_fn(y, model(x))\n"
        "        loss = tf.nn.compute_average_loss(per_example, global_batch_size=GLOBAL_BATCH)\n"
        "    grads = tape.gradient(loss, model.trainable_variables)\n"
        "strategy.run(replica_step, args=(x, y))"
    )
    FIX_SAFETY = "No autofix: the global batch size is not known statically."
    INVALID = (
        "import tensorflow as tf\n"
        "strategy = tf.distribute.MirroredStrategy()\n"
        "def replica_step(x, y):\n"
        "    with tf.GradientTape() as tape:\n"
        "        loss = tf.reduce_mean(tf.square(model(x) - y))\n"
        "    return tape.gradient(loss, model.trainable_variables)\n"
        "strategy.run(replica_step, args=(x, y))\n",
    )
    VALID = (
        "import tensorflow as tf\n"
        "strategy = tf.distribute.MirroredStrategy()\n"
        "def replica_step(x, y):\n"
        "    with tf.GradientTape() as tape:\n"
        "        per_example = tf.reduce_mean(tf.square(model(x) - y), axis=-1)\n"
        "        loss = tf.nn.compute_average_loss(per_example, global_batch_size=64)\n"
        "    return tape.gradient(loss, model.trainable_variables)\n"
        "strategy.run(replica_step, args=(x, y))\n",
        "import tensorflow as tf\n"
        "def step(x, y):\n"
        "    with tf.GradientTape() as tape:\n"
        "        loss = tf.reduce_mean(tf.square(model(x) - y))\n"
        "    return tape.gradient(loss, model.trainable_variables)\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        reported: set[int] = set()
        for source in model.gradient_sources:
            if not source.in_replica_function:
                continue
            entries = source.target_provenance
            if any(e[0] == "call" and e[1].endswith("compute_average_loss") for e in entries):
                continue
            for entry in entries:
                if entry[0] == "mean" and entry[1] not in reported:
                    reported.add(entry[1])
                    yield self.report(
                        model.nodes[entry[1]],
                        "`tf.reduce_mean` inside a `strategy.run` replica function divides by the per-replica "
                        "batch; summed across replicas the update is N times too large: use "
                        "`tf.nn.compute_average_loss(per_example_loss, global_batch_size=...)`",
                    )
