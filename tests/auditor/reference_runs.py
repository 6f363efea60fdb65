"""Small recorded runs whose JSONL and TensorBoard output are kept as fixtures
(``tests/auditor/reference/``), so a change of the auditor's inside can be checked to leave its
output alone, field by field (``test_audit_reference.py``).

Each run writes ``<name>.jsonl`` and a logdir; ``tensorboard_digest`` turns the logdir into
JSON (tag -> [[step, value], ...], wall times left out). Re-record the fixtures only when the
output is meant to change:

    python tests/auditor/reference_runs.py tests/auditor/reference
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def split_cpu():
    """Two logical CPUs for the tf.distribute run (before TensorFlow initialises its devices)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    if tf.config.get_logical_device_configuration(cpu) is None:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])


def _data(n=32, seed=0):
    import numpy as np

    rng = np.random.RandomState(seed)
    x = rng.randn(n, 4).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]], "float32") + 0.1).astype("float32")
    return x, y


def _net(name, seed, use_b=True):
    """Two branches, out(a(x)) + b(x); ``use_b=False`` leaves b built but unused (None gradients)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,), name=f"{name}_x")
    hidden = keras.layers.Dense(8, activation="relu", name=f"{name}_a")(inputs)
    out = keras.layers.Dense(1, name=f"{name}_out")(hidden)
    b = keras.layers.Dense(1, name=f"{name}_b")
    if use_b:
        out = out + b(inputs)
    model = keras.Model(inputs, out, name=name)
    if not use_b:
        b.build((None, 4))
        model.b_unused = b  # tracked: its variables are in trainable_variables
    return model


def _run_keras3(out_dir):
    """Keras 3 custom loops: eager and tf.function on one apply site, optimizer clipping (GRD107),
    a None gradient (GRD101), a per-variable apply loop (GRD103), user clipping, NaN (GRD104)."""
    import numpy as np
    import tensorflow as tf
    import keras

    import auditor

    x, y = (tf.constant(a) for a in _data())
    x_nan = x.numpy().copy()
    x_nan[3, 1] = np.nan
    x_nan = tf.constant(x_nan)

    clipped = _net("clipped", 0, use_b=False)
    adam = keras.optimizers.Adam(1e-3, global_clipnorm=1e-3, name="adam_clip")
    loop = _net("loop", 1)
    sgd = keras.optimizers.SGD(0.01, name="sgd_loop")
    sgd.build(loop.trainable_variables)
    user = _net("user", 2)
    sgd_user = keras.optimizers.SGD(0.01, name="sgd_user")
    nan = _net("nan", 3)
    sgd_nan = keras.optimizers.SGD(0.01, name="sgd_nan")

    def loss_of(model, xb):
        return tf.reduce_mean(tf.square(model(xb) - y))

    def clipped_step():
        variables = clipped.trainable_variables
        with tf.GradientTape() as tape:
            loss = loss_of(clipped, x)
        adam.apply_gradients(zip(tape.gradient(loss, variables), variables))

    @tf.function
    def loop_step():
        variables = loop.trainable_variables
        with tf.GradientTape() as tape:
            loss = loss_of(loop, x)
        for g, v in zip(tape.gradient(loss, variables), variables):
            sgd.apply_gradients([(g, v)])

    @tf.function
    def user_step():
        variables = user.trainable_variables
        with tf.GradientTape() as tape:
            loss = loss_of(user, x)
        grads, _ = tf.clip_by_global_norm(tape.gradient(loss, variables), 0.5)
        sgd_user.apply_gradients(zip(grads, variables))

    def nan_step():
        variables = nan.trainable_variables
        with tf.GradientTape() as tape:
            loss = loss_of(nan, x_nan)
        sgd_nan.apply_gradients(zip(tape.gradient(loss, variables), variables))

    clipped_function = tf.function(clipped_step)
    with auditor.watch(summary=False, jsonl=os.path.join(out_dir, "keras3.jsonl"),
                       logdir=os.path.join(out_dir, "keras3_tb"), histogram_every=4):
        for _ in range(3):
            clipped_step()
        for _ in range(9):
            clipped_function()
        for _ in range(3):
            loop_step()
        for _ in range(4):
            user_step()
        for _ in range(3):
            nan_step()


def _run_fit(out_dir):
    """Keras 3 ``model.fit`` with ``steps_per_execution=2`` (clean: no findings)."""
    import keras

    import auditor

    x, y = _data()
    model = _net("fitted", 4)
    model.compile(keras.optimizers.Adam(0.01, name="adam_fit"), "mse", steps_per_execution=2)
    with auditor.watch(model, summary=False, jsonl=os.path.join(out_dir, "fit.jsonl"),
                       logdir=os.path.join(out_dir, "fit_tb"), histogram_every=3):
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)


def _run_distribute(out_dir, strategy):
    """``strategy.run`` custom loop on two replicas with ``global_clipnorm`` (GRD109)."""
    import tensorflow as tf
    import keras

    import auditor

    x, y = _data(64)
    with strategy.scope():
        model = _net("mirrored", 5)
        opt = keras.optimizers.SGD(0.05, global_clipnorm=0.01, name="sgd_mirrored")
    ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(16))

    @tf.function
    def step(xb, yb):
        def replica_step(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(model(xb) - yb)) / 16
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
        strategy.run(replica_step, args=(xb, yb))

    with auditor.watch(summary=False, jsonl=os.path.join(out_dir, "distribute.jsonl"),
                       logdir=os.path.join(out_dir, "distribute_tb"), histogram_every=2):
        for xb, yb in ds:
            step(xb, yb)


def _run_tf_keras(out_dir):
    """tf_keras: the 2.11+ optimizer in a tf.function and a legacy optimizer eagerly; an unused
    layer (GRD101)."""
    import tensorflow as tf
    import tf_keras

    import auditor

    x, y = (tf.constant(a) for a in _data())

    def model(name, aux):
        tf_keras.utils.set_random_seed(3)
        inputs = tf_keras.Input((4,))
        out = tf_keras.layers.Dense(1, name=f"{name}_out")(tf_keras.layers.Dense(8, name=f"{name}_a")(inputs))
        m = tf_keras.Model(inputs, out, name=name)
        if aux:
            with tf.name_scope(name):
                m.aux = tf_keras.layers.Dense(1, name=f"{name}_aux")
                m.aux.build((None, 4))
        return m

    v3, legacy = model("tfk_v3", aux=True), model("tfk_legacy", aux=False)
    opt_v3 = tf_keras.optimizers.Adam(0.01, name="tfk_adam")
    opt_legacy = tf_keras.optimizers.legacy.SGD(0.01, clipnorm=0.1, name="tfk_sgd")

    def step(m, opt):
        variables = m.trainable_variables
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(m(x) - y))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))

    v3_step = tf.function(lambda: step(v3, opt_v3))
    with auditor.watch(summary=False, jsonl=os.path.join(out_dir, "tf_keras.jsonl"),
                       logdir=os.path.join(out_dir, "tf_keras_tb"), histogram_every=2):
        for _ in range(4):
            v3_step()
            step(legacy, opt_legacy)


def _run_tf1(out_dir):
    """TF1 graph mode (``tf.Graph().as_default()``, ``Session.run(train_op)``): Adam with a global
    step, and a variable the loss does not use (GRD101)."""
    import numpy as np
    import tensorflow as tf

    import auditor

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        with auditor.watch(summary=False, jsonl=os.path.join(out_dir, "tf1.jsonl"),
                           logdir=os.path.join(out_dir, "tf1_tb"), histogram_every=2):
            rng = np.random.RandomState(1)
            x_np, y_np = _data(16)
            x, y = tf.constant(x_np), tf.constant(y_np)
            w1 = v1.get_variable("W1", initializer=rng.randn(4, 8).astype("float32") * 0.5)
            b1 = v1.get_variable("b1", initializer=np.zeros(8, "float32"))
            w2 = v1.get_variable("W2", initializer=rng.randn(8, 1).astype("float32") * 0.5)
            unused = v1.get_variable("unused", initializer=np.ones(3, "float32"))
            pred = tf.matmul(tf.nn.relu(tf.matmul(x, w1) + b1), w2)
            loss = tf.reduce_mean(tf.square(pred - y))
            train = v1.train.AdamOptimizer(0.01).minimize(
                loss, var_list=[w1, b1, w2, unused], global_step=v1.train.get_or_create_global_step())
            with v1.Session(graph=graph) as sess:
                sess.run(v1.global_variables_initializer())
                for _ in range(5):
                    sess.run(train)


def record_all(out_dir, strategy):
    """Write every reference run into ``out_dir``; returns their names."""
    os.makedirs(out_dir, exist_ok=True)
    _run_keras3(out_dir)
    _run_fit(out_dir)
    _run_distribute(out_dir, strategy)
    _run_tf_keras(out_dir)
    _run_tf1(out_dir)
    return ["keras3", "fit", "distribute", "tf_keras", "tf1"]


def tensorboard_digest(logdir) -> dict:
    """{tag: [[step, value], ...]} of every event in ``logdir`` (scalars as floats, histograms as
    bucket lists, text as strings), wall times left out."""
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    out = {}
    for tag in sorted(acc.Tags()["tensors"]):
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        values = []
        for event in acc.Tensors(tag):
            array = tensor_util.make_ndarray(event.tensor_proto)
            if array.dtype == object:
                value = array.item().decode()
            else:
                value = np.asarray(array, np.float64).tolist()
            values.append([event.step, value])
        out[tag] = {"plugin": plugin, "values": values}
    return out


def write_digests(out_dir, names) -> None:
    """``<name>.tensorboard.json`` beside each ``<name>.jsonl``; the event files are removed."""
    import shutil

    for name in names:
        logdir = os.path.join(out_dir, f"{name}_tb")
        digest = tensorboard_digest(logdir)
        with open(os.path.join(out_dir, f"{name}.tensorboard.json"), "w", encoding="utf-8") as out:
            out.write("{\n" + ",\n".join(f"{json.dumps(tag)}: {json.dumps(digest[tag])}" for tag in digest)
                      + "\n}\n")
        shutil.rmtree(logdir)


if __name__ == "__main__":
    split_cpu()
    import tensorflow as tf

    target = sys.argv[1]
    devices = tf.config.list_logical_devices("CPU")
    mirrored = tf.distribute.MirroredStrategy([d.name for d in devices[:2]])
    write_digests(target, record_all(target, mirrored))
    print("recorded into", target)
