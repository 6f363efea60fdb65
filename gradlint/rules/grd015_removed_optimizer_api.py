"""GRD015: optimizer methods that Keras 3 (or Keras 2.11+) optimizers no longer have."""
from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from gradlint.fixes.edits import Fix, replace
from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel, tfapi

_GONE_IN_KERAS_3 = frozenset({"minimize", "compute_gradients", "get_gradients", "get_updates"})
_GONE_SINCE_KERAS_2_11 = frozenset({"get_gradients", "get_updates"})


class RemovedOptimizerApi(Rule):
    CODE = "GRD015"
    NAME = "removed-optimizer-api"
    SUMMARY = "Optimizer method that the targeted Keras version removed"
    RUNTIME_TWINS = ()
    FIX = "safe"
    WHAT = (
        "Flags, on Keras 3 optimizers: `minimize`, `compute_gradients`, `get_gradients`, `get_updates`, and "
        "calling `optimizer.variables()` (a list now). On Keras 2.11+ optimizers (`target-keras = 2`, "
        "`tf_keras.optimizers.*`): `get_gradients` and `get_updates`. Depends on the target Keras version. "
        "`tf.compat.v1.train` optimizers and `*.optimizers.legacy.*` are not flagged."
    )
    WHY = (
        "These raise `AttributeError` (or `TypeError: 'list' object is not callable`) the first time the "
        "training step runs — often after minutes of data loading or compilation."
    )
    EXAMPLE = (
        "optimizer = keras.optimizers.Adam()\n"
        "grads_and_vars = optimizer.compute_gradients(loss, model.trainable_variables)\n"
        "n_slots = len(optimizer.variables())"
    )
    USE_INSTEAD = (
        "optimizer = keras.optimizers.Adam()\n"
        "with tf.GradientTape() as tape:\n"
        "    loss = loss_fn(y, model(x))\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "optimizer.apply_gradients(zip(grads, model.trainable_variables))\n"
        "n_slots = len(optimizer.variables)"
    )
    FIX_SAFETY = (
        "Safe for `optimizer.variables()` -> `optimizer.variables` on Keras 3 optimizers (the call could only "
        "raise `TypeError`); a call with arguments or with a comment inside its parentheses gets no fix. "
        "`minimize`, `compute_gradients`, `get_gradients` and `get_updates` have no autofix: rewrite the step "
        "with `tf.GradientTape` and `apply_gradients`."
    )
    INVALID = (
        "import keras\n"
        "opt = keras.optimizers.SGD()\n"
        "train_op = opt.minimize(loss, var_list=model.trainable_variables)\n",
        "import tensorflow as tf\n"
        "opt = tf.keras.optimizers.Adam()\n"
        "state = opt.variables()\n",
    )
    VALID = (
        "import tensorflow.compat.v1 as tf\n"
        "opt = tf.train.AdamOptimizer()\n"
        "gvs = opt.compute_gradients(loss)\n"
        "train_op = opt.minimize(loss)\n",
        "import keras\n"
        "opt = keras.optimizers.Adam()\n"
        "state = opt.variables\n",
        "import tf_keras\n"
        "opt = tf_keras.optimizers.legacy.Adam()\n"
        "updates = opt.get_updates(loss, params)\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        for call in model.method_calls:
            info = call.optimizer
            if call.expects_error or info.legacy or info.kind not in (tfapi.KIND_KERAS, tfapi.KIND_TF_KERAS):
                continue
            keras3 = info.kind == tfapi.KIND_KERAS and model.target_keras == 3
            if keras3 and call.method == "variables":
                yield self.report(call.node, "`optimizer.variables` is a list in Keras 3, not a method "
                                             "(TypeError): drop the parentheses",
                                  fix=lambda node=call.node: self.attribute_fix(model, node))
            elif keras3 and call.method in _GONE_IN_KERAS_3:
                yield self.report(
                    call.node,
                    f"Keras 3 optimizers have no `{call.method}` (AttributeError): compute gradients with "
                    "`tf.GradientTape` and call `optimizer.apply_gradients(zip(grads, variables))`",
                )
            elif call.method in _GONE_SINCE_KERAS_2_11:
                yield self.report(
                    call.node,
                    f"Keras 2.11+ optimizers have no `{call.method}` (AttributeError): use `tf.GradientTape` "
                    "and `apply_gradients`, or `tf_keras.optimizers.legacy` for old code",
                )

    # ------------------------------------------------------------------ fix
    def attribute_fix(self, model: SemanticModel, call: cst.Call) -> Optional[Fix]:
        """``opt.variables()`` -> ``opt.variables``: only without arguments and without comments inside the
        parentheses (they would be lost)."""
        if call.args or not isinstance(call.func, cst.Attribute) or call.func.attr.value != "variables":
            return None
        if "#" in model.module.code_for_node(call.whitespace_after_func) \
                + model.module.code_for_node(call.whitespace_before_args):
            return None
        attribute = call.func.with_changes(lpar=[*call.lpar, *call.func.lpar], rpar=[*call.func.rpar, *call.rpar])
        return self.fix([replace(call, attribute)], "drop the parentheses: `optimizer.variables`")
