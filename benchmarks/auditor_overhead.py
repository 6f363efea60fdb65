"""Auditor overhead: median step time with ``auditor.watch()`` over without.

One process; for each configuration the baseline, ``check_changes="auto"`` (the defaults),
``check_changes="every"`` and ``every=10`` (sampled) runs are interleaved round by round, and
the ratio of medians is printed. Models: a ~5M-parameter MLP and a small CNN; loops: a ``tf.function`` train step and
``model.fit``; XLA off and on. Every timed step's loss is summed and read back at the end of the
round, so XLA cannot prune what is timed.

    python benchmarks/auditor_overhead.py            # full sizes
    python benchmarks/auditor_overhead.py --quick    # fewer rounds and steps
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import auditor  # noqa: E402

# variant -> watch() keyword arguments (None: no watch)
VARIANTS = {
    "base": None,
    "auto": {"check_changes": "auto"},  # the defaults
    "every": {"check_changes": "every"},
    "auto/10": {"check_changes": "auto", "every": 10},  # record every 10th step
}
HAND = "hand-norm"  # no watch; the step computes tf.linalg.global_norm itself (tf.function loop)
# Untimed steps at the start of every round (all variants alike): the first
# `changes_first_steps` steps of a watch compare every variable; time the steady state.
WARMUP = int(auditor.DEFAULT_THRESHOLDS["changes_first_steps"]) + 1


def mlp():
    """784 -> 2048 -> 1536 -> 10: about 4.8M parameters."""
    return keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(2048, activation="relu"),
        keras.layers.Dense(1536, activation="relu"),
        keras.layers.Dense(10),
    ])


def cnn():
    return keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])


MODELS = {"mlp-4.8M": (mlp, (784,), 64), "cnn-small": (cnn, (32, 32, 3), 32)}


def batch(shape, size, seed=0):
    rng = np.random.RandomState(seed)
    return rng.randn(size, *shape).astype("float32"), rng.randint(0, 10, size=(size,)).astype("int32")


def build(make, jit):
    keras.utils.set_random_seed(0)
    model = make()
    model.compile(keras.optimizers.Adam(1e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    return model


def make_step(model, jit, hand_norm=False):
    """The timed train step; ``hand_norm``: it also computes the global gradient norm itself
    (``tf.linalg.global_norm``, returned and consumed) - the cheapest per-step norm a user can
    write, the floor for any per-step measurement."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = model.optimizer

    @tf.function(jit_compile=jit)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        if hand_norm:
            return loss + tf.linalg.global_norm(grads)
        return loss

    return step


def time_loop(step, x, y, steps):
    """(wall, process CPU) seconds per step, medians over the round's steps."""
    for _ in range(WARMUP):
        step(x, y)
    total = tf.constant(0.0)
    walls, cpus = [], []
    for _ in range(steps):
        w, c = time.perf_counter(), time.process_time()
        total += step(x, y)
        float(total)  # consume every loss (and wait for the step)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


class BatchTimer(keras.callbacks.Callback):
    def __init__(self, skip):
        super().__init__()
        self.skip = skip
        self.walls, self.cpus, self.logs = [], [], []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, batch, logs=None):
        if batch >= self.skip:
            self.logs.append(float(logs["loss"]))  # consume the step's output
            self.walls.append(time.perf_counter() - self._start[0])
            self.cpus.append(time.process_time() - self._start[1])


def time_fit(model, x, y, steps, skip=WARMUP):
    n = x.shape[0]
    reps = steps + skip
    xs, ys = np.concatenate([x] * reps), np.concatenate([y] * reps)
    timer = BatchTimer(skip)
    model.fit(xs, ys, batch_size=n, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
    assert all(np.isfinite(timer.logs))
    return statistics.median(timer.walls), statistics.median(timer.cpus)


def run_config(model_name, loop, jit, rounds, steps):
    make, shape, size = MODELS[model_name]
    x, y = batch(shape, size)
    models = {v: build(make, jit) for v in VARIANTS}
    times = {v: [] for v in VARIANTS}
    if loop == "function":
        xt, yt = tf.constant(x), tf.constant(y)
        fns = {v: make_step(models[v], jit) for v in VARIANTS}
        models[HAND] = build(make, jit)
        fns[HAND] = make_step(models[HAND], jit, hand_norm=True)
        times[HAND] = []
        fns["base"](xt, yt)  # traced outside any watch
        fns[HAND](xt, yt)
        for v, kwargs in VARIANTS.items():
            if kwargs is not None:
                with auditor.watch(models[v], summary=False, **kwargs):
                    fns[v](xt, yt)  # traced inside: the hook's ops are in the graph
        for _ in range(rounds):
            times[HAND].append(time_loop(fns[HAND], xt, yt, steps))
            for v, kwargs in VARIANTS.items():
                if kwargs is None:
                    times[v].append(time_loop(fns[v], xt, yt, steps))
                    continue
                with auditor.watch(models[v], summary=False, **kwargs) as audit:
                    times[v].append(time_loop(fns[v], xt, yt, steps))
                expected = len(range(0, WARMUP + steps, kwargs.get("every", 1)))
                assert abs(len(audit.steps) - expected) <= 1 and not audit.findings, audit.summary()
    else:
        time_fit(models["base"], x, y, 1)  # trace the baseline once
        for _ in range(rounds):
            for v, kwargs in VARIANTS.items():
                if kwargs is None:
                    times[v].append(time_fit(models[v], x, y, steps))
                    continue
                with auditor.watch(models[v], summary=False, **kwargs) as audit:
                    times[v].append(time_fit(models[v], x, y, steps))
                assert audit.steps and not audit.findings, audit.summary()
    wall = {v: statistics.median(t[0] for t in ts) for v, ts in times.items()}
    cpu = {v: statistics.median(t[1] for t in ts) for v, ts in times.items()}
    return wall, cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 8 steps (default 9 of 12)")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args(argv)
    rounds, steps = (3, 8) if args.quick else (9, 12)
    print(f"# auditor overhead: {rounds} interleaved rounds x {steps} steps, medians; "
          f"TF {tf.__version__}, Keras {keras.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} CPU cores, devices: {[d.device_type for d in tf.config.list_logical_devices()]}")
    header = (f"| {'model':<10} | {'loop':<8} | {'XLA':<3} | {'base ms/step':>12} | {'auto':>7} | "
              f"{'every':>7} | {'auto, every=10':>14} | {'auto (CPU time)':>15} | {'every (CPU time)':>16} | "
              f"{'hand-written norm':>17} |")
    print(f"# ratios: median step time with watch() / without; warm-up {WARMUP} steps per round untimed;"
          " wall clock, and process CPU time (steadier on a shared machine);")
    print("# hand-written norm: no watch, the step computes tf.linalg.global_norm(grads) itself"
          " (the floor for any per-step norm; tf.function loop only)")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for model_name in args.models:
        for loop in ("function", "fit"):
            for jit in (False, True):
                wall, cpu = run_config(model_name, loop, jit, rounds, steps)
                base = wall["base"]
                hand = f"{wall[HAND] / base:.3f}x" if HAND in wall else "-"
                print(f"| {model_name:<10} | {loop:<8} | {'on' if jit else 'off':<3} | {base * 1e3:>12.2f} | "
                      f"{wall['auto'] / base:>6.3f}x | {wall['every'] / base:>6.3f}x | "
                      f"{wall['auto/10'] / base:>13.3f}x | {cpu['auto'] / cpu['base']:>14.3f}x | "
                      f"{cpu['every'] / cpu['base']:>15.3f}x | {hand:>17} |", flush=True)


if __name__ == "__main__":
    main()
