"""GRD002: an optimizer's variable list replaced, or one optimizer shared by several variable sets."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Optional

from gradlint.rules.base import Report, Rule
from gradlint.semantic import SemanticModel
from gradlint.semantic.records import OptimizerCall
from gradlint.semantic.tfapi import normalize_variables
from gradlint.triggers import OPTIMIZER_STEPS, any_of

_VARIABLE_ATTRIBUTES = frozenset({"variables", "_variables", "var_list", "_var_list", "trainable_variables"})
_APPLY_METHODS = frozenset({"apply_gradients", "apply", "minimize"})


class OptimizerVarListOverwritten(Rule):
    CODE = "GRD002"
    NAME = "optimizer-var-list-overwritten"
    SUMMARY = "Optimizer variable list overwritten, or one optimizer shared by different variable sets"
    RUNTIME_TWINS = ("GRD103", "GRD108")
    TRIGGERS = OPTIMIZER_STEPS + any_of("optimizer_call", "build") + any_of("keyword_reference", "optimizer") \
        + any_of("assigned_attribute", "variables", "_variables", "var_list", "_var_list", "trainable_variables")
    WHAT = (
        "Flags assignments to an optimizer's `variables` / `_variables` / `var_list` / `_var_list` / "
        "`trainable_variables`, and one optimizer object given two different variable sets in one scope: "
        "two `apply_gradients` / `apply` / `minimize` calls with different variables, a second "
        "`optimizer.build(...)`, the same optimizer passed to `compile` of two models, or a stateful "
        "TF1 optimizer (Adam, Momentum, RMSProp, Adagrad...) reused for different `var_list`s — also when the "
        "variables reach `minimize` / `apply_gradients` through a parameter of a function of the file that is "
        "called with different variable lists for the same optimizer."
    )
    WHY = (
        "Keras 3 optimizers own their variables: assigning `optimizer.variables` raises AttributeError "
        "(older Keras silently replaced the list, losing the slots). An optimizer builds its slots for the "
        "first variable set it sees: a second set raises 'Unknown variable' in Keras 3, a second `build` is "
        "ignored silently, and when both sets are known every training step advances `iterations` twice, "
        "so Adam's bias correction and learning-rate schedules run twice too fast. TF1 stateful optimizers "
        "share their beta-power accumulators across `var_list`s the same way. "
        "`tf.compat.v1.train.GradientDescentOptimizer` keeps no state and is not flagged."
    )
    EXAMPLE = (
        "opt = keras.optimizers.Adam(1e-4)\n"
        "opt.apply_gradients(zip(g_grads, generator.trainable_variables))\n"
        "opt.apply_gradients(zip(d_grads, discriminator.trainable_variables))"
    )
    USE_INSTEAD = (
        "g_opt = keras.optimizers.Adam(1e-4)\n"
        "d_opt = keras.optimizers.Adam(1e-4)\n"
        "g_opt.apply_gradients(zip(g_grads, generator.trainable_variables))\n"
        "d_opt.apply_gradients(zip(d_grads, discriminator.trainable_variables))"
    )
    FIX_SAFETY = "No autofix: which optimizer each variable set needs is a design decision."
    INVALID = (
        "import tensorflow as tf\n"
        "optimizer = tf.keras.optimizers.Adam(learning_rate=0.001)\n"
        "optimizer.variables = model.trainable_variables\n",
        "import keras\n"
        "opt = keras.optimizers.Adam()\n"
        "opt.apply_gradients(zip(g_grads, gen.trainable_variables))\n"
        "opt.apply_gradients(zip(d_grads, disc.trainable_variables))\n",
        "import tensorflow.compat.v1 as tf\n"
        "opt = tf.train.AdamOptimizer(0.01)\n"
        "op1 = opt.minimize(loss1, var_list=[w1])\n"
        "op2 = opt.minimize(loss2, var_list=[w2])\n",
        "import tensorflow.compat.v1 as tf\n"
        "opt = tf.train.AdamOptimizer(0.01)\n"
        "def step(loss, var_list):\n"
        "    return opt.minimize(loss, var_list=var_list)\n"
        "g_op = step(g_loss, g_vars)\n"
        "d_op = step(d_loss, d_vars)\n",
    )
    VALID = (
        "import tensorflow.compat.v1 as tf\n"
        "opt = tf.train.GradientDescentOptimizer(0.1)\n"
        "op1 = opt.minimize(loss1, var_list=[w1])\n"
        "op2 = opt.minimize(loss2, var_list=[w2])\n",
        "import keras\n"
        "g_opt = keras.optimizers.Adam()\n"
        "d_opt = keras.optimizers.Adam()\n"
        "g_opt.apply_gradients(zip(g_grads, gen.trainable_variables))\n"
        "d_opt.apply_gradients(zip(d_grads, disc.trainable_variables))\n",
        "import keras\n"
        "opt = keras.optimizers.Adam()\n"
        "for x, y in dataset:\n"
        "    opt.apply_gradients(zip(grads, model.trainable_weights))\n"
        "opt.apply_gradients(zip(grads, model.trainable_variables))\n",
    )

    def check(self, model: SemanticModel) -> Iterator[Report]:
        yield from self._assignments(model)
        yield from self._different_variable_sets(model)
        yield from self._variable_sets_through_parameters(model)
        yield from self._repeated_builds(model)
        yield from self._shared_compiles(model)

    def _assignments(self, model: SemanticModel) -> Iterator[Report]:
        for assignment in model.attribute_assignments:
            if assignment.attr not in _VARIABLE_ATTRIBUTES or assignment.expects_error:
                continue
            info = assignment.receiver_info or model.optimizer_by_key.get(assignment.receiver_key)
            if info is None:
                continue
            yield self.report(
                assignment.node,
                f"assigning `optimizer.{assignment.attr}` does not choose what the optimizer trains "
                "(Keras 3 raises AttributeError; older Keras silently replaces its variables): pass the "
                "variables to `apply_gradients(zip(grads, variables))` instead",
            )

    def _different_variable_sets(self, model: SemanticModel) -> Iterator[Report]:
        groups: dict[tuple[int, object], list[OptimizerCall]] = defaultdict(list)
        for call in model.optimizer_calls:
            if call.method in _APPLY_METHODS and call.vars_text is not None and not call.optimizer.stateless \
                    and not call.expects_error:
                groups[(id(call.optimizer), call.scope)].append(call)
        for calls in groups.values():
            seen = [calls[0].vars_text]
            for call in calls[1:]:
                if call.vars_text in seen:
                    continue
                seen.append(call.vars_text)
                yield self.report(
                    call.node,
                    f"this optimizer already updates `{calls[0].vars_text}` (line {model.line_of(calls[0].node)}); "
                    "giving it "
                    f"`{call.vars_text}` too makes Keras 3 raise 'Unknown variable', or advances "
                    "`iterations` twice per step and shares slot state: use one optimizer per variable set",
                )

    def _variable_sets_through_parameters(self, model: SemanticModel) -> Iterator[Report]:
        """``def step(loss, var_list): return opt.minimize(loss, var_list=var_list)`` called with different
        variable lists for the same optimizer."""
        sites_by_function: dict[int, list] = defaultdict(list)
        for site in model.call_sites:
            sites_by_function[id(site.function)].append(site)
        for call in model.optimizer_calls:
            parameter = call.vars_parameter
            if parameter is None or call.method not in _APPLY_METHODS or call.optimizer.stateless \
                    or call.expects_error or call.context is None:
                continue
            groups: dict[object, list] = defaultdict(list)
            for site in sites_by_function.get(id(call.context.node), []):
                if parameter not in site.arguments:
                    continue
                owner = site.arguments.get(call.receiver_parameter) if call.receiver_parameter else None
                if call.receiver_parameter is not None and owner is None:
                    continue
                groups[_text(model, owner)].append(site)
            for sites in groups.values():
                first = _text(model, sites[0].arguments[parameter])
                seen = [first]
                for site in sites[1:]:
                    text = _text(model, site.arguments[parameter])
                    if text in seen:
                        continue
                    seen.append(text)
                    yield self.report(
                        site.node,
                        f"`{call.context.name}` passes `{parameter}` to one optimizer's `{call.method}` "
                        f"(line {model.line_of(call.node)}); it already got `{first}` (line "
                        f"{model.line_of(sites[0].node)}), now `{text}`: the optimizer shares its slot state "
                        "and `iterations` across both sets: use one optimizer per variable set",
                    )

    def _repeated_builds(self, model: SemanticModel) -> Iterator[Report]:
        first_build: dict[tuple[int, object], OptimizerCall] = {}
        for call in model.optimizer_calls:
            if call.method != "build" or call.expects_error:
                continue
            first = first_build.setdefault((id(call.optimizer), call.scope), call)
            if first is not call:
                yield self.report(
                    call.node,
                    f"this optimizer was already built (line {model.line_of(first.node)}); Keras ignores a "
                    "second `build` silently, so these variables get no slots: build once with every variable",
                )

    def _shared_compiles(self, model: SemanticModel) -> Iterator[Report]:
        first_compile: dict[int, object] = {}
        for call in model.compile_calls:
            if call.expects_error:
                continue
            info = call.optimizer
            if call.loops and info.node is not None:
                loop = call.loops[-1]
                receiver = model.code(call.receiver)
                if receiver in loop.target_names and not any(l is loop for l in info.loops) and not info.implicit:
                    yield self.report(
                        call.node,
                        "one optimizer object is compiled into every model of this loop: the models share "
                        "its slots and `iterations`; create the optimizer inside the loop",
                    )
                    continue
            first = first_compile.setdefault(id(info), call)
            if first is not call and first.model_text != call.model_text:
                yield self.report(
                    call.node,
                    f"this optimizer object is already compiled into `{first.model_text}` "
                    f"(line {model.line_of(first.node)}); two models sharing one optimizer share its slots "
                    "and `iterations`: give each model its own optimizer",
                )


def _text(model: SemanticModel, expr) -> Optional[str]:
    """Canonical text of an argument, to compare variable lists and optimizers passed at call sites."""
    return normalize_variables(model.code(expr)) if expr is not None else None
