"""Canonical names of the TensorFlow / Keras APIs the semantic model recognises."""
from __future__ import annotations

# Rewrites applied until none matches, so every spelling of one API reaches one canonical name.
_PREFIX_REWRITES = (
    ("tensorflow.compat.v1.", "tensorflow."),
    ("tensorflow.compat.v2.", "tensorflow."),
    ("tensorflow._api.v2.", "tensorflow."),
    ("tensorflow.python.keras.", "tf_keras."),
    ("tensorflow.keras.", "keras."),
    ("keras.api.", "keras."),
    ("tf_keras.api._v2.keras.", "tf_keras."),
    ("tensorflow.autodiff.GradientTape", "tensorflow.GradientTape"),
)


def canonical(qualified_name: str) -> str:
    """Map one spelling of an API (`tf.compat.v1.gradients`, `tf.keras.optimizers.Adam`) to its canonical name."""
    name = qualified_name
    changed = True
    while changed:
        changed = False
        for old, new in _PREFIX_REWRITES:
            if name.startswith(old):
                name = new + name[len(old):]
                changed = True
        if name == "tensorflow.keras":
            name, changed = "keras", True
    return name


GRADIENT_TAPE = "tensorflow.GradientTape"
GRADIENT_FUNCTIONS = frozenset({
    "tensorflow.gradients",
    "tensorflow.python.ops.gradients_impl.gradients",
    "tensorflow.python.ops.gradients.gradients",
})


def is_internal_tape(name: str) -> bool:
    """``tensorflow.python.eager.backprop.GradientTape`` and other internal spellings of the tape class."""
    return name.startswith("tensorflow.") and name.endswith(".GradientTape")
CLIP_BY_GLOBAL_NORM = "tensorflow.clip_by_global_norm"
PER_GRADIENT_CLIPS = frozenset({"tensorflow.clip_by_norm", "tensorflow.clip_by_value"})

# Calls that accept `None` entries in a gradient list or a `None` gradient argument.
NONE_TOLERANT_CALLS = frozenset({
    "tensorflow.clip_by_global_norm",
    "tensorflow.linalg.global_norm",
    "tensorflow.global_norm",
    "tensorflow.is_tensor",
    "tensorflow.print",
    "tensorflow.nest.flatten",
    "tensorflow.nest.map_structure",
    "tensorflow.nest.pack_sequence_as",
    "tensorflow.group",
    "tensorflow.identity_n",
})

# Namespaces whose functions fail (or silently misbehave) on a `None` argument.
NONE_INTOLERANT_NAMESPACES = ("tensorflow.", "numpy.", "keras.ops.", "tf_keras.backend.", "keras.backend.")

KERAS_OPTIMIZER_CLASSES = frozenset({
    "Optimizer", "Adam", "AdamW", "Adamax", "Adadelta", "Adagrad", "Adafactor", "Ftrl", "Lion",
    "Lamb", "LossScaleOptimizer", "Muon", "Nadam", "RMSprop", "SGD",
})
TF1_STATELESS_OPTIMIZERS = frozenset({"GradientDescentOptimizer", "ProximalGradientDescentOptimizer"})

KIND_KERAS = "keras"        # the installed Keras (Keras 3 unless configured otherwise)
KIND_TF_KERAS = "tf_keras"  # legacy Keras 2 optimizers
KIND_TF1 = "tf1"            # tf.compat.v1.train optimizers


def optimizer_kind(name: str) -> str | None:
    """Kind of optimizer a canonical constructor name builds, or None when it is not an optimizer class."""
    module, _, cls = name.rpartition(".")
    if module == "tensorflow.train" and cls.endswith("Optimizer"):
        return KIND_TF1
    if module in ("keras.optimizers", "keras.mixed_precision") and cls in KERAS_OPTIMIZER_CLASSES:
        return KIND_KERAS
    if name == "keras.optimizers.get":
        return KIND_KERAS
    if module in ("keras.optimizers.legacy", "keras.optimizers.experimental") and cls in KERAS_OPTIMIZER_CLASSES:
        return KIND_TF_KERAS
    if module in ("tf_keras.optimizers", "tf_keras.optimizers.legacy", "tf_keras.mixed_precision"):
        if cls in KERAS_OPTIMIZER_CLASSES:
            return KIND_TF_KERAS
    return None


def is_stateless_tf1_optimizer(name: str) -> bool:
    """True for TF1 optimizers that keep no slot state (reusing them for several var_lists is harmless)."""
    return name.startswith("tensorflow.train.") and name.rpartition(".")[2] in TF1_STATELESS_OPTIMIZERS


# Attributes that hold a model's / layer's variable collections, and their canonical spellings.
VARIABLE_COLLECTION_ATTRS = {
    "trainable_variables": "trainable_variables",
    "trainable_weights": "trainable_variables",
    "variables": "variables",
    "weights": "variables",
    "non_trainable_variables": "non_trainable_variables",
    "non_trainable_weights": "non_trainable_variables",
}
VARIABLE_COLLECTION_CALLS = frozenset({
    "tensorflow.trainable_variables",
    "tensorflow.global_variables",
    "tensorflow.get_collection",
})

OPTIMIZER_METHODS_APPLY = frozenset({"apply_gradients", "apply", "minimize"})
