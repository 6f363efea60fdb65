"""GRD006: gradients taken for one variable list, paired with another."""
from __future__ import annotations

from typing import Iterator

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel
from gradlint.triggers import GRADIENT_SOURCES


class GradientsVariablesMismatch(Rule):
    CODE = "GRD006"
    NAME = "gradients-variables-mismatch"
    SUMMARY = "Gradients paired with a different variable list than they were taken for"
    RUNTIME_TWINS = ("GRD108", "GRD102")
    TRIGGERS = GRADIENT_SOURCES
    WHAT = (
        "Flags `zip(grads, B)` or `optimizer.apply(grads, B)` where `grads` came from "
        "`tape.gradient(loss, A)` / `tf.gradients(loss, A)` and `B` is a different variable expression: "
        "`model.variables` instead of `model.trainable_variables`, another model's variables, another list. "
        "`trainable_weights` and `trainable_variables` are the same list; a name bound to the expression "
        "counts as that expression. Pairs aligned by index (`zip([grads[i]], [variables[i]])`) compare "
        "`variables` itself, and a slice of the gradients (`zip(grads[2:], [w2, b2])`) is not compared."
    )
    WHY = (
        "Gradients are matched to variables by position. `model.variables` also holds non-trainable "
        "variables (BatchNormalization's moving statistics) in a different order, so gradients land on the "
        "wrong variables: a shape error if you are lucky, silently wrong updates if shapes happen to agree. "
        "Pairing with another model's variables updates that model with this model's gradients."
    )
    EXAMPLE = (
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "optimizer.apply_gradients(zip(grads, model.variables))"
    )
    USE_INSTEAD = (
        "variables = model.trainable_variables\n"
        "grads = tape.gradient(loss, variables)\n"
        "optimizer.apply_gradients(zip(grads, variables))"
    )
    FIX_SAFETY = "No autofix: which of the two lists was meant cannot be known."
    INVALID = (
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "opt.apply_gradients(zip(grads, model.variables))\n",
        "import tensorflow as tf\n"
        "g_grads = tape.gradient(g_loss, generator.trainable_variables)\n"
        "g_opt.apply_gradients(zip(g_grads, discriminator.trainable_variables))\n",
    )
    VALID = (
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, model.trainable_weights)\n"
        "opt.apply_gradients(zip(grads, model.trainable_variables))\n",
        "import tensorflow as tf\n"
        "tvars = model.trainable_variables\n"
        "grads = tape.gradient(loss, tvars)\n"
        "opt.apply_gradients(zip(grads, model.trainable_variables))\n",
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, variables)\n"
        "opt.apply_gradients(zip(grads, variables))\n",
        "import tensorflow as tf\n"
        "grads = tape.gradient(loss, model.trainable_variables)\n"
        "variables = model.trainable_variables\n"
        "pairs = [p for i in range(len(grads)) for p in zip([grads[i]], [variables[i]])]\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        for pairing in model.pairings:
            source = pairing.gradient.source
            sources_text = source.sources_text
            if sources_text is None or sources_text == pairing.vars_text:
                continue
            yield self.report(
                pairing.node,
                f"gradients were taken for `{sources_text}` (line {model.line_of(source.node)}) but are paired "
                f"with `{pairing.vars_text}`: gradients land on the wrong variables (a shape error, or silently "
                "wrong updates): pair them with the list they were taken for",
            )
