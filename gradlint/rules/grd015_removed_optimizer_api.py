"""GRD015: optimizer APIs that Keras 3 (or Keras 2.11+) optimizers no longer have."""
from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from gradlint.fixes.edits import Fix, replace
from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel, tfapi
from gradlint.semantic.records import OptimizerInfo
from gradlint.triggers import any_of

_GONE_IN_KERAS_3 = frozenset({"minimize", "compute_gradients", "get_gradients", "get_updates"})
_GONE_SINCE_KERAS_2_11 = frozenset({"get_gradients", "get_updates"})
# hooks of the old `OptimizerV2` base class that Keras 3 and Keras 2.11+ optimizers never call
_OLD_HOOKS = frozenset({"_create_slots", "_create_hypers"})
_HOOK_USE = {"_create_slots": "creates no slots", "_create_hypers": "creates no hyperparameters"}


def _modern(info: OptimizerInfo) -> bool:
    """A Keras optimizer of the current API (Keras 3, or Keras 2.11+), not a `legacy` one."""
    return info.kind in (tfapi.KIND_KERAS, tfapi.KIND_TF_KERAS) and not info.legacy


class RemovedOptimizerApi(Rule):
    CODE = "GRD015"
    NAME = "removed-optimizer-api"
    SUMMARY = "Optimizer API that the targeted Keras version removed"
    RUNTIME_TWINS = ()
    TRIGGERS = any_of("call", "get_gradients", "get_updates", "minimize", "compute_gradients", "_create_slots",
                      "_create_hypers") + any_of("bare_call", "variables") + any_of("optimizer_keyword", "lr") \
        + any_of("optimizer_attribute", "lr") + any_of("optimizer_definition", "_create_slots", "_create_hypers")
    FIX = "safe"
    WHAT = (
        "Flags, on Keras 3 optimizers: `minimize` (also `self.optimizer.minimize(...)` in a `Model.train_step`), "
        "`compute_gradients`, `get_gradients`, `get_updates`, calling `optimizer.variables()` (a list now), "
        "reading or assigning `optimizer.lr`, and the `lr=` argument of the constructor. On Keras 2.11+ optimizers "
        "(`target-keras = 2`, `tf_keras.optimizers.*`): `get_gradients`, `get_updates`, and `lr=`, which they "
        "ignore. On both: a subclass of a current Keras optimizer that defines `_create_slots` or "
        "`_create_hypers`, or calls them. Depends on the target Keras version. `tf.compat.v1.train` "
        "optimizers and `*.optimizers.legacy.*` are not flagged."
    )
    WHY = (
        "These raise `AttributeError` (or `TypeError: 'list' object is not callable`, or `ValueError: "
        "Argument(s) not recognized: {'lr': ...}`) the first time the code runs — often after minutes of "
        "data loading or compilation. Worse, Keras 2.11+ optimizers accept `lr=` with only a logged warning "
        "and train with their default learning rate, and never call the `_create_slots` / `_create_hypers` "
        "hooks of the old optimizer API, so an optimizer written for the old API silently does something else."
    )
    EXAMPLE = (
        "optimizer = keras.optimizers.Adam(lr=1e-4)\n"
        "grads_and_vars = optimizer.compute_gradients(loss, model.trainable_variables)\n"
        "print(optimizer.lr, len(optimizer.variables()))"
    )
    USE_INSTEAD = (
        "optimizer = keras.optimizers.Adam(learning_rate=1e-4)\n"
        "with tf.GradientTape() as tape:\n"
        "    loss = loss_fn(y, model(x))\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "optimizer.apply_gradients(zip(grads, model.trainable_variables))\n"
        "print(optimizer.learning_rate, len(optimizer.variables))"
    )
    FIX_SAFETY = (
        "Safe where there is a fix, each a rename with the same meaning: `optimizer.variables()` -> "
        "`optimizer.variables` on Keras 3 optimizers (the call could only raise `TypeError`; a call with "
        "arguments or with a comment inside its parentheses gets no fix), `optimizer.lr` -> "
        "`optimizer.learning_rate` on Keras 3 when read (an assignment gets no fix: it starts changing the "
        "learning rate), and the keyword `lr=` -> `learning_rate=` (not when "
        "`learning_rate` is also passed, by keyword or position). `minimize`, `compute_gradients`, "
        "`get_gradients`, `get_updates` and the old hooks have no autofix: rewrite the step with "
        "`tf.GradientTape` and `apply_gradients`, or the optimizer with `build` and `update_step`."
    )
    INVALID = (
        "import keras\n"
        "opt = keras.optimizers.SGD()\n"
        "train_op = opt.minimize(loss, var_list=model.trainable_variables)\n",
        "import tensorflow as tf\n"
        "opt = tf.keras.optimizers.Adam()\n"
        "state = opt.variables()\n",
        "import tensorflow as tf\n"
        "opt = tf.keras.optimizers.Adam(lr=1e-3)\n",
        "import tensorflow as tf\n"
        "opt = tf.keras.optimizers.Adam(1e-3)\n"
        "print(opt.lr.numpy())\n",
        "import tensorflow as tf\n"
        "class Net(tf.keras.Model):\n"
        "    def train_step(self, data):\n"
        "        x, y = data\n"
        "        with tf.GradientTape() as tape:\n"
        "            loss = self.compiled_loss(y, self(x, training=True))\n"
        "        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)\n",
        "import tensorflow as tf\n"
        "class Mine(tf.keras.optimizers.Optimizer):\n"
        "    def _create_slots(self, var_list):\n"
        "        for v in var_list:\n"
        "            self.add_slot(v, 'm')\n",
    )
    VALID = (
        "import tensorflow.compat.v1 as tf\n"
        "opt = tf.train.AdamOptimizer()\n"
        "gvs = opt.compute_gradients(loss)\n"
        "train_op = opt.minimize(loss)\n",
        "import keras\n"
        "opt = keras.optimizers.Adam(learning_rate=1e-3)\n"
        "state = opt.variables\n"
        "print(opt.learning_rate)\n",
        "import tf_keras\n"
        "opt = tf_keras.optimizers.legacy.Adam(lr=1e-3)\n"
        "updates = opt.get_updates(loss, params)\n",
        "import tensorflow as tf\n"
        "class Mine(tf.keras.optimizers.legacy.Optimizer):\n"
        "    def _create_slots(self, var_list):\n"
        "        for v in var_list:\n"
        "            self.add_slot(v, 'm')\n",
        "import tensorflow as tf\n"
        "class Agent:\n"
        "    def __init__(self, lr):\n"
        "        self.lr = lr\n"
        "        self.optimizer = tf.keras.optimizers.Adam(learning_rate=self.lr)\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        keras3_target = model.target_keras == 3
        yield from self._removed_methods(model, keras3_target)
        yield from self._learning_rate_spellings(model, keras3_target)
        yield from self._old_hooks(model)

    def _removed_methods(self, model: SemanticModel, keras3_target: bool) -> Iterator[Report]:
        for call in model.method_calls:
            info = call.optimizer
            if call.expects_error or not _modern(info):
                continue
            keras3 = info.kind == tfapi.KIND_KERAS and keras3_target
            if keras3 and call.method == "variables":
                yield self.report(call.node, "`optimizer.variables` is a list in Keras 3, not a method "
                                             "(TypeError): drop the parentheses",
                                  fix=lambda node=call.node: self.attribute_fix(model, node))
            elif keras3 and call.method in _GONE_IN_KERAS_3:
                owner = "the model's optimizer (a Keras 3 optimizer)" if info.model_owned else "Keras 3 optimizers"
                where = " in `train_step`" if call.context is not None and call.context.train_step else ""
                yield self.report(
                    call.node,
                    f"{owner} {'has' if info.model_owned else 'have'} no `{call.method}` (AttributeError){where}: "
                    "compute gradients with `tf.GradientTape` and call "
                    "`optimizer.apply_gradients(zip(grads, variables))`",
                )
            elif call.method in _GONE_SINCE_KERAS_2_11:
                yield self.report(
                    call.node,
                    f"Keras 2.11+ optimizers have no `{call.method}` (AttributeError): use `tf.GradientTape` "
                    "and `apply_gradients`, or `tf_keras.optimizers.legacy` for old code",
                )
            elif call.method in _OLD_HOOKS:
                yield self.report(
                    call.node,
                    f"current Keras optimizers have no `{call.method}` (AttributeError): it belongs to the old "
                    "optimizer API (`tf.keras.optimizers.legacy`)",
                )

    def _learning_rate_spellings(self, model: SemanticModel, keras3_target: bool) -> Iterator[Report]:
        for info in model.optimizers:
            if not _modern(info) or info.implicit:
                continue
            keywords = dict(info.keywords)
            argument = keywords.get("lr")
            if argument is None:
                continue
            if info.kind == tfapi.KIND_KERAS and keras3_target:
                message = ("Keras 3 optimizers have no `lr` argument (ValueError: Argument(s) not recognized): "
                           "pass `learning_rate=`")
            else:
                message = ("Keras 2.11+ optimizers ignore `lr=` (they only log a warning) and train with their "
                           "default learning rate: pass `learning_rate=`")
            yield self.report(argument, message, fix=lambda info=info, argument=argument:
                              self.keyword_fix(info, argument))
        if not keras3_target:
            return
        for read in model.optimizer_attributes:
            info = read.optimizer
            if read.attr != "lr" or read.expects_error or info.kind != tfapi.KIND_KERAS or info.legacy:
                continue
            yield self.report(read.node, "Keras 3 optimizers have no `lr` attribute (AttributeError): use "
                                         "`optimizer.learning_rate`",
                              fix=lambda node=read.node: self.fix([replace(node.attr, cst.Name("learning_rate"))],
                                                                  "`optimizer.lr` -> `optimizer.learning_rate`"))
        for assignment in model.attribute_assignments:
            info = assignment.receiver_info or model.optimizer_by_key.get(assignment.receiver_key)
            if assignment.attr != "lr" or assignment.expects_error or info is None \
                    or info.kind != tfapi.KIND_KERAS or info.legacy:
                continue
            yield self.report(assignment.node, "Keras 3 optimizers have no `lr`: this assignment creates an "
                                               "attribute nothing reads, and the learning rate stays as it was: "
                                               "assign `optimizer.learning_rate`")

    def _old_hooks(self, model: SemanticModel) -> Iterator[Report]:
        for definition in model.method_definitions:
            kind = tfapi.optimizer_kind(definition.optimizer_base)
            if definition.name not in _OLD_HOOKS or kind not in (tfapi.KIND_KERAS, tfapi.KIND_TF_KERAS) \
                    or ".legacy." in definition.optimizer_base:
                continue
            yield self.report(
                definition.node.name,
                f"Keras 3 and Keras 2.11+ optimizers never call `{definition.name}` (a hook of the old optimizer "
                f"API), so this optimizer {_HOOK_USE[definition.name]}: implement `build` and `update_step`, or "
                "derive from `tf.keras.optimizers.legacy.Optimizer`",
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

    def keyword_fix(self, info: OptimizerInfo, argument: cst.Arg) -> Optional[Fix]:
        """``lr=`` -> ``learning_rate=``, unless the learning rate is also passed another way."""
        call = info.node
        if not isinstance(call, cst.Call) or argument.keyword is None:
            return None
        if any(a.keyword is None for a in call.args) or any(
                a.keyword is not None and a.keyword.value == "learning_rate" for a in call.args):
            return None
        return self.fix([replace(argument.keyword, cst.Name("learning_rate"))], "`lr=` -> `learning_rate=`")
