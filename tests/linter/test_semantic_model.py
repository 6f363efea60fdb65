"""The semantic model's facts, read directly: imports, tapes, gradient sources, optimizers."""
from __future__ import annotations

import libcst as cst
import pytest

from gradlint.semantic import build_model
from gradlint.semantic.tfapi import KIND_KERAS, KIND_TF1, KIND_TF_KERAS


def model_of(source: str):
    return build_model(cst.parse_module(source))


@pytest.mark.parametrize("imports,expression", [
    ("import tensorflow as tf", "tf.keras.optimizers.Adam"),
    ("import keras", "keras.optimizers.Adam"),
    ("from tensorflow import keras", "keras.optimizers.Adam"),
    ("from tensorflow.keras.optimizers import Adam", "Adam"),
    ("from keras import optimizers", "optimizers.Adam"),
    ("from tensorflow.keras import optimizers as o", "o.Adam"),
    ("import tensorflow.compat.v2 as tf", "tf.keras.optimizers.Adam"),
])
def test_keras_spellings_resolve_to_one_name(imports, expression) -> None:
    model = model_of(f"{imports}\nopt = {expression}(1e-3)\nopt.apply_gradients(pairs)\n")
    (info,) = list(model.optimizers)
    assert info.class_name == "keras.optimizers.Adam"
    assert info.kind == KIND_KERAS


@pytest.mark.parametrize("source,kind,stateless", [
    ("import tensorflow.compat.v1 as tf\nopt = tf.train.AdamOptimizer()", KIND_TF1, False),
    ("import tensorflow as tf\nopt = tf.compat.v1.train.GradientDescentOptimizer(0.1)", KIND_TF1, True),
    ("import tf_keras\nopt = tf_keras.optimizers.Adam()", KIND_TF_KERAS, False),
    ("import keras\nopt = keras.optimizers.legacy.SGD()", KIND_TF_KERAS, False),
    ("import keras\nopt = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD())", KIND_KERAS, False),
])
def test_optimizer_kinds(source, kind, stateless) -> None:
    outermost = list(model_of(source + "\n").optimizers)[-1] if "LossScale" not in source \
        else list(model_of(source + "\n").optimizers)[0]
    assert outermost.kind == kind
    assert outermost.stateless == stateless


def test_names_used_as_optimizers_become_implicit_optimizers() -> None:
    model = model_of(
        "def step(optimizer, grads, model):\n"
        "    optimizer.apply_gradients(zip(grads, model.trainable_variables))\n"
        "    optimizer.apply_gradients(zip(grads, model.trainable_weights))\n"
        "m.compile(optimizer=shared_opt)\n"
    )
    infos = list(model.optimizers)
    assert len(infos) == 2 and all(i.implicit for i in infos)
    calls = list(model.optimizer_calls)
    assert calls[0].optimizer is calls[1].optimizer
    assert calls[0].vars_text == calls[1].vars_text == "model.trainable_variables"


def test_tapes_persistent_and_several_in_one_with() -> None:
    model = model_of(
        "import tensorflow as tf\n"
        "with tf.GradientTape() as a, tf.GradientTape(persistent=True) as b:\n"
        "    y = f(x)\n"
        "    inner = a.gradient(y, w)\n"
        "da = b.gradient(y, w)\n"
        "db = b.jacobian(y, w)\n"
    )
    tapes = list(model.tapes)
    assert [(t.name, t.persistent) for t in tapes] == [("a", False), ("b", True)]
    sources = list(model.gradient_sources)
    assert [(s.api, s.tape.name, s.inside_own_tape) for s in sources] == [
        ("tape.gradient", "a", True), ("tape.gradient", "b", False), ("tape.jacobian", "b", False)]


def test_gradient_flows_through_unpacking_zip_indexing_and_parameters() -> None:
    model = model_of(
        "import tensorflow as tf\n"
        "def helper(gs):\n"
        "    return [tf.abs(x) for x in gs]\n"
        "grads = tape_a.gradient(loss, model.trainable_variables)\n"
        "first, *rest = grads\n"
        "a = tf.sqrt(first)\n"
        "pairs = list(zip(grads, model.trainable_variables))\n"
        "b = [tf.sign(p[0]) for p in pairs]\n"
        "helper(grads)\n"
    )
    lines = sorted(model.line_of(use.node) for use in model.element_uses)
    assert lines == [3, 6, 8]


def test_unconnected_zero_and_watched_inputs_are_not_none() -> None:
    model = model_of(
        "import tensorflow as tf\n"
        "g1 = tf.gradients(loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)\n"
        "g2 = tf.gradients(loss, params, unconnected_gradients='zero')\n"
        "g3 = tf.gradients(loss, params)\n"
        "with tf.GradientTape() as t:\n"
        "    t.watch(xs)\n"
        "    y = f(xs)\n"
        "g4 = t.gradient(y, xs)\n"
    )
    assert [s.may_be_none for s in model.gradient_sources] == [False, False, True, False]


def test_local_names_shadow_imports() -> None:
    model = model_of(
        "import tensorflow as tf\n"
        "def f(tf):\n"
        "    return tf.gradients(a, b)\n"
    )
    assert list(model.gradient_sources) == []


def test_positions_are_computed_only_when_asked() -> None:
    model = model_of("import tensorflow as tf\ngrads = tf.gradients(loss, params)\n")
    assert model._positions is None
    (source,) = list(model.gradient_sources)
    assert model.line_of(source.node) == 2
    assert model._positions is not None


@pytest.mark.parametrize("path", ["fixtures/example/train_partial_update.py", "gradlint/semantic/calls.py"])
def test_fast_positions_match_libcst_position_provider(path) -> None:
    from pathlib import Path

    from libcst.metadata import MetadataWrapper, PositionProvider

    from gradlint.semantic.positions import compute_positions, to_range

    source = (Path(__file__).resolve().parents[2] / path).read_text()
    source = source.replace("\n", "\r\n", 3)  # mixed newlines too
    module = cst.parse_module(source)
    expected = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    ours = compute_positions(module)
    differing = [node for node, span in expected.items()
                 if not isinstance(node, cst.Module) and to_range(ours[node]) != span]
    assert differing == []
    assert len(ours) == len(expected)
