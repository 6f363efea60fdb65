"""The semantic model follows values through lists, wrappers, parameters, constants and classes of the file.

These read the model's general facts directly; the rules' fixtures check the findings built on them.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil

import libcst as cst

import gradlint.semantic
from gradlint.prefilter import Prefilter, prefilter_for
from gradlint.rules import ALL_RULES, RULES_BY_CODE
from gradlint.semantic import build_model
from gradlint.semantic.analyzer import Analyzer
from gradlint.semantic.values import Seq, TupleValue
from gradlint.triggers import Word, all_of, any_of


def model_of(source: str, target_keras: int = 3):
    return build_model(cst.parse_module(source), target_keras=target_keras)


def test_explicit_lists_are_checked_variable_by_variable() -> None:
    model = model_of(
        "import tensorflow as tf\n"
        "class Line:\n"
        "    def __init__(self):\n"
        "        self.W = tf.Variable(1.0)\n"
        "        self.b = tf.Variable(0.0)\n"
        "    def __call__(self, x):\n"
        "        return self.W * x + self.b\n"
        "line = Line()\n"
        "with tf.GradientTape() as tape:\n"
        "    loss = tf.reduce_mean(tf.square(line(x) - y))\n"
        "connected = tape.gradient(loss, [line.W, line.b])\n"
        "with tf.GradientTape() as tape:\n"
        "    loss = tf.reduce_sum(x * w)\n"
        "partly = tape.gradient(loss, [w, unused])\n"
        "never = tape.gradient(loss, [agent.w, agent.b])\n"
        "with tf.GradientTape() as tape:\n"
        "    loss = tf.reduce_sum(agent(x))\n"
        "owner = tape.gradient(loss, [agent.w, agent.b])\n"
    )
    connected, partly, never, owner = list(model.gradient_sources)
    assert not connected.may_be_none and connected.unconnected == ()
    assert partly.may_be_none and partly.unconnected == ("unused",)
    # nothing listed is read: the computation that reads them is out of sight, so not a certain None
    assert never.may_be_none and never.unconnected == ()
    assert owner.may_be_none and owner.unconnected == ()  # `agent(x)` may read them: maybe, not certain


def test_losses_gathered_elsewhere_make_unread_variables_uncertain() -> None:
    model = model_of(
        "import tensorflow.compat.v1 as tf\n"
        "loss = tf.reduce_sum(x * w) + tf.losses.get_regularization_loss()\n"
        "a = tf.gradients(loss, [w, b])\n"
        "loss = tf.reduce_sum(x * w) + tf.add_n(model.losses)\n"
        "c = tf.gradients(loss, [w, b])\n"
    )
    assert [s.unconnected for s in model.gradient_sources] == [(), ()]
    assert all(s.may_be_none for s in model.gradient_sources)


def test_unused_layers_of_a_keras_class_of_the_file() -> None:
    model = model_of(
        "import keras\n"
        "import tensorflow as tf\n"
        "class Net(keras.Model):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.used = keras.layers.Dense(2)\n"
        "        self.spare = keras.layers.Dense(2)\n"
        "        self.frozen = keras.layers.Dense(2, trainable=False)\n"
        "    def call(self, x):\n"
        "        return self.used(x)\n"
        "net = Net()\n"
        "grads = tape.gradient(loss, net.trainable_variables)\n"
        "norms = [tf.norm(g) for g in grads]\n"
    )
    (source,) = list(model.gradient_sources)
    assert source.unused_layers == ("net.spare",) and source.unconnected == ()
    (use,) = list(model.element_uses)
    assert use.certain_none == ("net.spare",)
    handed_over = model_of(
        "import keras\n"
        "import tensorflow as tf\n"
        "class Net(keras.Model):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.spare = keras.layers.Dense(2)\n"
        "    def call(self, x):\n"
        "        return x\n"
        "def step(net, x):\n"
        "    loss = external_loss(net, x)  # might use net.spare\n"
        "    grads = tape.gradient(loss, net.trainable_variables)\n"
        "    return [tf.norm(g) for g in grads]\n"
        "step(Net(), x)\n"
    )
    assert [s.unused_layers for s in handed_over.gradient_sources] == [()]


def test_lists_hold_what_is_written_into_them() -> None:
    model = model_of(
        "import tensorflow.compat.v1 as tf\n"
        "pairs = opt.compute_gradients(loss)\n"
        "for i, (g, v) in enumerate(pairs):\n"
        "    if g is not None:\n"
        "        pairs[i] = (tf.clip_by_norm(g, 1.0), v)\n"
        "opt.apply_gradients(pairs)\n"
        "capped = []\n"
        "for g, v in opt.compute_gradients(loss):\n"
        "    capped.append((tf.clip_by_value(g, -1.0, 1.0), v))\n"
        "opt.apply_gradients(capped)\n"
    )
    written, appended = [call for call in model.optimizer_calls if call.method == "apply_gradients"]
    assert written.gradient.clipped and written.gradient.may_be_none  # unwritten positions may still be None
    assert isinstance(appended.pairs, Seq) and appended.gradient.clipped


def test_zip_wrappers_and_zip_of_a_list_of_lists() -> None:
    model = model_of(
        "import tensorflow as tf\n"
        "def zipsame(*seqs):\n"
        "    return zip(*seqs)\n"
        "def pairs_of(a, b):\n"
        "    return list(zip(a, b))\n"
        "grads = tf.gradients(loss, var_list)\n"
        "x = [g * t for g, t in zipsame(grads, tangents)]\n"
        "y = [g * t for g, t in pairs_of(grads, tangents)]\n"
        "towers = []\n"
        "towers.append(opt.compute_gradients(loss))\n"
        "for grad_and_vars in zip(*towers):\n"
        "    for g, _ in grad_and_vars:\n"
        "        z = tf.expand_dims(g, 0)\n"
    )
    lines = sorted(model.line_of(use.node) for use in model.element_uses)
    assert lines == [7, 8, 13]


def test_optimizers_through_parameters_and_models() -> None:
    model = model_of(
        "import tensorflow as tf\n"
        "def apply_each(opt, grads, variables):\n"
        "    for g, v in zip(grads, variables):\n"
        "        opt.apply_gradients([(g, v)])\n"
        "class Net(tf.keras.Model):\n"
        "    def train_step(self, data):\n"
        "        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)\n"
        "class Log(tf.keras.callbacks.Callback):\n"
        "    def on_epoch_end(self, epoch, logs=None):\n"
        "        print(self.model.optimizer.lr)\n"
    )
    per_variable = next(c for c in model.optimizer_calls if c.method == "apply_gradients")
    assert per_variable.loops and per_variable.loops[-1].over_variables and per_variable.single_pair
    (minimize,) = [c for c in model.method_calls if c.method == "minimize"]
    assert minimize.optimizer.model_owned and minimize.optimizer.kind == "keras" and minimize.context.train_step
    (read,) = list(model.optimizer_attributes)
    assert read.attr == "lr" and read.optimizer.model_owned


def test_string_tests_follow_constants_defaults_and_patterns() -> None:
    model = model_of(
        "import re\n"
        "FROZEN = ('a/kernel:0', 'a/bias:0')\n"
        "PATTERN = re.compile(r'.*kernel:0$')\n"
        "def decay(model, regex=r'.*weight:0$'):\n"
        "    p = re.compile(regex)\n"
        "    return [v for v in model.trainable_variables if p.match(v.name)]\n"
        "x = [v for v in model.trainable_variables if v.name not in FROZEN]\n"
        "y = [v for v in model.variables if PATTERN.search(v.name)]\n"
        "z = [v for v in model.variables if 'head' in v.name]\n"
    )
    tests = {(model.line_of(t.node), t.operation, t.strings) for t in model.string_tests}
    assert tests == {
        (6, "regex", (".*weight:0$",)),
        (7, "in", ("a/kernel:0", "a/bias:0")),
        (8, "regex", (".*kernel:0$",)),
        (9, "contains", ("head",)),
    }


def test_call_sites_name_their_arguments_by_parameter() -> None:
    model = model_of(
        "import tensorflow.compat.v1 as tf\n"
        "opt = tf.train.AdamOptimizer()\n"
        "def step(loss, var_list):\n"
        "    return opt.minimize(loss, var_list=var_list)\n"
        "step(g_loss, g_vars)\n"
        "step(d_loss, var_list=d_vars)\n"
    )
    assert [{name: model.code(arg) for name, arg in site.arguments.items()} for site in model.call_sites] == [
        {"loss": "g_loss", "var_list": "g_vars"}, {"loss": "d_loss", "var_list": "d_vars"}]
    (call,) = list(model.optimizer_calls)
    assert call.vars_parameter == "var_list"


def test_iterations_record_each_use_as_a_sequence() -> None:
    model = model_of(
        "import tensorflow as tf\n"
        "pairs = zip(grads, model.trainable_variables)\n"
        "names = [v.name for g, v in pairs]\n"
        "opt.apply_gradients(pairs)\n"
        "clipped = tf.clip_by_global_norm(grads, 1.0)\n"
        "zip(clipped, model.trainable_variables)\n"
    )
    kinds = [(model.line_of(i.node), i.lazy, i.apply, type(i.value).__name__) for i in model.iterations]
    assert (3, False, False, "Seq") in kinds and (4, False, True, "Seq") in kinds
    assert any(line == 6 and lazy and kind == "TupleValue" for line, lazy, _, kind in kinds)


# ------------------------------------------------------------------------- shape of the semantic layer
def test_semantic_model_knows_no_rule() -> None:
    for info in pkgutil.iter_modules(gradlint.semantic.__path__):
        module = importlib.import_module(f"gradlint.semantic.{info.name}")
        tree = ast.parse(open(module.__file__, encoding="utf-8").read())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert not any(name.startswith(("gradlint.rules", "gradlint.fixes")) for name in imported), info.name
        assert "GRD0" not in open(module.__file__, encoding="utf-8").read(), info.name


def test_analyzer_is_composed_not_mixed_in() -> None:
    assert Analyzer.__mro__ == (Analyzer, object)
    analyzer = Analyzer(cst.parse_module("x = 1\n"), build_model(cst.parse_module("")))
    assert analyzer.evaluator.calls is analyzer.calls and analyzer.calls.evaluator is analyzer.evaluator
    assert analyzer.evaluator.state is analyzer.calls.state is analyzer.binder.state


# --------------------------------------------------------------------------------------- prefilter
def test_every_rule_declares_its_trigger_words() -> None:
    for rule in ALL_RULES:
        assert rule.TRIGGERS, rule.CODE
        assert all(isinstance(word, Word) for alternative in rule.TRIGGERS for word in alternative), rule.CODE


def test_prefilter_is_built_from_the_selected_rules_words() -> None:
    only_clipping = prefilter_for((RULES_BY_CODE["GRD016"],))
    gradient_code = "import tensorflow as tf\ngrads = tape.gradient(loss, model.trainable_variables)\n"
    assert not only_clipping.might_report(gradient_code)
    assert only_clipping.might_report("import keras\nopt = keras.optimizers.Adam(clipnorm=1.0)\n")
    assert prefilter_for(tuple(ALL_RULES)).might_report(gradient_code)


def test_compound_alternatives_need_every_word() -> None:
    prefilter = Prefilter(any_of("call", "gradient") + all_of(Word("attribute", "variables"), Word("name_test")))
    assert prefilter.might_report("x = tape.gradient(y, w)\n")
    assert not prefilter.might_report("for v in model.variables:\n    print(v)\n")
    assert not prefilter.might_report("if layer.name == 'head':\n    pass\n")
    assert prefilter.might_report("s = [v for v in model.variables if 'head' in v.name]\n")


def test_a_rule_without_triggers_is_never_prefiltered_away() -> None:
    class Anything(ALL_RULES[0]):
        TRIGGERS = None

    assert prefilter_for((Anything,)).might_report("print('no gradient code at all')\n")


def test_value_classes_carry_no_rule_verdicts() -> None:
    # the facts rules build verdicts from are general: no record or value names a rule's finding
    import gradlint.semantic.records as records

    names = {name for name in dir(records) if name[0].isupper()}
    assert not names & {"GlobalClipMisuse", "PairingMismatch", "IteratorReuse", "VariableNameFilter"}
    assert TupleValue((None,)).items == (None,)


def test_word_kinds_that_look_at_context() -> None:
    removed_api = prefilter_for((RULES_BY_CODE["GRD015"],))
    assert removed_api.might_report("opt = tf.keras.optimizers.Adam(lr=1e-3)\n")
    assert not removed_api.might_report("schedule = make_schedule(lr=1e-3)\nlr = 0.1\n")
    assert removed_api.might_report("class Mine(tf.keras.optimizers.Optimizer):\n"
                                    "    def _create_slots(self, var_list):\n        pass\n")
    assert not removed_api.might_report("class Cache(Base):\n    def _create_slots(self, n):\n        pass\n")
    names = prefilter_for((RULES_BY_CODE["GRD012"],))
    assert names.might_report("keep = [v for v in vs if v.name == 'dense/kernel:0']\n")
    assert names.might_report("pattern = re.compile(r'.*kernel:0$')\n")
    assert not names.might_report("device = '/job:worker/task:0/device:CPU'\n")
