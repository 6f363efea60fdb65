"""Hooks for the older TensorFlow training engines: tf_keras (Keras 2) optimizers and TF1
graph-mode ``tf.compat.v1.train.Optimizer``.

* tf_keras: ``apply_gradients`` of ``tf_keras.optimizers.Optimizer`` (the 2.11+ optimizer)
  and of ``tf_keras.optimizers.legacy.*`` (``OptimizerV2``) is wrapped like Keras 3's
  ``apply``: the same device-side :class:`~auditor.probe.Probe` records a row per call.
  tf_keras is never imported here: it is hooked only once it is in ``sys.modules``
  (checked when a watch is entered and at each ``tape.gradient`` / ``tf.function`` call).
* TF1: ``tf.compat.v1.train.Optimizer.apply_gradients`` (which ``minimize`` calls) returns a
  train op that also measures the gradients and snapshots the variables (the update ops run
  under control dependencies on both), compares after the update, and hands the row to the
  host with a ``tf.numpy_function`` side op: each ``sess.run(train_op)`` delivers its step.
  A variable in graph mode cannot be read from the host without a session, so TF1 probes
  keep their rows on the host (:class:`HostProbe`) instead of in a device ring buffer.
"""
from __future__ import annotations

import sys
import threading
import weakref

import numpy as np
import tensorflow as tf

from auditor import graph_stats as gs
from auditor import hooks
from auditor.probe import Probe, _clip_config

_TFK_TARGETS = (
    ("tf_keras.src.optimizers.optimizer", "Optimizer", "tfk_apply_gradients"),
    ("tf_keras.src.optimizers.legacy.optimizer_v2", "OptimizerV2", "tfk_v2_apply_gradients"),
)


# ---- install / restore (called by hooks under its lock) ----------------------------------------
def _patch(owner, attr, key, replacement) -> None:
    if key in hooks._extra:
        return
    original = owner.__dict__[attr]
    hooks._extra[key] = (owner, attr, original)
    setattr(owner, attr, replacement)


def install_tf1() -> None:
    from tensorflow.python.training import optimizer as v1_optimizer

    _patch(v1_optimizer.Optimizer, "apply_gradients", "v1_apply_gradients", _patched_v1_apply_gradients)


def ensure_tf_keras() -> None:
    """Hook tf_keras' optimizers if tf_keras has been imported (never imports it)."""
    if all(key in hooks._extra for _, _, key in _TFK_TARGETS):
        return
    for module_name, cls_name, key in _TFK_TARGETS:
        if key in hooks._extra:
            continue
        module = sys.modules.get(module_name)
        owner = getattr(module, cls_name, None) if module is not None else None
        if owner is not None and "apply_gradients" in owner.__dict__:
            _patch(owner, "apply_gradients", key, _make_tfk_patch(key))


def restore_all() -> None:
    for key in list(hooks._extra):
        owner, attr, original = hooks._extra.pop(key)
        setattr(owner, attr, original)


# ---- tf_keras --------------------------------------------------------------------------------
def _make_tfk_patch(key):
    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        original = hooks._extra[key][2] if key in hooks._extra else None
        if original is None:  # restored while a reference to the patch was held
            return type(self).apply_gradients(self, grads_and_vars, *args, **kwargs)
        return _tfk_apply(original, self, grads_and_vars, args, kwargs)

    apply_gradients.__auditor_patch__ = True
    return apply_gradients


def _tfk_apply(original, self, grads_and_vars, args, kwargs):
    if not hooks._sessions or getattr(hooks._tls, "in_apply", False):
        return original(self, grads_and_vars, *args, **kwargs)
    sessions = hooks.active_sessions(self)
    pairs = list(grads_and_vars)
    if (not sessions or not pairs or hooks.replica_info() is not None
            or (tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context())):
        # tf.distribute with tf_keras is not recorded (see docs/auditor.md, Known limits)
        return original(self, pairs, *args, **kwargs)
    grads = [g for g, _ in pairs]
    variables = [v for _, v in pairs]
    none_mask = [g is None for g in grads]
    if all(none_mask):
        return original(self, pairs, *args, **kwargs)  # tf_keras raises or no-ops itself
    with_snapshots = any(s.check_changes != "off" for s in sessions)
    probe = hooks.get_probe(self, variables, none_mask, with_snapshots)
    user_norms, user_global = hooks.attach_probe(self, probe, sessions, grads)
    hooks._tls.in_apply = True
    try:
        iteration = tf.cast(tf.identity(self.iterations), tf.int64)  # before apply increments it
        state = probe.emit_before(iteration, grads, self, user_norms, user_global)
        result = original(self, pairs, *args, **kwargs)
        probe.emit_after(state, iteration)
    finally:
        hooks._tls.in_apply = False
    if tf.executing_eagerly():
        for session in sessions:
            session._after_eager_apply(probe)
    return result


# ---- TF1 graph mode --------------------------------------------------------------------------
class HostRing:
    """The host-side stand-in for :class:`~auditor.ring_buffer.RingBuffer` of a TF1 probe."""

    capacity = 1024

    def __init__(self, width: int):
        self.width = width
        self._rows: list = []
        self._tags: list = []
        self._lock = threading.Lock()

    def push(self, row, tag) -> None:
        with self._lock:
            self._rows.append(np.asarray(row, np.float32).reshape(self.width))
            self._tags.append(int(tag))

    def drain(self):
        with self._lock:
            rows, tags, self._rows, self._tags = self._rows, self._tags, [], []
        if not rows:
            return np.zeros([0, self.width], np.float32), np.zeros([0], np.int64), 0
        return np.stack(rows), np.asarray(tags, np.int64), 0

    def pending_estimate(self) -> int:
        with self._lock:
            return len(self._rows)


class HostProbe(Probe):
    """A TF1 apply site: rows arrive from a ``tf.numpy_function`` when the train op runs.

    ``step`` of a record: how many times this train op had run before (per train op)."""

    def __init__(self, optimizer, variables, none_mask):  # noqa: D107 (no device state)
        self.optimizer_ref = weakref.ref(optimizer)
        # TF1 code often drops the optimizer after minimize(); the graph keeps the probe and the
        # probe the optimizer (graph mode only: eager probes are owned by the optimizer)
        self._optimizer = None if tf.executing_eagerly() else optimizer
        self.variables = list(variables)
        self.none_mask = tuple(none_mask)
        self.user_clip = False
        self.subscribers: list = []
        self.replica = None
        self.group = (id(self), tuple(id(v) for v in variables), tuple(none_mask))
        self.extra = 0
        self.ring = HostRing(5 + 3 * len(self.variables))
        self.snapshots = None  # compared in-graph on every recorded run
        self.runs = 0
        self._run_lock = threading.Lock()

    def configure(self):
        pass

    def deliver(self, row):
        """Called by the side op on every run of the train op (in a TensorFlow thread)."""
        with self._run_lock:
            step = self.runs
            self.runs += 1
        subscribers = list(self.subscribers)
        if subscribers and step % min(s.every for s in subscribers) == 0:
            self.ring.push(row, step)
            hooks.drain_probe(self)
        return np.int64(step)


_eager_probes: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _host_probe(optimizer, variables, none_mask) -> HostProbe:
    """A new probe per train op in graph mode; in eager mode (a TF1 optimizer used eagerly)
    one per apply site, so that its run counter counts the steps."""
    if not tf.executing_eagerly():
        return HostProbe(optimizer, variables, none_mask)
    key = (tuple(id(v) for v in variables), tuple(none_mask))
    with hooks._lock:
        sites = _eager_probes.setdefault(optimizer, {})
        probe = sites.get(key)
        if probe is None or any(a is not b for a, b in zip(probe.variables, variables)):
            probe = sites[key] = HostProbe(optimizer, variables, none_mask)
        return probe


def _snapshot(var):
    """A copy of the variable's current value that the update cannot alias: for a TF1
    ``RefVariable`` ``read_value()`` (an Identity of the ref) shares the buffer the update
    writes in place (measured: the snapshot then equals the updated value and every step
    looks like "no change"), so copy it explicitly. ``DeepCopy`` states the intent; ``x + 0``
    also works today but is an arithmetic no-op a graph optimizer is entitled to fold."""
    return tf.raw_ops.DeepCopy(x=var.read_value())


def _patched_v1_apply_gradients(self, grads_and_vars, global_step=None, name=None, *args, **kwargs):
    entry = hooks._extra.get("v1_apply_gradients")
    original = entry[2] if entry else type(self).apply_gradients
    if (not hooks._sessions or getattr(hooks._tls, "in_apply", False) or tf.distribute.has_strategy()):
        return original(self, grads_and_vars, global_step, name, *args, **kwargs)
    sessions = hooks.active_sessions(self)
    pairs = tuple(grads_and_vars)
    if not sessions or not pairs or all(g is None for g, _ in pairs):
        return original(self, pairs, global_step, name, *args, **kwargs)
    grads = [None if g is None else (g if isinstance(g, tf.IndexedSlices) else tf.convert_to_tensor(g))
             for g, _ in pairs]
    variables = [v for _, v in pairs]
    none_mask = [g is None for g in grads]
    probe = _host_probe(self, variables, none_mask)
    user_norms, user_global = hooks.attach_probe(self, probe, sessions, grads, keep_traced=False)
    check = any(s.check_changes != "off" for s in sessions)
    n = len(variables)
    measured = Probe._measure(probe, grads, _clip_config(self), user_norms, user_global)
    snaps = [_snapshot(v) if check and not none else None for v, none in zip(variables, none_mask)]
    hooks._tls.in_apply = True
    try:
        with tf.control_dependencies([measured] + [s for s in snaps if s is not None]):
            result = original(self, pairs, global_step, name, *args, **kwargs)
    finally:
        hooks._tls.in_apply = False
    deps = [] if result is None or tf.executing_eagerly() else [result]
    with tf.control_dependencies(deps):
        if check:
            changed = tf.stack([tf.constant(False) if s is None else gs.differs(v.read_value(), s)
                                for v, s in zip(variables, snaps)])
        else:
            changed = tf.zeros([n], tf.bool)
        row = tf.concat([measured[:3], tf.constant([1.0 if check else 0.0]), measured[3:],
                         tf.cast(changed, tf.float32)], 0)
        delivered = tf.numpy_function(probe.deliver, [row], tf.int64, stateful=True,
                                      name="auditor_record")
    if tf.executing_eagerly():
        return result
    with tf.control_dependencies([delivered]):
        return tf.group(result, name="auditor_train_op")
