"""One worker of a two-worker ``tf.distribute.MultiWorkerMirroredStrategy`` cluster on localhost,
for test_audit_multiworker.py. Usage: ``TF_CONFIG=... python multiworker_script.py OUT_DIR``.

Both workers run the same scenarios in the same order (their collectives must match): a custom
loop (``strategy.run`` in a ``tf.function``) and ``model.fit`` on a per-worker ``tf.data``
pipeline (``distribute_datasets_from_function``: worker w reads shard w), each plain, watched,
and with a planted ``global_clipnorm`` that Keras applies per replica before the all-reduce.

Independently of TensorFlow, every step's gradient is recomputed in float64 numpy from the
weights read before the step, on BOTH workers' batches, and summed: the expected all-reduced
norm (and, for the clipped runs, the norm of the sum of the two per-worker clipped gradients).
Writes ``OUT_DIR/worker<index>.json``.
"""
import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# Created first: the collective runtime must be configured before TensorFlow runs any op.
strategy = tf.distribute.MultiWorkerMirroredStrategy()

import keras  # noqa: E402
keras.config.disable_traceback_filtering()  # full tracebacks in the stderr the test prints

import auditor  # noqa: E402
from auditor import testing  # noqa: E402

OUT = sys.argv[1]
TASK = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
WORKERS = 2
GLOBAL_BATCH = 16
PER_REPLICA = GLOBAL_BATCH // WORKERS
STEPS_PER_EPOCH = 4
EPOCHS = 2
LR = 0.05
PLANTED_CLIP = 0.01


def _shards():
    rng = np.random.RandomState(0)
    x = rng.randn(WORKERS * STEPS_PER_EPOCH * PER_REPLICA, 4).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")).astype("float32")
    n = len(x) // WORKERS
    return [(x[w * n:(w + 1) * n], y[w * n:(w + 1) * n]) for w in range(WORKERS)]


SHARDS = _shards()


def _batch(worker, step):
    """The batch worker ``worker`` trains on at global step ``step`` (no shuffling)."""
    k = step % STEPS_PER_EPOCH
    x, y = SHARDS[worker]
    return x[k * PER_REPLICA:(k + 1) * PER_REPLICA], y[k * PER_REPLICA:(k + 1) * PER_REPLICA]


def _numpy_grads(weights, x, y):
    """float64 gradients of sum((h(x) W2 + b2 - y)^2) / GLOBAL_BATCH, h(x) = x W1 + b1, on one batch.

    Both loops use this loss per replica: the custom loop by construction, ``fit`` because Keras
    divides the per-replica mean ("mse") by the number of replicas in sync."""
    W1, b1, W2, b2 = (np.asarray(w, np.float64) for w in weights)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    h = x @ W1 + b1
    g = 2.0 * (h @ W2 + b2 - y) / GLOBAL_BATCH  # dL/dpred
    dh = g @ W2.T
    return [x.T @ dh, dh.sum(0), h.T @ g, g.sum(0)]


def _norm(grads):
    return float(np.sqrt(sum(np.sum(g * g) for g in grads)))


def _expected(weights, step, clip):
    """Norm of the summed gradients, norm of the sum of the per-worker clipped gradients, and
    each worker's own gradient norm."""
    per_worker = [_numpy_grads(weights, *_batch(w, step)) for w in range(WORKERS)]
    summed = [sum(gs) for gs in zip(*per_worker)]
    clipped = None
    if clip:
        parts = []
        for gs in per_worker:
            n = _norm(gs)
            parts.append([g * clip / max(n, clip) for g in gs])  # keras global_clipnorm, per replica
        clipped = _norm([sum(gs) for gs in zip(*parts)])
    return {"norm": _norm(summed), "clipped": clipped, "per_worker": [_norm(gs) for gs in per_worker]}


class VectorLogsSequential(keras.Sequential):
    """Keras 3.15 again: fit() reduces each step's logs across workers with
    strategy.reduce("MEAN", v, axis=0), which fails on a scalar ("Invalid reduction dimension 0
    for input with 0 dimensions"): return the logs as shape [1]. Training is untouched."""

    def train_step(self, data):
        return {k: tf.reshape(v, [1]) for k, v in super().train_step(data).items()}


def _model(clip):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = VectorLogsSequential([keras.Input((4,)), keras.layers.Dense(3, name="h"), keras.layers.Dense(1, name="o")])
        opt = keras.optimizers.SGD(LR, **({"global_clipnorm": clip} if clip else {}))
    return model, opt


def _dataset(repeat):
    def fn(ctx):
        assert ctx.num_input_pipelines == WORKERS
        x, y = SHARDS[ctx.input_pipeline_id]
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(ctx.get_per_replica_batch_size(GLOBAL_BATCH))
        return ds.repeat() if repeat else ds
    return strategy.distribute_datasets_from_function(fn)


def _weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def _digest(model, opt):
    arrays = _weights(model) + [np.asarray(v.numpy()) for v in opt.variables]
    return hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()


def custom_loop(clip, watched, name):
    model, opt = _model(clip)
    ds = _dataset(repeat=False)

    @tf.function
    def step(xb, yb):
        def replica_step(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(model(xb) - yb)) / GLOBAL_BATCH
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        return strategy.run(replica_step, args=(xb, yb))

    expected = []

    def train():
        n = 0
        for _ in range(EPOCHS):
            for xb, yb in ds:
                expected.append(_expected(_weights(model), n, clip))
                step(xb, yb)
                n += 1

    return _run(name, model, opt, watched, train, expected)


class _WeightsBefore(keras.callbacks.Callback):
    def __init__(self, clip, out):
        super().__init__()
        self.clip, self.out, self.n = clip, out, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.out.append(_expected(_weights(self.model), self.n, self.clip))
        self.n += 1


def fit(clip, watched, name):
    model, opt = _model(clip)
    with strategy.scope():
        model.compile(optimizer=opt, loss="mse", jit_compile=False)
        opt.build(model.trainable_variables)
    # Keras 3.15 bug, not the auditor's: fit() on a model created under a strategy's scope first
    # runs TensorFlowTrainer._maybe_symbolic_build, which calls strategy.reduce("MEAN", (x, y)) on
    # the first batch; CollectiveAllReduceExtended._reduce_to does not map over a nest (Mirrored
    # does), so every MultiWorkerMirroredStrategy fit raises "Attempt to convert a value
    # (PerReplica...) to a Tensor". Without a captured strategy Keras takes its deferred-build
    # path and trains under the strategy in scope (``distribute_strategy`` falls back to
    # ``tf.distribute.get_strategy()``): fit runs inside ``strategy.scope()`` below.
    model._distribute_strategy = None
    ds = _dataset(repeat=True)
    expected = []

    def train():
        with strategy.scope():
            model.fit(ds, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH, verbose=0,
                      callbacks=[_WeightsBefore(clip, expected)])

    return _run(name, model, opt, watched, train, expected)


def _run(name, model, opt, watched, train, expected):
    out = {"expected": expected}
    if watched:
        path = os.path.join(OUT, f"worker{TASK}_{name}.jsonl")
        with auditor.watch(model, summary=False, jsonl=path) as audit:
            train()
        out["audit"] = audit.to_dict()
        out["jsonl"] = path
    else:
        train()
    out["iterations"] = int(opt.iterations.numpy())
    out["digest"] = _digest(model, opt)
    out["patches_left"] = testing.patches_installed()
    return out


result = {
    "task": TASK,
    "num_replicas_in_sync": strategy.num_replicas_in_sync,
    "worker_devices": [str(d) for d in strategy.extended.worker_devices],
}
for loop in (custom_loop, fit):
    if len(sys.argv) > 2 and loop.__name__ not in sys.argv[2].split(","):  # for debugging one loop
        continue
    for clip, label in ((None, "clean"), (PLANTED_CLIP, "planted"), (1e6, "bound_holds")):
        name = f"{loop.__name__}_{label}"
        result[name] = loop(clip, True, name)
    for clip, label in ((None, "clean"), (PLANTED_CLIP, "planted")):  # the same runs, unwatched
        name = f"{loop.__name__}_{label}_plain"
        result[name] = loop(clip, False, name)

with open(os.path.join(OUT, f"worker{TASK}.json"), "w") as f:
    json.dump(result, f)
print("done", TASK)
