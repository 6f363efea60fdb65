"""Catalogue entries for the runtime auditor's findings (GRD1xx).

The auditor (``auditor/``) reports these codes; ``gradlint rules`` and ``gradlint explain``
list them beside the static rules. This module imports nothing heavy.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuntimeCheck:
    """One runtime finding: its code, name and documentation."""

    code: str
    name: str
    what: str
    why: str
    example: str
    use_instead: str
    static_twins: tuple[str, ...] = ()
    kind: str = "runtime"


RUNTIME_CHECKS: tuple[RuntimeCheck, ...] = (
    RuntimeCheck(
        code="GRD101",
        name="none-gradient",
        what="Reports a variable that received a `None` gradient in a training step.",
        why=(
            "A `None` gradient means the loss does not depend on the variable: the optimizer skips it "
            "(Keras 3 warns once per trace) and the variable never trains. Usually the forward pass ran "
            "outside the tape, the path to the loss was broken, or the variable belongs to an unused layer."
        ),
        example=(
            "with tf.GradientTape() as tape:\n"
            "    logits = model(x)\n"
            "loss = loss_fn(y, logits)   # computed outside the tape\n"
            "grads = tape.gradient(loss, model.trainable_variables)  # all None\n"
            "opt.apply_gradients(zip(grads, model.trainable_variables))"
        ),
        use_instead="Compute the loss inside the tape and keep the path from variables to loss differentiable.",
        static_twins=("GRD001", "GRD010", "GRD011"),
    ),
    RuntimeCheck(
        code="GRD102",
        name="variable-not-updated",
        what=(
            "Reports a variable whose gradient was computed, or that was passed to the optimizer, "
            "but whose value never changed while the audit watched."
        ),
        why=(
            "The variable is in the training set but does not train: it was filtered out (a name filter "
            "that matches nothing), its learning rate is zero, or nothing was applied. When its gradient "
            "was exactly 0 on every step the message says so: the loss does not depend on it by "
            "construction (a bias followed by a normalisation, a WGAN critic's output bias), which is "
            "no gradient-path bug."
        ),
        example=(
            "for g, v in zip(grads, model.trainable_variables):\n"
            "    if v.name == 'dense/kernel:0':   # Keras 3 names never match\n"
            "        opt.apply_gradients([(g, v)])"
        ),
        use_instead="Apply every gradient you compute, or stop computing gradients for frozen variables.",
        static_twins=("GRD012", "GRD003"),
    ),
    RuntimeCheck(
        code="GRD103",
        name="multiple-applies-per-step",
        what="Reports an optimizer applied more than once per training step.",
        why=(
            "Each `apply` advances `optimizer.iterations`: Adam's bias correction and learning-rate "
            "schedules then run several times too fast, and per-variable applies make the step order-dependent."
        ),
        example=(
            "for g, v in zip(grads, model.trainable_variables):\n"
            "    opt.apply_gradients([(g, v)])"
        ),
        use_instead="Call `apply_gradients` once per step with all pairs; use one optimizer per model in a GAN.",
        static_twins=("GRD002", "GRD003"),
    ),
    RuntimeCheck(
        code="GRD104",
        name="non-finite-gradient",
        what="Reports NaN or Inf values in a gradient.",
        why="One non-finite gradient poisons the variable and, through the optimizer's slots, every later step.",
        example="loss = tf.math.log(probabilities)  # log(0) = -inf, gradient inf",
        use_instead="Use numerically stable losses (`from_logits=True`), clip inputs of log/sqrt, check the data.",
        static_twins=("GRD014",),
    ),
    RuntimeCheck(
        code="GRD105",
        name="exploding-gradient",
        what=(
            "Reports a global gradient norm above a bound, or far above its running median while not far "
            "below the run's own scale (the largest norm seen before it)."
        ),
        why="Exploding gradients make single steps destroy what training learned; loss spikes or goes NaN.",
        example="opt = keras.optimizers.SGD(learning_rate=10.0)  # no clipping, deep RNN",
        use_instead="Lower the learning rate, add `global_clipnorm=`, or normalise the inputs.",
        static_twins=("GRD005",),
    ),
    RuntimeCheck(
        code="GRD106",
        name="vanishing-gradient",
        what="Reports a variable whose gradient norm stays below a tiny bound on most steps.",
        why="Such a variable barely moves: early layers of a deep network stop learning.",
        example="keras.layers.Dense(64, activation='sigmoid')  # stacked 30 deep",
        use_instead="Use ReLU-family activations, residual connections, normalisation, or a better initialisation.",
    ),
    RuntimeCheck(
        code="GRD107",
        name="clipping-saturated",
        what="Reports clipping that is active on nearly every step.",
        why=(
            "When the clip bound is always hit, only the gradient's direction reaches the optimizer and "
            "the bound sets every update's size. With SGD-like optimizers that is a hidden learning-rate "
            "cut; with Adam-family optimizers (Adam, AdamW, RMSprop, Adagrad, Lion ...) a constant scale "
            "mostly cancels in the update, so the clip does little but hide the real gradient scale and "
            "stops bounding the rare spikes it was meant for."
        ),
        example="opt = keras.optimizers.SGD(0.1, global_clipnorm=1e-3)",
        use_instead="Raise the clip bound to above the typical gradient norm (the audit reports it).",
    ),
    RuntimeCheck(
        code="GRD108",
        name="variable-set-changed",
        what=(
            "Reports one optimizer applied to variable sets that change between steps in a way that is "
            "not a freeze or unfreeze: a set that is neither a subset nor a superset of the one before "
            "it, or sets alternating step by step. Freezing layers between phases (`layer.trainable = "
            "False`, compile again with the same optimizer) is not reported."
        ),
        why=(
            "Keras 3 optimizers build their slots for the first variable set and raise 'Unknown variable' "
            "or silently share state between the sets; one `iterations` counter serves both."
        ),
        example=(
            "opt.apply_gradients(zip(g_grads, generator.trainable_variables))\n"
            "opt.apply_gradients(zip(d_grads, discriminator.trainable_variables))"
        ),
        use_instead="Use one optimizer object per variable set.",
        static_twins=("GRD002",),
    ),
    RuntimeCheck(
        code="GRD109",
        name="clipping-per-replica",
        what=(
            "Reports an optimizer under `tf.distribute` whose applied (all-reduced) gradient norm exceeds "
            "its configured `global_clipnorm` or `clipnorm`."
        ),
        why=(
            "Keras 3 clips each replica's gradients inside `apply`, before the cross-replica sum: with N "
            "replicas the applied norm can reach N times the bound (measured: `global_clipnorm=0.01` on 2 "
            "replicas applied 0.0199). The clip no longer bounds the update, and the effective bound changes "
            "with the number of devices."
        ),
        example=(
            "with strategy.scope():\n"
            "    opt = keras.optimizers.SGD(0.1, global_clipnorm=1.0)\n"
            "def replica_step(x, y):\n"
            "    with tf.GradientTape() as tape:\n"
            "        loss = loss_fn(y, model(x)) / global_batch\n"
            "    grads = tape.gradient(loss, model.trainable_variables)\n"
            "    opt.apply_gradients(zip(grads, model.trainable_variables))  # clips per replica\n"
            "strategy.run(replica_step, args=(x, y))"
        ),
        use_instead=(
            "All-reduce first, then clip: sum the gradients with `tf.distribute.get_replica_context()."
            "all_reduce`, clip the sum with `tf.clip_by_global_norm`, and apply without optimizer clipping; "
            "or divide the bound by `strategy.num_replicas_in_sync` knowingly."
        ),
        static_twins=("GRD016",),
    ),
    RuntimeCheck(
        code="GRD110",
        name="clip-result-discarded",
        what=(
            "Reports an optimizer given the very gradient tensors that went into your own "
            "`tf.clip_by_norm`, `tf.clip_by_global_norm` or `tf.clip_by_value`, instead of the clip's result."
        ),
        why=(
            "The clip's result is discarded: the unclipped gradients are applied, so the clip bounds "
            "nothing and an exploding step goes through whole."
        ),
        example=(
            "grads = tape.gradient(loss, model.trainable_variables)\n"
            "for g in grads:\n"
            "    tf.clip_by_norm(g, 15.0)   # result dropped\n"
            "opt.apply_gradients(zip(grads, model.trainable_variables))"
        ),
        use_instead="Apply the clip's result: `grads = [tf.clip_by_norm(g, 15.0) for g in grads]`.",
        static_twins=("GRD005",),
    ),
)

RUNTIME_BY_CODE = {check.code: check for check in RUNTIME_CHECKS}
