"""GRD012: filtering variables by TF1-style names (``'dense/kernel:0'``) that Keras 3 never produces."""
from __future__ import annotations

from typing import Iterator

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel


class Tf1VariableName(Rule):
    CODE = "GRD012"
    NAME = "tf1-variable-name"
    SUMMARY = "Variable name compared with a TF1-style 'scope/name:0' string"
    RUNTIME_TWINS = ("GRD102",)
    WHAT = (
        "Flags comparisons of a variable's `.name` with a string containing `:0` — `==`, `!=`, `in`, "
        "`.startswith(...)`, `.endswith(...)`, in files that use Keras. Depends on the target Keras version: "
        "silent with `target-keras = 2`, in files that use `tf.compat.v1` or `tf_keras`, and in files without "
        "Keras, where plain `tf.Variable` names do end in `:0`."
    )
    WHY = (
        "In Keras 3 a variable's `name` is bare (`kernel`) and its `path` is `dense_1/kernel`: no `:0` suffix "
        "ever. The filter silently matches nothing, so a \"partial update\" updates no variable, or a freeze "
        "list freezes nothing."
    )
    EXAMPLE = (
        "for grad, var in zip(grads, model.trainable_variables):\n"
        "    if var.name == 'dense1/kernel:0':\n"
        "        selected.append((grad, var))"
    )
    USE_INSTEAD = (
        "for grad, var in zip(grads, model.trainable_variables):\n"
        "    if var.path == 'dense1/kernel':\n"
        "        selected.append((grad, var))"
    )
    FIX_SAFETY = "No autofix: the matching path depends on the layer names of the model at hand."
    INVALID = (
        "import keras\n"
        "frozen = [v for v in model.trainable_variables if v.name == 'encoder/kernel:0']\n",
        "import keras\n"
        "for w in model.weights:\n"
        "    if w.name.endswith('bias:0'):\n"
        "        biases.append(w)\n",
    )
    VALID = (
        "import keras\n"
        "frozen = [v for v in model.trainable_variables if v.path == 'encoder/kernel']\n",
        "import tensorflow.compat.v1 as tf\n"
        "train_vars = [v for v in tf.trainable_variables() if v.name.startswith('generator/')]\n"
        "head = [v for v in tf.trainable_variables() if v.name == 'head/w:0']\n",
        "import keras\n"
        "inputs = [t for t in graph_tensors if t.name == 'input:0']\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        if model.target_keras == 2 or model.imports.uses_tf1_or_legacy_keras or not model.imports.uses_keras:
            return
        for name_filter in model.name_filters:
            if name_filter.expects_error:
                continue
            yield self.report(
                name_filter.node,
                f"Keras 3 variable names have no ':0' suffix or scope (`kernel`, path `dense/kernel`), so this "
                f"comparison with {name_filter.literal!r} matches nothing: compare `variable.path` without ':0'",
            )
