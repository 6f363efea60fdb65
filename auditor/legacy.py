"""Hooks for the older TensorFlow training engines: tf_keras (Keras 2) optimizers and TF1
graph-mode ``tf.compat.v1.train.Optimizer``.

* tf_keras: ``apply_gradients`` of ``tf_keras.optimizers.Optimizer`` (the 2.11+ optimizer)
  and of ``tf_keras.optimizers.legacy.*`` (``OptimizerV2``) is wrapped like Keras 3's
  ``apply``: the same device-side :class:`~auditor.probe.Probe` records a row per call.
  tf_keras is never imported here: it is hooked only once it is in ``sys.modules``
  (checked when a watch is entered and at each ``tape.gradient`` / ``tf.function`` call).
  Under ``tf.distribute`` each replica's apply gets a per-replica probe (as in Keras 3); tf_keras
  sums the replicas' gradients *before* clipping, so the all-reduced norms are read where it
  clips them (``_TFK_TAPS``), without a second all-reduce.
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
# Under tf.distribute, tf_keras sums the replicas' gradients *before* clipping them, in the
# replica context: the 2.11+ optimizer in ``Optimizer.apply_gradients`` (``aggregate_gradients``),
# then ``_BaseOptimizer._clip_gradients``; OptimizerV2 in ``apply_gradients``
# (``_aggregate_gradients``), then ``_transform_gradients`` (clipvalue / clipnorm /
# global_clipnorm / gradient_transformers). Tapping those clip steps gives the all-reduced
# gradients before and after clipping without a second all-reduce.
_TFK_TAPS = (
    ("tf_keras.src.optimizers.optimizer", "_BaseOptimizer", "_clip_gradients", "tfk_clip_gradients"),
    ("tf_keras.src.optimizers.legacy.optimizer_v2", "OptimizerV2", "_transform_gradients",
     "tfk_v2_transform_gradients"),
)
_tap_tls = threading.local()  # per replica thread: the apply whose clip step is being tapped


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
    for module_name, cls_name, attr, key in _TFK_TAPS:
        module = sys.modules.get(module_name)
        owner = getattr(module, cls_name, None) if module is not None else None
        if owner is not None and attr in owner.__dict__:
            _patch(owner, attr, key, _make_tap(attr, key, pairs=(key == "tfk_v2_transform_gradients")))


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
    if not sessions or not pairs or (tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context()):
        return original(self, pairs, *args, **kwargs)
    grads = [g for g, _ in pairs]
    variables = [v for _, v in pairs]
    none_mask = [g is None for g in grads]
    if all(none_mask):
        return original(self, pairs, *args, **kwargs)  # tf_keras raises or no-ops itself
    with_snapshots = any(s.check_changes != "off" for s in sessions)
    replica = hooks.replica_info()
    probe = hooks.get_probe(self, variables, none_mask, with_snapshots, replica)
    user_norms, user_global = hooks.attach_probe(self, probe, sessions, grads)
    hooks._tls.in_apply = True
    try:
        with tf.init_scope():  # OptimizerV2 creates `iterations` on first use: there, as it does itself
            _ = self.iterations
        iteration = tf.cast(tf.identity(self.iterations), tf.int64)  # before apply increments it
        if replica is None:
            state = probe.emit_before(iteration, grads, self, user_norms, user_global)
            result = original(self, pairs, *args, **kwargs)
            probe.emit_after(state, iteration)
        else:
            result = _tfk_apply_replica(original, self, pairs, args, kwargs, probe, iteration,
                                        user_norms, user_global)
    finally:
        hooks._tls.in_apply = False
    if tf.executing_eagerly():
        for session in sessions:
            session._after_eager_apply(probe)
    return result


def _tfk_apply_replica(original, self, pairs, args, kwargs, probe, iteration, user_norms, user_global):
    """One replica's apply under tf.distribute: the row is written from inside tf_keras' clip
    step (see ``_TFK_TAPS``), which runs after the all-reduce and before any variable update.

    The replica's own gradients give its row's per-replica norm; the tapped clip input (the
    all-reduced gradients, alike on every replica) the norm before clipping; the clip output
    the applied norms. No collective is added and the optimizer's own call is left as is."""
    grads = [g for g, _ in pairs]
    tap = _Tap(self, probe, iteration, grads, user_norms, user_global)
    outer, _tap_tls.tap = getattr(_tap_tls, "tap", None), tap
    try:
        result = original(self, pairs, *args, **kwargs)
    finally:
        _tap_tls.tap = outer
    if tap.state is not None:
        probe.emit_after(tap.state, iteration, tap.reduced_grads)
    # else: the clip step was not reached (a subclass replaced it, or nothing was applied):
    # no row for this step rather than one whose change check would come after the update
    return result


class _Tap:
    """What one replica's apply hands to its tapped clip step, and what it gets back."""

    def __init__(self, optimizer, probe, iteration, grads, user_norms, user_global):
        self.optimizer = optimizer
        self.probe = probe
        self.iteration = iteration
        self.grads = grads
        self.user_norms = user_norms
        self.user_global = user_global
        self.state = None
        self.reduced_grads = None

    def before_clip(self, reduced):
        """``reduced``: the non-None all-reduced gradients, in the order of the apply's pairs."""
        probe = self.probe
        def summed_norm():  # measured only on recorded steps (inside the probe's cond)
            return tf.sqrt(tf.add_n([hooks.gs_sq(g) for g in reduced]))

        aggregate_pre = summed_norm if probe.has_clipping() and not probe.user_clip else None
        self.state = probe.emit_before(self.iteration, self.grads, self.optimizer, self.user_norms,
                                       self.user_global, aggregate_pre)

    def after_clip(self, clipped):
        """``clipped``: the gradients the optimizer applies (non-None, same order)."""
        if len(clipped) != sum(1 for none in self.probe.none_mask if not none):
            return  # a gradient transformer changed the list: the row's applied norms stay NaN
        real = iter(clipped)
        self.reduced_grads = [None if none else next(real) for none in self.probe.none_mask]


def _make_tap(attr, key, pairs: bool):
    """The clip step of one tf_keras optimizer family, reporting to the pending replica apply
    (``pairs``: OptimizerV2's ``_transform_gradients`` takes (gradient, variable) pairs)."""

    def tapped(self, grads, *args, **kwargs):
        if key not in hooks._extra:  # restored while a reference to the patch was held
            return getattr(type(self), attr)(self, grads, *args, **kwargs)
        original = hooks._extra[key][2]
        tap = getattr(_tap_tls, "tap", None)
        if tap is None or tap.optimizer is not self or tap.state is not None:
            return original(self, grads, *args, **kwargs)
        if not isinstance(grads, (list, tuple)):
            grads = list(grads)
        reduced = [g for g, _ in grads] if pairs else grads
        tap.before_clip([g for g in reduced if g is not None])
        result = original(self, grads, *args, **kwargs)
        if not isinstance(result, (list, tuple)):
            result = list(result)
        clipped = [g for g, _ in result] if pairs else result
        tap.after_clip([g for g in clipped if g is not None])
        return result

    tapped.__auditor_patch__ = True
    return tapped


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

    ``step`` of a record: the ``global_step`` before the update when the train op increments
    one, else how many times the optimizer's train ops had run before (like Keras' per-optimizer
    ``iterations``)."""

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
        self.runs = _run_counter(optimizer)
        self.hist_every = 0  # set when the train op is built (histograms computed in the graph)
        self.hist_ring = HostRing(len(self.variables) * (2 + gs.HIST_BINS))

    def configure(self):
        pass

    def next_run(self):
        """The run counter (a side op of each run, when no ``global_step`` numbers the steps)."""
        return np.int64(self.runs.next())

    def deliver(self, row, step, hist):
        """Called by the side op on every run of the train op (in a TensorFlow thread)."""
        step = int(step)
        subscribers = list(self.subscribers)
        if subscribers and step % min(s.every for s in subscribers) == 0:
            self.ring.push(row, step)
            if self.hist_every and step % self.hist_every == 0:
                self.hist_ring.push(hist, step)
            hooks.drain_probe(self)
        return np.int64(step)


class _Counter:
    def __init__(self):
        self.value = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self.value += 1
            return self.value - 1


_counters: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _run_counter(optimizer) -> _Counter:
    """One run counter per TF1 optimizer, shared by all its train ops."""
    with hooks._lock:
        counter = _counters.get(optimizer)
        if counter is None:
            counter = _counters[optimizer] = _Counter()
        return counter


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


def _histograms(probe, sessions, grads, step):
    """The gradient histograms row on steps that are multiples of the watches' ``histogram_every``
    (a ``cond`` in the graph; NaN otherwise), or an empty tensor when no watch writes them."""
    wanted = [int(s.histogram_every) for s in sessions if s.logdir and s.histogram_every]
    if not wanted:
        return tf.zeros([0], tf.float32)
    probe.hist_every = min(wanted)
    probe.hist_on = True
    width = probe.hist_ring.width

    def compute():
        blank = tf.fill([2 + gs.HIST_BINS], float("nan"))
        return tf.concat([blank if g is None else gs.histogram(g) for g in grads], 0)

    due = tf.equal(tf.math.floormod(step, probe.hist_every), 0)
    return tf.cond(due, compute, lambda: tf.fill([width], float("nan")))


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
    if global_step is not None:  # resumed runs keep their step numbers
        step = tf.cast(_snapshot(global_step), tf.int64)
    else:
        step = tf.numpy_function(probe.next_run, [], tf.int64, stateful=True, name="auditor_step")
    hist = _histograms(probe, sessions, grads, step)
    hooks._tls.in_apply = True
    try:
        with tf.control_dependencies([measured, step] + [s for s in snaps if s is not None]):
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
        delivered = tf.numpy_function(probe.deliver, [row, step, hist], tf.int64, stateful=True,
                                      name="auditor_record")
    if tf.executing_eagerly():
        return result
    with tf.control_dependencies([delivered]):
        return tf.group(result, name="auditor_train_op")
