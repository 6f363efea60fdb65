"""Canonical names of the TensorFlow / Keras APIs the semantic model recognises."""
from __future__ import annotations

import re

# Rewrites applied until none matches, so every spelling of one API reaches one canonical name.
_PREFIX_REWRITES = (
    ("tensorflow.compat.v1.", "tensorflow."),
    ("tensorflow.compat.v2.", "tensorflow."),
    ("tensorflow._api.v2.", "tensorflow."),
    ("tensorflow.python.keras.", "tf_keras."),
    ("tensorflow.keras.", "keras."),
    ("tensorflow.optimizers.", "keras.optimizers."),
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
# Attributes and methods of a tensor that inspect it (a test asserting on a gradient) rather than compute.
TENSOR_INSPECTIONS = frozenset({"shape", "dtype", "get_shape", "numpy", "device", "name"})

# Calls that only compute a new tensor from their arguments: as an expression statement they do nothing.
PURE_CALLS = PER_GRADIENT_CLIPS | {
    CLIP_BY_GLOBAL_NORM, "tensorflow.norm", "tensorflow.math.l2_normalize", "tensorflow.nn.l2_normalize",
    "tensorflow.multiply", "tensorflow.math.multiply", "tensorflow.add", "tensorflow.math.add",
    "tensorflow.abs", "tensorflow.math.abs", "tensorflow.reduce_sum", "tensorflow.reduce_mean",
    "tensorflow.where", "tensorflow.cast", "tensorflow.convert_to_tensor",
}

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


def is_tf1_optimizer_base(name: str) -> bool:
    """``tf.compat.v1.train.Optimizer`` (or one of its subclasses): a TF1 optimizer class to derive from."""
    return name.startswith("tensorflow.train.") and name.endswith("Optimizer")


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

# Constructors of variables that take a `name` (the first positional argument of `get_variable`).
VARIABLE_CONSTRUCTORS = frozenset({"tensorflow.Variable", "keras.Variable", "tensorflow.get_variable"})
VARIABLE_METHODS = frozenset({"add_weight", "add_variable"})

STOP_GRADIENT = frozenset({"tensorflow.stop_gradient", "keras.ops.stop_gradient"})
REDUCE_MEAN = frozenset({"tensorflow.reduce_mean", "tensorflow.math.reduce_mean", "keras.ops.mean"})
AVERAGE_LOSS = frozenset({"tensorflow.nn.compute_average_loss"})

# Calls whose result has no gradient: they break the path from variables to the target.
GRADIENT_BREAKING_CALLS = {
    "tensorflow.argmax": "tf.argmax", "tensorflow.math.argmax": "tf.math.argmax",
    "tensorflow.argmin": "tf.argmin", "tensorflow.math.argmin": "tf.math.argmin",
    "tensorflow.round": "tf.round", "tensorflow.math.round": "tf.math.round",
    "tensorflow.py_function": "tf.py_function", "tensorflow.numpy_function": "tf.numpy_function",
    "tensorflow.py_func": "tf.py_func",
    "tensorflow.equal": "tf.equal", "tensorflow.math.equal": "tf.math.equal",
    "tensorflow.not_equal": "tf.not_equal", "tensorflow.math.not_equal": "tf.math.not_equal",
    "tensorflow.greater": "tf.greater", "tensorflow.math.greater": "tf.math.greater",
    "tensorflow.greater_equal": "tf.greater_equal", "tensorflow.math.greater_equal": "tf.math.greater_equal",
    "tensorflow.less": "tf.less", "tensorflow.math.less": "tf.math.less",
    "tensorflow.less_equal": "tf.less_equal", "tensorflow.math.less_equal": "tf.math.less_equal",
    "builtins.float": "float()", "builtins.int": "int()", "builtins.round": "round()",
}
CAST_CALLS = frozenset({"tensorflow.cast", "tensorflow.dtypes.cast", "keras.ops.cast"})
NON_DIFFERENTIABLE_DTYPE = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool")

# Arguments that carry no gradient to the result (conditions, masks, indices); positions and keywords.
NON_DIFFERENTIABLE_ARGS = {
    "tensorflow.where": ((0,), ("condition",)),
    "tensorflow.boolean_mask": ((1,), ("mask",)),
    "tensorflow.gather": ((1,), ("indices",)),
    "tensorflow.gather_nd": ((1,), ("indices",)),
    "tensorflow.scatter_nd": ((0, 2), ("indices", "shape")),
    "tensorflow.tensor_scatter_nd_update": ((1,), ("indices",)),
    "tensorflow.nn.embedding_lookup": ((1,), ("ids",)),
    "tensorflow.reshape": ((1,), ("shape",)),
    "tensorflow.tile": ((1,), ("multiples",)),
    "tensorflow.slice": ((1, 2), ("begin", "size")),
}
# Calls whose output does not depend differentiably on any argument (shapes, one-hot encodings, masks).
CONSTANT_OUTPUT_CALLS = frozenset({
    "tensorflow.shape", "tensorflow.size", "tensorflow.rank", "tensorflow.one_hot", "tensorflow.sequence_mask",
    "tensorflow.zeros_like", "tensorflow.ones_like", "tensorflow.random.normal", "tensorflow.random.uniform",
    "builtins.len", "builtins.isinstance", "builtins.range",
})

KERAS_MODEL_CLASSES = frozenset({"Model", "Sequential", "Functional"})


def keras_object_class(name: str) -> str | None:
    """The class a Keras model/layer constructor builds (`keras.layers.Dense` -> `Dense`), else None."""
    for prefix in ("keras.", "tf_keras."):
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):]
        module, _, cls = rest.rpartition(".")
        if module in ("", "models") and cls in KERAS_MODEL_CLASSES:
            return cls
        if module in ("models",) and cls in ("load_model", "clone_model"):
            return "Model"
        if module == "layers" and cls[:1].isupper():
            return cls
        if module.startswith("applications") and cls[:1].isupper():
            return cls
    return None


def keras_callback_class(name: str) -> str | None:
    """``Callback`` for ``keras.callbacks.Callback`` (any spelling): its methods see ``self.model``."""
    if name in ("keras.callbacks.Callback", "tf_keras.callbacks.Callback"):
        return "Callback"
    return None


MULTI_REPLICA_STRATEGIES = frozenset({
    "MirroredStrategy", "MultiWorkerMirroredStrategy", "TPUStrategy", "CentralStorageStrategy",
    "ParameterServerStrategy",
})
SINGLE_REPLICA_STRATEGIES = frozenset({"OneDeviceStrategy"})


def strategy_class(name: str) -> str | None:
    """``MirroredStrategy`` for `tf.distribute.MirroredStrategy` (any spelling), ``get_strategy`` too."""
    if not name.startswith("tensorflow.distribute."):
        return None
    cls = name.rpartition(".")[2]
    if cls.endswith("Strategy") or cls == "get_strategy":
        return cls
    return None


OPTIMIZER_CLIP_ARGUMENTS = ("clipnorm", "global_clipnorm", "clipvalue")


def normalize_variables(text: str) -> str:
    """Whitespace-free text with attribute aliases unified (``weights`` -> ``variables``)."""
    normalized = "".join(text.split())
    return re.sub(r"\.(trainable_weights|non_trainable_weights|weights)\b",
                  lambda m: "." + VARIABLE_COLLECTION_ATTRS[m.group(1)], normalized)
