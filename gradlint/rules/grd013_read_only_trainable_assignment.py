"""GRD013: assigning a Keras model's or layer's read-only variable collections."""
from __future__ import annotations

from typing import Iterator

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel
from gradlint.triggers import any_of

_READ_ONLY = frozenset({
    "trainable_variables", "trainable_weights", "non_trainable_variables", "non_trainable_weights",
    "variables", "weights",
})


class ReadOnlyTrainableAssignment(Rule):
    CODE = "GRD013"
    NAME = "read-only-trainable-assignment"
    SUMMARY = "Assignment to a Keras model's read-only variable collection"
    RUNTIME_TWINS = ("GRD102",)
    TRIGGERS = any_of("assigned_attribute", "trainable_variables", "trainable_weights",
                      "non_trainable_variables", "non_trainable_weights", "variables", "weights")
    WHAT = (
        "Flags assignments to `trainable_variables`, `trainable_weights`, `non_trainable_variables`, "
        "`non_trainable_weights`, `variables` or `weights` on a Keras model or layer, or on `self` inside a "
        "class that derives from a Keras `Model` / `Layer`. The same names on other classes are not flagged."
    )
    WHY = (
        "These are read-only properties computed from the layer's tracked variables: assigning them raises "
        "`AttributeError: can't set attribute` (in `__init__`, before anything trains). Code copied from "
        "posts that \"choose the trainable variables\" this way never worked as intended."
    )
    EXAMPLE = (
        "class Partial(keras.Model):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.dense1 = keras.layers.Dense(8)\n"
        "        self.dense2 = keras.layers.Dense(1)\n"
        "        self.trainable_variables = [self.dense1.kernel]"
    )
    USE_INSTEAD = (
        "class Partial(keras.Model):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.dense1 = keras.layers.Dense(8)\n"
        "        self.dense2 = keras.layers.Dense(1)\n"
        "        self.dense2.trainable = False  # freeze what must not train"
    )
    FIX_SAFETY = "No autofix: freezing layers (`layer.trainable = False`) or filtering gradients is a design choice."
    INVALID = (
        "import keras\n"
        "model = keras.Sequential([keras.layers.Dense(2)])\n"
        "model.trainable_weights = model.trainable_weights[:1]\n",
        "import tensorflow as tf\n"
        "class Net(tf.keras.Model):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.trainable_variables = []\n",
    )
    VALID = (
        "import keras\n"
        "class Store:\n"
        "    def __init__(self):\n"
        "        self.trainable_variables = []\n",
        "import keras\n"
        "model = keras.Sequential([keras.layers.Dense(2)])\n"
        "model.layers[0].trainable = False\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        for assignment in model.attribute_assignments:
            if assignment.attr in _READ_ONLY and assignment.receiver_keras and not assignment.expects_error:
                yield self.report(
                    assignment.node,
                    f"`{assignment.attr}` of a Keras {assignment.receiver_keras} is a read-only property "
                    "(AttributeError): freeze layers with `layer.trainable = False`, or filter the "
                    "(gradient, variable) pairs you apply",
                )
