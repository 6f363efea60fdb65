"""Helpers for the auditor tests: tiny seeded Keras models, data and training loops."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

CUSTOM_MODES = ["eager", "function", "xla"]
FIT_MODES = [
    pytest.param({"steps_per_execution": 1, "jit_compile": False}, id="fit"),
    pytest.param({"steps_per_execution": 3, "jit_compile": False}, id="fit-spe3"),
    pytest.param({"steps_per_execution": 3, "jit_compile": True}, id="fit-spe3-xla"),
]


def data(n=32, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 4).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]], "float32") + 0.1).astype("float32")
    return x, y


def run_steps(step, steps, watched):
    """Call ``step`` ``steps`` times, inside ``auditor.watch(summary=False, check_changes="every")``
    when ``watched``; returns the audit (None when not watched)."""
    if not watched:
        for _ in range(steps):
            step()
        return None
    import auditor

    with auditor.watch(summary=False, check_changes="every") as audit:
        for _ in range(steps):
            step()
    return audit


def data_tensors(nan=False, scale=1.0):
    """``data()`` as tensors; ``nan``: one NaN in the input, ``scale``: the targets scaled."""
    x, y = data()
    if nan:
        x[3, 1] = np.nan
    return tf.constant(x), tf.constant(y * np.float32(scale))


class Net(keras.Model):
    """Two-branch regressor: out(a(x)) + b_scale * b(x); ``use_b=False`` leaves b unused."""

    def __init__(self, b_scale=1.0, use_b=True, b_init=None, **kwargs):
        super().__init__(**kwargs)
        self.a = keras.layers.Dense(8, activation="relu", name="a")
        self.out = keras.layers.Dense(1, name="out")
        init = keras.initializers.Constant(b_init) if b_init is not None else "glorot_uniform"
        self.b = keras.layers.Dense(1, kernel_initializer=init, bias_initializer="zeros", name="b")
        self.b_scale = b_scale
        self.use_b = use_b

    def build(self, input_shape):
        self.a.build(input_shape)
        self.out.build((None, 8))
        self.b.build(input_shape)

    def call(self, x):
        y = self.out(self.a(x))
        if self.use_b:
            y = y + self.b_scale * self.b(x)
        return y


def make_net(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    model = Net(**kwargs)
    model.build((None, 4))
    return model


def mse(model, x, y):
    return tf.reduce_mean(tf.square(model(x) - y))


def standard_step(model, opt, x, y, variables=None):
    """One ordinary custom-loop step."""
    variables = model.trainable_variables if variables is None else variables
    with tf.GradientTape() as tape:
        loss = mse(model, x, y)
    grads = tape.gradient(loss, variables)
    opt.apply_gradients(zip(grads, variables))
    return loss


def per_variable_train_step(model, data):
    """A custom ``train_step`` that applies each variable separately (the GRD103 bug); the same
    code serves Keras 3 and tf_keras models."""
    x, y = data
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
    grads = tape.gradient(loss, model.trainable_variables)
    for g, v in zip(grads, model.trainable_variables):
        model.optimizer.apply_gradients([(g, v)])
    return {"loss": loss}


def compile_step(body, mode):
    """``body`` as is (eager), in a tf.function, or in a jit-compiled tf.function."""
    if mode == "eager":
        return body
    return tf.function(body, jit_compile=(mode == "xla"))


def codes(audit):
    return sorted({f.code for f in audit.findings})
