"""TF1 graph mode: ``tf.compat.v1.train.Optimizer.apply_gradients`` (which ``minimize`` calls).

The returned train op also measures the gradients and copies the variables (the update ops run
under control dependencies on both), compares after the update, and hands the row to the host
with a ``tf.numpy_function`` side op: each ``sess.run(train_op)`` delivers its step. A variable in
graph mode cannot be read from the host without a session, so TF1 probes keep their rows on the
host (``HostProbe``) instead of in a device ring buffer. ``step`` is the ``global_step`` before the
update when the train op increments one, else how many times the optimizer's train ops had run
before (like Keras' per-optimizer ``iterations``).
"""
from __future__ import annotations

import threading
import weakref

import numpy as np
import tensorflow as tf

from auditor import graph_stats as gs
from auditor import registry
from auditor.engines import site
from auditor.patching import Patch
from auditor.probe import BeforeState, SiteProbe, decode_histograms, histogram_row
from auditor.ring_buffer import HostRing


def patches() -> list[Patch]:
    from tensorflow.python.training import optimizer as v1_optimizer

    return [Patch(v1_optimizer.Optimizer, "apply_gradients", _apply_gradients)]


class HostProbe(SiteProbe):
    """A TF1 apply site: rows arrive from a ``tf.numpy_function`` when the train op runs, and
    changes are compared in the graph on every recorded run."""

    capacity = 1024  # rows between drains, as for a device ring (the host list is not bounded)
    snapshots = None  # nothing to compare at exit: every run compares in the graph

    def __init__(self, optimizer, variables, none_mask, check: bool):
        super().__init__(optimizer, variables, none_mask)
        # TF1 code often drops the optimizer after minimize(); the graph keeps the probe and the
        # probe the optimizer (graph mode only: eager probes are owned by the optimizer)
        self._optimizer = None if tf.executing_eagerly() else optimizer
        self.check = check
        self.ring = HostRing(self.layout.width)
        self.hist_every = 0  # set when the train op is built (histograms computed in the graph)
        self.hist_ring = HostRing(len(self.variables) * (2 + gs.HIST_BINS))
        self.hist_on = False

    def configure(self):
        pass

    def before(self, step, grads, clip, user) -> BeforeState:
        """Measure the gradients, copy the variables (every run: the graph cannot be compared at
        exit), and the histograms on steps that are multiples of ``histogram_every``."""
        measured = self.measure(grads, clip, user, self.check)
        snaps = [_snapshot(v) if self.check and not none else None for v, none in zip(self.variables, self.none_mask)]
        hist = self._histograms(grads, step)
        return BeforeState(None, measured, step, deps=[measured, step] + [s for s in snaps if s is not None],
                           snapshots=snaps, histograms=hist)

    def _histograms(self, grads, step):
        every = self.wanted_histograms()
        if not every:
            return tf.zeros([0], tf.float32)
        self.hist_every = every
        self.hist_on = True
        width = self.hist_ring.width
        due = tf.equal(tf.math.floormod(step, every), 0)
        return tf.cond(due, lambda: histogram_row(grads), lambda: tf.fill([width], float("nan")))

    def after(self, state, reduced_grads=None, reduced_pre=None, scale=1.0):
        """Compare with the copies and hand the row to the host (a side op of the train op)."""
        n = len(self.variables)
        if self.check:
            changed = tf.cast(tf.stack([tf.constant(False) if s is None else gs.differs(v.read_value(), s)
                                        for v, s in zip(self.variables, state.snapshots)]), tf.float32)
        else:
            changed = tf.zeros([n], tf.float32)
        row = self.layout.assemble(state.measured, changed)
        return tf.numpy_function(self.deliver, [row, state.iteration, state.histograms], tf.int64,
                                 stateful=True, name="auditor_record")

    def deliver(self, row, step, hist):
        """Called by the side op on every run of the train op (in a TensorFlow thread)."""
        step = int(step)
        subscribers = list(self.subscribers)
        if subscribers and step % min(s.settings.every for s in subscribers) == 0:
            self.ring.push(row, step)
            if self.hist_every and step % self.hist_every == 0:
                self.hist_ring.push(hist, step)
            registry.drain(self)
        return np.int64(step)

    def drain(self):
        rows, tags, lost = self.ring.drain()
        return self.layout.decode(rows, tags), lost

    def drain_histograms(self):
        if not (self.hist_on and self.hist_ring.pending_estimate()):
            return None
        rows, tags, _ = self.hist_ring.drain()
        n = len(self.variables)
        return [(int(tag), decode_histograms(row, n)) for row, tag in zip(rows, tags)]


class RunCounter:
    """How many times an optimizer's train ops ran (a side op of each run without a global step)."""

    def __init__(self):
        self.value = 0
        self._lock = threading.Lock()

    def next(self) -> np.int64:
        with self._lock:
            self.value += 1
            return np.int64(self.value - 1)


_counters: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # optimizer -> RunCounter
_eager_probes: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # optimizer -> {site: probe}


class TF1(site.ApplyEngine):
    """One ``apply_gradients`` call (engines are per call here: the global step is an argument)."""

    keeps_traced = False

    def __init__(self, global_step):
        self.global_step = global_step

    def probe(self, optimizer, variables, none_mask, with_snapshots, replica):
        """A new probe per train op in graph mode; in eager mode (a TF1 optimizer used eagerly)
        one per apply site, so that its run counter counts the steps."""
        if not tf.executing_eagerly():
            return HostProbe(optimizer, variables, none_mask, with_snapshots)
        key = (tuple(id(v) for v in variables), none_mask)
        with registry.lock:
            sites = _eager_probes.setdefault(optimizer, {})
            probe = sites.get(key)
            if probe is None or any(a is not b for a, b in zip(probe.variables, variables)):
                probe = sites[key] = HostProbe(optimizer, variables, none_mask, with_snapshots)
            return probe

    def iteration(self, optimizer):
        if self.global_step is not None:  # resumed runs keep their step numbers
            return tf.cast(_snapshot(self.global_step), tf.int64)
        with registry.lock:
            counter = _counters.get(optimizer)
            if counter is None:
                counter = _counters[optimizer] = RunCounter()
        return tf.numpy_function(counter.next, [], tf.int64, stateful=True, name="auditor_step")

    def ordered(self, deps):
        deps = [d for d in deps if d is not None]
        if tf.executing_eagerly() or not deps:
            return super().ordered(deps)
        return tf.control_dependencies(deps)

    def finish(self, result, after):
        if tf.executing_eagerly():
            return result
        with tf.control_dependencies([after]):
            return tf.group(result, name="auditor_train_op")


def _snapshot(var):
    """A copy of the variable's current value that the update cannot alias: for a TF1
    ``RefVariable`` ``read_value()`` (an Identity of the ref) shares the buffer the update
    writes in place (measured: the snapshot then equals the updated value and every step
    looks like "no change"), so copy it explicitly. ``DeepCopy`` states the intent; ``x + 0``
    also works today but is an arithmetic no-op a graph optimizer is entitled to fold."""
    return tf.raw_ops.DeepCopy(x=var.read_value())


def _apply_gradients(original):
    def apply_gradients(self, grads_and_vars, global_step=None, name=None, *args, **kwargs):
        if not registry.active() or site.in_apply() or tf.distribute.has_strategy():
            return original(self, grads_and_vars, global_step, name, *args, **kwargs)
        pairs = tuple(grads_and_vars)
        if not pairs or all(g is None for g, _ in pairs):
            return original(self, pairs, global_step, name, *args, **kwargs)
        grads = [None if g is None else (g if isinstance(g, tf.IndexedSlices) else tf.convert_to_tensor(g))
                 for g, _ in pairs]
        return site.apply_site(TF1(global_step), self, grads, [v for _, v in pairs],
                               lambda: original(self, pairs, global_step, name, *args, **kwargs))

    return apply_gradients
