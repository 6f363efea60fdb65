"""Messages name what was really compared or lost (not a fixed example)."""
from __future__ import annotations

from gradlint.engine import lint_source
from gradlint.rules import RULES_BY_CODE


def messages(code: str, source: str, target_keras: int = 3) -> list[str]:
    result = lint_source(source, "example.py", [RULES_BY_CODE[code]], target_keras=target_keras)
    assert result.errors == []
    return [v.message for v in result.violations]


def test_grd012_names_the_compared_string() -> None:
    (scoped,) = messages("GRD012", "import keras\nx = [v for v in m.weights if v.name == 'encoder/kernel:0']\n")
    assert "'encoder/kernel:0'" in scoped and "`kernel`" in scoped and "`encoder/kernel`" in scoped
    (bare,) = messages("GRD012", "import keras\nx = [v for v in m.weights if v.name.endswith('bias:0')]\n")
    assert "'bias:0'" in bare and "`bias`" in bare and "path" not in bare.split(",")[0]
    (constant,) = messages("GRD012", "import keras\nFROZEN = ('head/w:0',)\n\n"
                                     "x = [v for v in m.weights if v.name in FROZEN]\n")
    assert "'head/w:0' (line 2)" in constant
    assert messages("GRD012", "import keras\nx = [v for v in m.weights if v.name == 'a/b:0']\n",
                    target_keras=2) == []


def test_grd015_lr_message_depends_on_the_target() -> None:
    source = "import tensorflow as tf\nopt = tf.keras.optimizers.Adam(lr=0.1)\n"
    (keras3,) = messages("GRD015", source)
    (keras2,) = messages("GRD015", source, target_keras=2)
    assert "ValueError" in keras3
    assert "default learning rate" in keras2


def test_grd001_says_which_variable_is_certainly_none() -> None:
    source = ("import tensorflow as tf\n"
              "with tf.GradientTape() as tape:\n"
              "    loss = tf.reduce_sum(x * w)\n"
              "gw, gb = tape.gradient(loss, [w, b])\n"
              "w.assign_sub(0.1 * gw)\n"
              "b.assign_sub(0.1 * gb)\n")
    (message,) = messages("GRD001", source)
    assert "never reads `b`" in message
