"""``tf.distribute``: which replica an apply runs on, replica threads counted as the thread that
started them, and the norm of the replicas' summed gradients before clipping.

Each replica's apply gets its own probe (buffers on the replica's device); the recorder joins
the rows of all local replicas of one step into one record. The engines that record per replica
(Keras 3, tf_keras) tap the all-reduced gradients where their optimizer computes them.
"""
from __future__ import annotations

import tensorflow as tf

from auditor import graph_stats as gs
from auditor import registry
from auditor.patching import Patch


def patches() -> list[Patch]:
    from tensorflow.python.distribute import mirrored_run

    return [Patch(mirrored_run._MirroredReplicaThread, "__init__", _replica_thread_init)]


def _replica_thread_init(original):
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        registry.adopt(self)  # created by the thread that called strategy.run / fit

    return __init__


def replica_info():
    """``(local replica index, local replica count, device, replicas in sync)`` inside a replica
    context of a strategy with more than one replica in sync, else None. Local: per worker, so that
    ``MultiWorkerMirroredStrategy`` keeps per-process state only."""
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    strategy = tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync < 2:
        return None
    ctx = tf.distribute.get_replica_context()
    devices = [str(d) for d in strategy.extended.worker_devices]
    try:
        device = str(ctx.devices[0]) if getattr(ctx, "devices", None) else None
    except IndexError:
        # MirroredReplicaContext.devices indexes this worker's device list with the global
        # replica id: IndexError on MultiWorkerMirroredStrategy workers other than the first.
        device = None
    if device in devices:
        index = devices.index(device)
    else:
        index = int(tf.get_static_value(ctx.replica_id_in_sync_group) or 0) % max(len(devices), 1)
        device = devices[index] if devices else None
    return index, max(len(devices), 1), device, strategy.num_replicas_in_sync


def summed_norm(grads):
    """Ops: the norm of ``grads`` (tensors; no None)."""
    return tf.sqrt(tf.add_n([gs.sq_norm(g) for g in grads]))


def all_reduced_norm(grads):
    """Norm of the replicas' summed gradients: one extra all-reduce (a collective: it cannot sit
    inside the probe's recording ``cond``, so it runs on every step). None without a gradient."""
    ctx = tf.distribute.get_replica_context()
    dense = [tf.cast(tf.convert_to_tensor(g), tf.float32) for g in grads if g is not None]
    if not dense:
        return None
    return summed_norm(ctx.all_reduce(tf.distribute.ReduceOp.SUM, dense))
