"""GRD003: ``apply_gradients`` called once per variable inside a loop."""
from __future__ import annotations

from typing import Iterator

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel
from gradlint.semantic.syntax import names_in

_APPLY_METHODS = frozenset({"apply_gradients", "apply", "minimize"})


class ApplyGradientsPerVariable(Rule):
    CODE = "GRD003"
    NAME = "apply-gradients-per-variable"
    SUMMARY = "apply_gradients called once per variable inside a loop"
    RUNTIME_TWINS = ("GRD103",)
    FIX = "unsafe"
    WHAT = (
        "Flags `apply_gradients` / `apply` / `minimize` called inside a `for` or `while` loop over "
        "gradients or variables with a single (gradient, variable) pair: `[(g, v)]`, "
        "`zip([grads[i]], [vars[i]])`, `apply([g], [v])`, `minimize(loss, var_list=[v])`."
    )
    WHY = (
        "Every call advances `optimizer.iterations`. With N variables one training step becomes N "
        "optimizer steps: Adam's bias correction and learning-rate schedules run N times too fast, and "
        "the result depends on variable order. Keras 3 also raises 'Unknown variable' on the second "
        "variable unless the optimizer was built with all of them first."
    )
    EXAMPLE = (
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "for grad, var in zip(grads, model.trainable_variables):\n"
        "    if var.path in wanted:\n"
        "        optimizer.apply_gradients([(grad, var)])"
    )
    USE_INSTEAD = (
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "pairs = [(grad, var) for grad, var in zip(grads, model.trainable_variables)\n"
        "         if var.path in wanted]\n"
        "optimizer.apply_gradients(pairs)"
    )
    FIX_SAFETY = (
        "Unsafe: the fix collects the pairs (keeping the loop's filter) and calls `apply_gradients` once "
        "after the loop. That changes how many optimizer steps a training step takes, which is the point, "
        "but it changes the numbers the program computes."
    )
    INVALID = (
        "import tensorflow as tf\n"
        "optimizer = tf.keras.optimizers.Adam()\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "for var, grad in zip(model.trainable_variables, grads):\n"
        "    optimizer.apply_gradients([(grad, var)])\n",
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "variables = model.trainable_variables\n"
        "for i in range(len(grads)):\n"
        "    opt.apply_gradients(zip([grads[i]], [variables[i]]))\n",
        "import tensorflow.compat.v1 as tf\n"
        "opt = tf.train.AdamOptimizer()\n"
        "for v in tf.trainable_variables():\n"
        "    train_ops.append(opt.minimize(loss, var_list=[v]))\n",
    )
    VALID = (
        "import tensorflow as tf\n"
        "optimizer = tf.keras.optimizers.Adam()\n"
        "for x, y in dataset:\n"
        "    with tf.GradientTape() as tape:\n"
        "        loss = loss_fn(y, model(x))\n"
        "    grads = tape.gradient(loss, [w])\n"
        "    optimizer.apply_gradients([(grads[0], w)])\n",
        "import tensorflow as tf\n"
        "for model, opt in [(gen, g_opt), (disc, d_opt)]:\n"
        "    grads = tape.gradient(loss, model.trainable_variables)\n"
        "    opt.apply_gradients(zip(grads, model.trainable_variables))\n",
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "pairs = [(g, v) for g, v in zip(grads, model.trainable_variables) if v.trainable]\n"
        "optimizer.apply_gradients(pairs)\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        for call in model.optimizer_calls:
            if call.method not in _APPLY_METHODS or call.single_pair is None or not call.loops \
                    or call.expects_error:
                continue
            gradient, variable = call.single_pair
            used = names_in(variable) if call.method == "minimize" else names_in(gradient) | names_in(variable)
            for loop in reversed(call.loops):
                if loop.over_variables and used & loop.varying_names:
                    yield self.report(
                        call.node,
                        f"`{call.method}` once per variable inside a loop: every call advances "
                        "`optimizer.iterations`, so Adam's bias correction and learning-rate schedules run "
                        "once per variable (Keras 3 raises 'Unknown variable' unless built first): collect "
                        "the pairs and call it once after the loop",
                    )
                    break
