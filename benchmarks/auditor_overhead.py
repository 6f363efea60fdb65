"""Auditor overhead: step time with ``auditor.watch()`` over without, and microseconds added per step.

One process; for each row the baseline (no watch), the defaults (``check_changes="auto"``),
``check_changes="every"``, ``every=10`` (one step in ten recorded) and, in ``tf.function`` rows, a
hand-written ``tf.linalg.global_norm`` (no watch: the floor for any per-step norm) are run round by
round, interleaved, each in its own model copy. A round times a block of steps after warm-up steps
(12; 120 with ``every=10``: the first 10 recorded steps of a watch compare every variable, a TF1
session's first run of the train op without its change check (step 10; 110) builds that op's
executor once, and the block times the steady state that follows) (the loss is summed
on the device and read once at the end of the block, so nothing is pruned and host points are
those of a real loop); a watched block ends by reading its records (``audit.steps``), so the
host's share of each record counts even when no drain fell inside the block (``fit``: added to
its per-batch median, spread over the steps); ratios are of the medians over rounds. The ``20,000-step process`` row runs
a whole Python process (import, trace, 20,000 ``tf.function`` steps of the tiny MLP, exit) with and
without a watch, alternately, and compares their wall times; the ``20,000-step raise_on`` row watches with
``raise_on="GRD104"`` (rows read after every call, checked as they arrive, over twice ``history``).

Rows: a tiny MLP (8-16-1, batch 16; eager, ``tf.function``, ``fit``), a small CNN, a ~4.8M-parameter
MLP (``tf.function`` and ``fit``, XLA off and on) and TF1 ``Session.run(train_op)`` (those models and a
two-optimizer GAN: a step runs both train ops, fed through placeholders).

    python benchmarks/auditor_overhead.py                 # every row
    python benchmarks/auditor_overhead.py --quick         # fewer rounds and steps
    python benchmarks/auditor_overhead.py --rows tiny     # rows whose name contains "tiny"
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

# variant -> watch() keyword arguments (None: no watch)
VARIANTS = {
    "base": None,
    "auto": {},  # the defaults
    "every": {"check_changes": "every"},
    "auto/10": {"every": 10},  # record every 10th step
}
HAND = "hand-norm"  # no watch; the step computes tf.linalg.global_norm itself (tf.function rows)
# Untimed steps at the start of every round: the first `changes_first_steps` (10) recorded steps
# of a watch compare every variable, and a TF1 session builds the executor of the train op without
# its change check at its first run (the next recorded step: 10, or 110 with `every=10`, 100 being
# a multiple of `changes_period`); time the steady state that follows.
WARMUP = 12


def warmup(kwargs) -> int:
    """Untimed steps before a block of the variant watched with ``kwargs`` (None: no watch)."""
    return WARMUP * (kwargs or {}).get("every", 1)


def tiny():
    """8 -> 16 -> 1: the kind of model a reinforcement-learning or toy-regression loop trains."""
    import keras

    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])


def mlp():
    """784 -> 2048 -> 1536 -> 10: about 4.8M parameters."""
    import keras

    return keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(2048, activation="relu"),
        keras.layers.Dense(1536, activation="relu"),
        keras.layers.Dense(10),
    ])


def cnn():
    import keras

    return keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])


# name -> (Keras builder, input shape, batch, loss): "mse" for the regressor, else 10 classes
MODELS = {
    "tiny-mlp": (tiny, (8,), 16, "mse"),
    "mlp-mnist": (None, (784,), 64, "xent"),  # TF1 rows only: 784 -> 256 -> 10
    "cnn-small": (cnn, (32, 32, 3), 32, "xent"),
    "mlp-4.8M": (mlp, (784,), 64, "xent"),
}


def batch(model_name, seed=0):
    _, shape, size, loss = MODELS[model_name]
    rng = np.random.RandomState(seed)
    x = rng.randn(size, *shape).astype("float32")
    if loss == "mse":
        return x, rng.randn(size, 1).astype("float32")
    return x, rng.randint(0, 10, size=(size,)).astype("int32")


def loss_fn(model_name):
    import keras

    if MODELS[model_name][3] == "mse":
        return keras.losses.MeanSquaredError()
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def build(model_name, jit):
    import keras

    keras.utils.set_random_seed(0)
    model = MODELS[model_name][0]()
    model.compile(keras.optimizers.Adam(1e-4), loss_fn(model_name), jit_compile=jit)
    return model


def make_step(model, model_name, loop, jit, hand_norm=False):
    """The timed train step (``loop``: "function" or "eager"); ``hand_norm``: it also computes the
    global gradient norm itself (``tf.linalg.global_norm``, returned and consumed)."""
    import tensorflow as tf

    compute_loss = loss_fn(model_name)
    opt = model.optimizer

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = compute_loss(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        if hand_norm:
            return loss + tf.linalg.global_norm(grads)
        return loss

    return tf.function(step, jit_compile=jit) if loop == "function" else step


def time_block(step, x, y, steps, audit=None, warm=WARMUP):
    """(wall, process CPU) seconds per step over a block of ``steps`` after ``warm`` steps;
    with ``audit``, reading its records (``audit.steps``) ends the block, so the host's share of
    each record is counted even where no drain fell inside the block (a first read after the
    warm-up steps, untimed, pays the one-time costs a long run pays once)."""
    import tensorflow as tf

    for _ in range(warm):
        step(x, y)
    if audit is not None:
        audit.steps  # the first read builds what later reads reuse
    total = tf.constant(0.0)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        total += step(x, y)
    float(total)  # consume every loss (and wait for the last step)
    if audit is not None:
        audit.steps
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def read_records(audit, steps):
    """(wall, process CPU) seconds per step of reading ``audit``'s records that are still waiting."""
    wall, cpu = time.perf_counter(), time.process_time()
    audit.steps
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


class BatchTimer:
    """A Keras callback timing each batch after ``skip`` (the loss is read at each batch end)."""

    def __new__(cls, skip):
        import keras

        class Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.walls, self.cpus, self.losses = [], [], []

            def on_train_batch_begin(self, batch, logs=None):
                self.start = (time.perf_counter(), time.process_time())

            def on_train_batch_end(self, batch, logs=None):
                loss = float(logs["loss"])  # consume the step's output
                if batch >= skip:
                    self.losses.append(loss)
                    self.walls.append(time.perf_counter() - self.start[0])
                    self.cpus.append(time.process_time() - self.start[1])

        return Timer()


def time_fit(model, x, y, steps, warm=WARMUP):
    """Median (wall, CPU) seconds per ``fit`` batch. (Timing whole ``fit`` blocks gave the unwatched
    baseline of the larger models 0.6x the watched time in some rounds on the shared machine, while
    the CPU-time ratio stayed 1.0-1.1: stalls inside ``fit`` that a per-batch median leaves out.)"""
    n = x.shape[0]
    reps = steps + warm
    xs, ys = np.concatenate([x] * reps), np.concatenate([y] * reps)
    timer = BatchTimer(warm)
    model.fit(xs, ys, batch_size=n, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
    assert np.isfinite(timer.losses).all()
    return statistics.median(timer.walls), statistics.median(timer.cpus)


def rotated(items, k):
    """``items`` starting at position ``k`` (the order of variants changes round by round, so that
    none always runs first or right after another)."""
    items = list(items)
    k %= len(items)
    return items[k:] + items[:k]


def keras_row(model_name, loop, jit, rounds, steps):
    """{variant: [(wall, cpu) per round]} for a Keras 3 model in ``loop`` ("function", "eager", "fit")."""
    import tensorflow as tf

    import auditor

    x, y = batch(model_name)
    variants = dict(VARIANTS)
    models = {v: build(model_name, jit) for v in variants}
    times = {v: [] for v in variants}
    if loop == "fit":
        time_fit(models["base"], x, y, 1)  # trace the baseline once
        for r in range(rounds):
            for v, kwargs in rotated(variants.items(), r):
                if kwargs is None:
                    times[v].append(time_fit(models[v], x, y, steps))
                    continue
                with auditor.watch(models[v], summary=False, **kwargs) as audit:
                    (wall, cpu) = time_fit(models[v], x, y, steps, warmup(kwargs))
                    read, read_cpu = read_records(audit, steps)
                    times[v].append((wall + read, cpu + read_cpu))
                assert audit.steps and not audit.findings, audit.summary()
        return times
    xt, yt = tf.constant(x), tf.constant(y)
    fns = {v: make_step(models[v], model_name, loop, jit) for v in variants}
    if loop == "function":
        models[HAND] = build(model_name, jit)
        fns[HAND] = make_step(models[HAND], model_name, loop, jit, hand_norm=True)
        variants[HAND] = None
        times[HAND] = []
        fns["base"](xt, yt)  # traced outside any watch
        fns[HAND](xt, yt)
        for v, kwargs in variants.items():
            if kwargs is not None:
                with auditor.watch(models[v], summary=False, **kwargs):
                    fns[v](xt, yt)  # traced inside: the hook's ops are in the graph
    for r in range(rounds):
        for v, kwargs in rotated(variants.items(), r):
            if kwargs is None:
                times[v].append(time_block(fns[v], xt, yt, steps))
                continue
            with auditor.watch(models[v], summary=False, **kwargs) as audit:
                times[v].append(time_block(fns[v], xt, yt, steps, audit, warmup(kwargs)))
            expected = len(range(0, warmup(kwargs) + steps, kwargs.get("every", 1)))
            assert abs(len(audit.steps) - expected) <= 1 and not audit.findings, audit.summary()
    return times


def tf1_model(model_name, x_np, y_np):
    """The loss of ``model_name`` written with TF1 variables (``get_variable``) in the current graph."""
    import tensorflow as tf

    v1 = tf.compat.v1
    rng = np.random.RandomState(0)
    h = tf.constant(x_np)

    def var(name, shape):
        return v1.get_variable(name, initializer=(rng.randn(*shape) * 0.1).astype("float32"))

    if model_name == "cnn-small":
        for k, (n, pool) in enumerate([(32, False), (64, True), (64, False)]):
            h = tf.nn.relu(tf.nn.conv2d(h, var(f"c{k}", [3, 3, h.shape[-1], n]), 1, "VALID") + var(f"cb{k}", [n]))
            if pool:
                h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        h = tf.matmul(tf.reduce_mean(h, [1, 2]), var("w", [64, 10])) + var("b", [10])
    else:
        units = {"tiny-mlp": [16, 1], "mlp-mnist": [256, 10], "mlp-4.8M": [2048, 1536, 10]}[model_name]
        for k, n in enumerate(units):
            h = tf.matmul(h, var(f"w{k}", [h.shape[1], n])) + var(f"b{k}", [n])
            if k < len(units) - 1:
                h = tf.nn.relu(h)
    if MODELS[model_name][3] == "mse":
        return tf.reduce_mean(tf.square(h - y_np))
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y_np, logits=h))


def tf1_train_ops(model_name, hand_norm):
    """The TF1 train ops of one step of ``model_name`` in the current graph, and what each run feeds
    (``feeds(k)`` for step ``k``): ``[(train op, feeds)]``. ``hand_norm``: each train op also computes
    ``tf.linalg.global_norm`` of its gradients and keeps it in a variable (grouped with the train op
    and read by nothing, the norm would be pruned from every run by Grappler)."""
    import tensorflow as tf

    v1 = tf.compat.v1

    def train(optimizer, loss, var_list=None):
        grads_and_vars = optimizer.compute_gradients(loss, var_list=var_list)
        op = optimizer.apply_gradients(grads_and_vars)
        if hand_norm:
            kept = tf.Variable(0.0, trainable=False, name="hand_norm")
            op = tf.group(op, kept.assign(tf.linalg.global_norm([g for g, _ in grads_and_vars])))
        return op

    if model_name == "gan-mnist":
        return tf1_gan(train)
    x_np, y_np = batch(model_name)
    op = train(v1.train.AdamOptimizer(1e-4), tf1_model(model_name, x_np, y_np))
    return [(op, lambda k: None)]


def tf1_gan(train):
    """A two-optimizer GAN as TF1 tutorials write it: MNIST-sized batches (128 x 784) and noise
    (128 x 100) fed through placeholders, a discriminator 784-128-1 and a generator 100-128-784
    (ReLU, sigmoid output), an ``AdamOptimizer`` each with its ``var_list``; a step runs the
    discriminator's train op, then the generator's, each with its loss."""
    import tensorflow as tf

    v1 = tf.compat.v1
    rng = np.random.RandomState(0)
    images = (rng.rand(16, 128, 784) > 0.7).astype("float32")  # binarized "digits"
    noise = rng.uniform(-1.0, 1.0, size=(16, 128, 100)).astype("float32")

    def var(name, shape):
        scale = np.sqrt(2.0 / shape[0]) if len(shape) == 2 else 0.0
        return v1.get_variable(name, initializer=(rng.randn(*shape) * scale).astype("float32"))

    x = v1.placeholder(tf.float32, [None, 784])
    z = v1.placeholder(tf.float32, [None, 100])
    with v1.variable_scope("discriminator"):
        d_vars = [var("w1", [784, 128]), var("b1", [128]), var("w2", [128, 1]), var("b2", [1])]
    with v1.variable_scope("generator"):
        g_vars = [var("w1", [100, 128]), var("b1", [128]), var("w2", [128, 784]), var("b2", [784])]

    def mlp2(h, w1, b1, w2, b2):
        return tf.matmul(tf.nn.relu(tf.matmul(h, w1) + b1), w2) + b2

    fake = tf.nn.sigmoid(mlp2(z, *g_vars))
    real_logits, fake_logits = mlp2(x, *d_vars), mlp2(fake, *d_vars)
    xent = tf.nn.sigmoid_cross_entropy_with_logits
    d_loss = tf.reduce_mean(xent(labels=tf.ones_like(real_logits), logits=real_logits)) + \
        tf.reduce_mean(xent(labels=tf.zeros_like(fake_logits), logits=fake_logits))
    g_loss = tf.reduce_mean(xent(labels=tf.ones_like(fake_logits), logits=fake_logits))
    d_train = train(v1.train.AdamOptimizer(2e-4), d_loss, d_vars)
    g_train = train(v1.train.AdamOptimizer(2e-4), g_loss, g_vars)
    return [([d_train, d_loss], lambda k: {x: images[k % 16], z: noise[k % 16]}),
            ([g_train, g_loss], lambda k: {z: noise[(k + 5) % 16]})]


def tf1_row(model_name, rounds, steps):
    """TF1 graph mode: ``Session.run`` of ``AdamOptimizer`` train ops (``tf1_train_ops``). Each round
    builds a fresh graph (inside the watch for watched variants: a TF1 train op is recorded when it
    is built inside the watch) and times ``steps`` steps after the warm-up steps. ``hand-norm``: no
    watch, each train op also keeps ``tf.linalg.global_norm`` of its gradients in a variable."""
    import tensorflow as tf

    import auditor

    v1 = tf.compat.v1
    variants = dict(VARIANTS, **{HAND: None})
    times = {v: [] for v in variants}

    def run(variant, kwargs):
        graph = tf.Graph()
        with graph.as_default():
            watch = auditor.watch(summary=False, **kwargs) if kwargs is not None else None
            if watch is not None:
                watch.__enter__()
            try:
                runs = tf1_train_ops(model_name, variant == HAND)
                with v1.Session(graph=graph) as sess:
                    sess.run(v1.global_variables_initializer())
                    warm = warmup(kwargs)
                    for k in range(warm):
                        for fetches, feeds in runs:
                            sess.run(fetches, feeds(k))
                    if watch is not None:
                        watch.steps  # the session's first read of its ring builds the executor later reads reuse
                    wall, cpu = time.perf_counter(), time.process_time()
                    for k in range(warm, warm + steps):
                        for fetches, feeds in runs:
                            sess.run(fetches, feeds(k))
                    if watch is not None:
                        watch.steps  # reads the session's ring (see time_block)
                    result = ((time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps)
            finally:
                if watch is not None:
                    watch.__exit__(None, None, None)
            if watch is not None:
                expected = len(range(0, warmup(kwargs) + steps, kwargs.get("every", 1))) * len(runs)
                assert abs(len(watch.steps) - expected) <= len(runs) and not watch.findings, watch.summary()
        return result

    for r in range(rounds):
        for v, kwargs in rotated(variants.items(), r):
            times[v].append(run(v, kwargs))
    return times


PROCESS_STEPS = 20_000


def process_main(variant: str, steps: int) -> None:
    """One whole training process (``--process``): the tiny MLP, ``steps`` tf.function steps;
    ``raise_on``: watched with ``raise_on="GRD104"`` (its rows are read after every call)."""
    import tensorflow as tf

    import auditor

    x, y = (tf.constant(a) for a in batch("tiny-mlp"))
    model = build("tiny-mlp", False)
    step = make_step(model, "tiny-mlp", "function", False)
    total = tf.constant(0.0)
    if variant == "base":
        for _ in range(steps):
            total += step(x, y)
    else:
        kwargs = {"raise_on": "GRD104"} if variant == "raise_on" else {}
        with auditor.watch(model, summary=False, **kwargs) as audit:
            for _ in range(steps):
                total += step(x, y)
        # (findings are not checked: 20,000 steps on one fixed batch converge, and later steps'
        # tiny norms can trip the exploding-gradient ratio rule)
        assert audit.recorded_count == steps, audit.summary()
    assert np.isfinite(float(total))


def process_row(rounds, steps, watched="auto"):
    """{variant: [(wall, wall) per round]}: whole processes, per step (``watched``: the process
    variant timed in the ``auto`` column)."""
    times = {"base": [], "auto": []}
    for r in range(rounds):
        for v in rotated(list(times), r):
            start = time.perf_counter()
            variant = watched if v == "auto" else v
            subprocess.run([sys.executable, os.path.abspath(__file__), "--process", variant, "--steps", str(steps)],
                           check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
            per_step = (time.perf_counter() - start) / steps
            times[v].append((per_step, per_step))
    return times


def rows(quick):
    """(name, runner(rounds, steps) -> times, rounds, steps) for every row."""
    r, big = (3, 2) if quick else (15, 7)
    out = []
    for loop in ("function", "eager", "fit"):
        out.append((f"tiny-mlp {loop}", lambda r_, s_, loop=loop: keras_row("tiny-mlp", loop, False, r_, s_),
                    r, 100 if quick else 400))
    out.append(("tiny-mlp tf1-session", lambda r_, s_: tf1_row("tiny-mlp", r_, s_), r, 100 if quick else 400))
    out.append(("mlp-mnist tf1-session", lambda r_, s_: tf1_row("mlp-mnist", r_, s_), r, 50 if quick else 200))
    out.append(("cnn-small tf1-session", lambda r_, s_: tf1_row("cnn-small", r_, s_), r, 8 if quick else 20))
    out.append(("gan-mnist tf1-session (2 ops)", lambda r_, s_: tf1_row("gan-mnist", r_, s_), r, 50 if quick else 200))
    for model in ("cnn-small", "mlp-4.8M"):
        for loop in ("function", "fit"):
            for jit in (False, True):
                name = f"{model} {loop}{' xla' if jit else ''}"
                out.append((name, lambda r_, s_, m=model, lp=loop, j=jit: keras_row(m, lp, j, r_, s_),
                            r, 8 if quick else 20))
    out.append(("mlp-4.8M tf1-session", lambda r_, s_: tf1_row("mlp-4.8M", r_, s_), big, 8 if quick else 20))
    out.append((f"tiny-mlp {PROCESS_STEPS:,}-step process", process_row, 2 if quick else 5, PROCESS_STEPS))
    out.append((f"tiny-mlp {PROCESS_STEPS:,}-step raise_on",
                lambda r_, s_: process_row(r_, s_, "raise_on"), 2 if quick else 5, PROCESS_STEPS))
    return out


def _cell(times, variant):
    """Median over rounds of (variant / baseline) measured in the same round, and the median
    microseconds added per step (pairs measured close in time: steadier on a shared machine)."""
    if variant not in times:
        return "-"
    ratios = [w / b for (w, _), (b, _) in zip(times[variant], times["base"])]
    added = [(w - b) * 1e6 for (w, _), (b, _) in zip(times[variant], times["base"])]
    return f"{statistics.median(ratios):.3f}x {statistics.median(added):+.0f}us"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps")
    parser.add_argument("--rows", nargs="*", default=None,
                        help='only rows whose name contains one of these ("NAME$": exactly that row)')
    parser.add_argument("--process", choices=("base", "auto", "raise_on"), help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=PROCESS_STEPS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.process:
        return process_main(args.process, args.steps)

    import tensorflow as tf
    import keras

    print(f"# auditor overhead: TF {tf.__version__}, Keras {keras.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} at start")
    print("# each cell: median over rounds of (step time with watch() / without, in the same round), and the"
          f" median microseconds added per step; {WARMUP} warm-up steps per round untimed ({warmup({'every': 10})}"
          " with every=10: a watch's first 10 recorded steps compare every variable, and a TF1 session's"
          " first run of the train op without its change check builds its executor); a watched block"
          " includes reading its records; the order of the variants rotates round by round; auto CPU: the"
          " same ratio in process CPU time")
    cols = ["row", "rounds x steps", "base ms/step", "auto (defaults)", "every", "auto, every=10",
            "hand-written norm", "auto CPU"]
    widths = [34, 14, 12, 18, 18, 18, 18, 8]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for name, runner, rounds, steps in rows(args.quick):
        if args.rows and not any(part == name or (part in name and not part.endswith("$")) for part in args.rows) \
                and name + "$" not in args.rows:
            continue
        times = runner(rounds, steps)
        base = statistics.median(w for w, _ in times["base"])
        cpu = statistics.median(a / b for (_, a), (_, b) in zip(times["auto"], times["base"]))
        cells = [name, f"{rounds} x {steps}", f"{base * 1e3:.3f}", _cell(times, "auto"),
                 _cell(times, "every"), _cell(times, "auto/10"), _cell(times, HAND), f"{cpu:.3f}x"]
        print("| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |", flush=True)


if __name__ == "__main__":
    main()
