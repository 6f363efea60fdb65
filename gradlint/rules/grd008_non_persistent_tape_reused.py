"""GRD008: a non-persistent GradientTape asked for gradients more than once."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel
from gradlint.semantic.records import GradientSource
from gradlint.triggers import TAPE_GRADIENTS


def _exclusive(a: GradientSource, b: GradientSource) -> bool:
    """The two calls sit in different branches of one `if` (only one of them runs)."""
    branches = dict(a.branches)
    return any(node in branches and branches[node] != branch for node, branch in b.branches)


class NonPersistentTapeReused(Rule):
    CODE = "GRD008"
    NAME = "non-persistent-tape-reused"
    SUMMARY = "Non-persistent GradientTape used for several gradient calls"
    RUNTIME_TWINS = ()
    TRIGGERS = TAPE_GRADIENTS
    WHAT = (
        "Flags a second `gradient` / `jacobian` call on a `tf.GradientTape` created without "
        "`persistent=True`, including one call that runs repeatedly in a loop the tape was created outside of. "
        "Calls in different branches of one `if` are not counted together."
    )
    WHY = (
        "A non-persistent tape releases its resources after the first `gradient` call: the second raises "
        "`RuntimeError: A non-persistent GradientTape can only be used to compute one set of gradients`."
    )
    EXAMPLE = (
        "with tf.GradientTape() as tape:\n"
        "    g_loss, d_loss = losses(model(x))\n"
        "g_grads = tape.gradient(g_loss, generator.trainable_variables)\n"
        "d_grads = tape.gradient(d_loss, discriminator.trainable_variables)"
    )
    USE_INSTEAD = (
        "with tf.GradientTape(persistent=True) as tape:\n"
        "    g_loss, d_loss = losses(model(x))\n"
        "g_grads = tape.gradient(g_loss, generator.trainable_variables)\n"
        "d_grads = tape.gradient(d_loss, discriminator.trainable_variables)\n"
        "del tape  # release the persistent tape's resources"
    )
    FIX_SAFETY = (
        "No autofix: `persistent=True` keeps every intermediate alive until the tape is deleted; use two tapes "
        "or a persistent one deliberately."
    )
    INVALID = (
        "import tensorflow as tf\n"
        "with tf.GradientTape() as tape:\n"
        "    a, b = f(x)\n"
        "ga = tape.gradient(a, u)\n"
        "gb = tape.gradient(b, w)\n",
        "import tensorflow as tf\n"
        "with tf.GradientTape() as tape:\n"
        "    losses = f(x)\n"
        "for loss in losses:\n"
        "    grads = tape.gradient(loss, model.trainable_variables)\n",
    )
    VALID = (
        "import tensorflow as tf\n"
        "with tf.GradientTape(persistent=True) as tape:\n"
        "    a, b = f(x)\n"
        "ga = tape.gradient(a, u)\n"
        "gb = tape.gradient(b, w)\n",
        "import tensorflow as tf\n"
        "for x in data:\n"
        "    with tf.GradientTape() as tape:\n"
        "        loss = f(x)\n"
        "    grads = tape.gradient(loss, model.trainable_variables)\n",
        "import tensorflow as tf\n"
        "with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:\n"
        "    g_loss, d_loss = f(x)\n"
        "g = g_tape.gradient(g_loss, gen.trainable_variables)\n"
        "d = d_tape.gradient(d_loss, disc.trainable_variables)\n",
        "import tensorflow as tf\n"
        "with tf.GradientTape() as tape:\n"
        "    loss = f(x)\n"
        "if use_first:\n"
        "    g = tape.gradient(loss, a)\n"
        "else:\n"
        "    g = tape.gradient(loss, b)\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        by_tape: dict[int, list[GradientSource]] = defaultdict(list)
        for source in model.gradient_sources:
            tape = source.tape
            if tape is None or tape.persistent or tape.implicit or not source.api.startswith("tape."):
                continue
            by_tape[id(tape)].append(source)
        for sources in by_tape.values():
            tape = sources[0].tape
            for index, source in enumerate(sources):
                earlier = [s for s in sources[:index] if not _exclusive(s, source)]
                repeated = [loop for loop in source.loops if not any(loop is l for l in tape.loops)]
                if earlier:
                    detail = f"already used on line {model.line_of(earlier[0].node)}"
                elif repeated:
                    detail = "used again on every iteration of this loop"
                else:
                    continue
                yield self.report(
                    source.node,
                    f"this tape is not persistent and was {detail}: the second call raises RuntimeError "
                    "(a non-persistent tape computes one set of gradients): use `persistent=True` or one "
                    "tape per gradient",
                )
