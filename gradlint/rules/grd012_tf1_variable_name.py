"""GRD012: filtering variables by TF1-style names (``'dense/kernel:0'``) that Keras 3 never produces."""
from __future__ import annotations

import re
from typing import Iterator, Optional

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel
from gradlint.semantic.records import StringTest
from gradlint.semantic.syntax import dotted_name, terminal_name
from gradlint.semantic.values import VarElem
from gradlint.triggers import Word, any_of

_VARIABLE_NAME = re.compile(r"var|weight|param|kernel|bias|^[vw]\d*$", re.IGNORECASE)
# the bare names Keras 3 gives the variables of its built-in layers (a substring of one of these may be a
# legitimate test of `variable.name`; anything else, such as a layer's name, can only be in `variable.path`)
_KERAS_VARIABLE_NAMES = (
    "kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance", "embeddings", "recurrent_kernel",
    "depthwise_kernel", "pointwise_kernel", "alpha", "scale", "offset", "moving_var", "weights", "seed_generator",
    "seed_generator_state", "iteration", "count", "total", "mean", "variance",
)
_OPERATIONS = {"==": "==", "in": "in", "contains": "in", "startswith": ".startswith()", "endswith": ".endswith()",
               "regex": "a regular expression"}


class Tf1VariableName(Rule):
    CODE = "GRD012"
    NAME = "tf1-variable-name"
    SUMMARY = "Variable name compared with a TF1-style 'scope/name:0' string"
    RUNTIME_TWINS = ("GRD102",)
    TRIGGERS = any_of("string_suffix", ":0") + tuple(
        (Word("attribute", collection), Word("name_test")) for collection in (
            "trainable_variables", "trainable_weights", "variables", "weights", "non_trainable_variables",
            "non_trainable_weights"))
    WHAT = (
        "Flags tests of a variable's `.name` against strings that only TF1 / Keras 2 names contain: `==`, "
        "`!=`, `in`, `.startswith(...)`, `.endswith(...)` and regular expressions (`re.compile(p).match(v.name)`, "
        "`re.match(p, v.name)`) with a pattern containing `:0`; and, on the variables of a Keras model or "
        "layer, a layer scope (`'head/'`, or `'head' in v.name` where `head` is no variable name Keras uses "
        "and no variable created in the file with a `name=` has it). "
        "The strings are followed through module constants (`FROZEN = ('dense/kernel:0',)`), parameter "
        "defaults and compiled patterns. Depends on the target Keras version: silent with `target-keras = 2`, "
        "in files that use `tf.compat.v1` or `tf_keras`, and in files without Keras, where plain `tf.Variable` "
        "names do end in `:0`."
    )
    WHY = (
        "In Keras 3 a variable's `name` is bare (`kernel`) and its `path` is `dense_1/kernel`: no `:0` suffix "
        "and no layer scope, ever. The filter silently matches nothing, so a \"partial update\" updates no "
        "variable, a freeze list freezes nothing, or a weight-decay sum adds nothing."
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
        "import re\n"
        "import keras\n"
        "KERNELS = re.compile(r'.*kernel:0$')\n"
        "decay = [v for v in model.trainable_variables if KERNELS.match(v.name)]\n",
        "import keras\n"
        "head = [v for v in model.trainable_variables if 'head' in v.name]\n",
    )
    VALID = (
        "import keras\n"
        "frozen = [v for v in model.trainable_variables if v.path == 'encoder/kernel']\n",
        "import tensorflow.compat.v1 as tf\n"
        "train_vars = [v for v in tf.trainable_variables() if v.name.startswith('generator/')]\n"
        "head = [v for v in tf.trainable_variables() if v.name == 'head/w:0']\n",
        "import keras\n"
        "inputs = [t for t in graph_tensors if t.name == 'input:0']\n",
        "import keras\n"
        "statistics = [v for v in model.variables if 'moving_mean' in v.name]\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        if model.target_keras == 2 or model.imports.uses_tf1_or_legacy_keras or not model.imports.uses_keras:
            return
        for test in model.string_tests:
            if test.attribute != "name" or test.expects_error:
                continue
            message = self._mismatch(test, model)
            if message is not None:
                yield self.report(test.node, message)

    def _mismatch(self, test: StringTest, model: SemanticModel) -> Optional[str]:
        keras_variable = _keras_collection_element(test)
        if not (keras_variable or _variable_like(test, model)):
            return None
        literal_line = model.line_of(test.literal_node) if test.literal_node is not None else None
        where = "" if literal_line is None or literal_line == model.line_of(test.node) else f" (line {literal_line})"
        operation = _OPERATIONS.get(test.operation, test.operation)
        with_suffix = [s for s in test.strings if ":0" in s]
        if with_suffix:
            text = with_suffix[0]
            if test.operation == "regex":
                return (f"this pattern {text!r}{where} needs the ':0' suffix of TF1 / Keras 2 names; Keras 3 "
                        "variable names are bare (`kernel`) and have no ':0', so it matches nothing: match "
                        "`variable.path` without ':0'")
            path = text.split(":0", 1)[0]
            bare = path.rpartition("/")[2] or path
            return (f"Keras 3 variable names have no ':0' suffix or scope: for {text!r}{where} the name is "
                    f"`{bare}`" + (f" and the path `{path}`" if "/" in path else "")
                    + f", so this {operation} test matches nothing: compare `variable.path` without ':0'")
        if not keras_variable:
            return None
        scoped = [s for s in test.strings if "/" in s.strip("/") or s.endswith("/")]
        if scoped and test.operation in ("==", "in", "contains", "startswith", "endswith"):
            text = scoped[0]
            return (f"Keras 3 variable names are bare (`kernel`): the layer scope in {text!r}{where} is only in "
                    f"`variable.path`, so this {operation} test on `.name` matches nothing: test `variable.path`")
        if test.operation == "contains":
            created = [creation.name for creation in model.variable_creations]
            scope_like = [s for s in test.strings if s and not any(s in known for known in _KERAS_VARIABLE_NAMES)
                          and not any(s in name for name in created)]
            if scope_like and len(scope_like) == len(test.strings):
                text = scope_like[0]
                return (f"Keras 3 variable names are bare (`kernel`, `bias`): {text!r}{where} is no variable name "
                        "Keras uses, so it can only be part of the layer path, and `in variable.name` is always "
                        "False: test `variable.path`")
        return None


def _keras_collection_element(test: StringTest) -> bool:
    """A variable taken from a Keras model's or layer's collection (``model.trainable_variables``)."""
    value = test.subject_value
    return isinstance(value, VarElem) and not value.collection.startswith(("tf.", "tensorflow."))


def _variable_like(test: StringTest, model: SemanticModel) -> bool:
    """A name that reads like a variable (``var``, ``w``, ``kernel``...) and is not an imported module."""
    subject = test.subject
    dotted = dotted_name(subject)
    if dotted is not None and dotted.split(".", 1)[0] in model.imports.aliases:
        return False
    value = test.subject_value
    if isinstance(value, VarElem):
        return True
    return _VARIABLE_NAME.search(terminal_name(subject) or "") is not None
