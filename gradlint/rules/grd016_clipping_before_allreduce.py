"""GRD016: a Keras 3 optimizer that clips, used under a multi-replica ``tf.distribute`` strategy."""
from __future__ import annotations

from typing import Iterator

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel, tfapi
from gradlint.triggers import any_of


class ClippingBeforeAllreduce(Rule):
    CODE = "GRD016"
    NAME = "clipping-before-allreduce"
    SUMMARY = "Optimizer clipping under a multi-replica strategy clips per replica"
    RUNTIME_TWINS = ("GRD109",)
    TRIGGERS = any_of("keyword", "clipnorm", "global_clipnorm", "clipvalue")
    WHAT = (
        "Flags a Keras 3 optimizer created with `clipnorm=`, `global_clipnorm=` or `clipvalue=` inside a "
        "multi-replica `strategy.scope()` (`MirroredStrategy`, `MultiWorkerMirroredStrategy`, `TPUStrategy`...), "
        "or compiled into a model there. Not flagged without a strategy or with a single-device strategy."
    )
    WHY = (
        "Keras 3 clips each replica's gradients before the cross-replica all-reduce, so the update that is "
        "applied is the sum of N clipped gradients: its norm can reach N times the configured bound "
        "(measured: `global_clipnorm=0.01` on 2 replicas applied 0.0199). Training with more replicas "
        "silently loosens the clip."
    )
    EXAMPLE = (
        "strategy = tf.distribute.MirroredStrategy()\n"
        "with strategy.scope():\n"
        "    model = build_model()\n"
        "    model.compile(optimizer=keras.optimizers.Adam(global_clipnorm=1.0), loss='mse')"
    )
    USE_INSTEAD = (
        "strategy = tf.distribute.MirroredStrategy()\n"
        "with strategy.scope():\n"
        "    model = build_model()\n"
        "    # bound the per-replica norm so that the sum stays within the intended global bound\n"
        "    optimizer = keras.optimizers.Adam(global_clipnorm=1.0 / strategy.num_replicas_in_sync)\n"
        "    model.compile(optimizer=optimizer, loss='mse')"
    )
    FIX_SAFETY = "No autofix: the right bound depends on the replica count and on what the clip is for."
    INVALID = (
        "import keras\n"
        "import tensorflow as tf\n"
        "strategy = tf.distribute.MirroredStrategy()\n"
        "with strategy.scope():\n"
        "    opt = keras.optimizers.Adam(clipnorm=1.0)\n",
        "import keras\n"
        "import tensorflow as tf\n"
        "opt = keras.optimizers.SGD(global_clipnorm=0.5)\n"
        "strategy = tf.distribute.MultiWorkerMirroredStrategy()\n"
        "with strategy.scope():\n"
        "    model = keras.Sequential([keras.layers.Dense(1)])\n"
        "    model.compile(optimizer=opt, loss='mse')\n",
    )
    VALID = (
        "import keras\n"
        "opt = keras.optimizers.Adam(clipnorm=1.0)\n",
        "import keras\n"
        "import tensorflow as tf\n"
        "strategy = tf.distribute.OneDeviceStrategy('/gpu:0')\n"
        "with strategy.scope():\n"
        "    opt = keras.optimizers.Adam(clipnorm=1.0)\n",
        "import keras\n"
        "import tensorflow as tf\n"
        "strategy = tf.distribute.MirroredStrategy()\n"
        "with strategy.scope():\n"
        "    opt = keras.optimizers.Adam(learning_rate=1e-3)\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        if model.target_keras != 3:
            return
        for info in model.optimizers:
            if self._keras3_clipping(info) and info.multi_replica_scope is not None:
                yield self.report(info.node, self._message(info.clip_arguments))
        for call in model.compile_calls:
            info = call.optimizer
            if call.multi_replica_scope is not None and info.multi_replica_scope is None \
                    and self._keras3_clipping(info):
                yield self.report(call.node, self._message(info.clip_arguments))

    @staticmethod
    def _keras3_clipping(info) -> bool:
        return info.kind == tfapi.KIND_KERAS and not info.legacy and bool(info.clip_arguments)

    @staticmethod
    def _message(arguments) -> str:
        names = "/".join(f"`{a}`" for a in arguments)
        return (f"under a multi-replica strategy Keras 3 applies {names} to each replica's gradients before "
                "the all-reduce, so the applied norm can reach N times the bound: divide the bound by "
                "`strategy.num_replicas_in_sync` or clip after aggregation")
