"""Keras 3 optimizers (``keras.optimizers.*``, the TensorFlow backend): ``apply``.

``apply_gradients`` and ``model.fit``'s train step both call ``apply``, with the gradients
before Keras drops ``None`` entries and before its ``clipnorm`` / ``global_clipnorm`` /
``clipvalue`` clipping; each call advances ``iterations`` once. Under ``tf.distribute`` Keras 3
calls ``apply`` once per replica and all-reduces the clipped gradients inside it: the tap reads
that result (no second all-reduce) and, when the optimizer clips, adds one all-reduce of the
unclipped gradients for the norm before clipping.
"""
from __future__ import annotations

import contextlib
import threading
import weakref

import tensorflow as tf

from auditor import graph_stats as gs
from auditor import registry
from auditor.engines import distribute, site
from auditor.patching import Patch

_tls = threading.local()  # pending: (optimizer, None mask, Tap) of the replica apply being recorded


class Keras3(site.ApplyEngine):
    def replica(self):
        return distribute.replica_info()

    def iteration(self, optimizer):
        return tf.convert_to_tensor(optimizer._iterations)  # one read, before apply increments it

    @contextlib.contextmanager
    def tap(self, optimizer, probe, grads):
        tap = site.Tap()
        if probe.replica is None:
            yield tap
            return
        if probe.has_clipping() and not probe.user_clip:
            tap.reduced_pre = distribute.all_reduced_norm(grads)
        _tls.pending = (optimizer, probe.none_mask, tap)
        try:
            yield tap
        finally:
            _tls.pending = None


ENGINE = Keras3()


def patches() -> list[Patch]:
    import keras

    mro = keras.optimizers.Optimizer.__mro__
    owner = next((cls for cls in mro if "apply" in cls.__dict__), None)
    if owner is None:
        raise RuntimeError("no class defines Optimizer.apply")
    out = [Patch(owner, "apply", _apply)]
    # Keras 3.15: backend.tensorflow.optimizer.TFOptimizer (another backend has no TF all-reduce)
    reducer = next((cls for cls in mro if "_all_reduce_sum_gradients" in cls.__dict__), None)
    if reducer is not None:
        out.append(Patch(reducer, "_all_reduce_sum_gradients", _all_reduce_sum))
    # LossScaleOptimizer: its finite and overflow branches (an overflow step never reaches the
    # inner optimizer's apply, so it has no record: these count them)
    scaler = keras.optimizers.LossScaleOptimizer
    for name, overflow in (("_stateful_handle_finite_grads", False), ("_stateful_handle_non_finite_grads", True)):
        if name in scaler.__dict__:
            out.append(Patch(scaler, name, lambda original, overflow=overflow: _loss_scale_branch(original, overflow)))
    return out


_scale_counters: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # LossScaleOptimizer -> int64 [finite, overflow]


def _loss_scale_branch(original, overflow: bool):
    def branch(self, *args, **kwargs):
        if registry.active() and not site.in_apply():
            watchers = registry.watching(self)
            if watchers:
                counts = _counters(self)
                counts.scatter_nd_add([[1 if overflow else 0]], tf.constant([1], tf.int64))
                for watcher in watchers:
                    watcher.loss_scale_seen(self, lambda counts=counts, scale=self.dynamic_scale: _read(counts, scale))
        return original(self, *args, **kwargs)

    return branch


def _read(counts, scale):
    """(finite steps, overflow steps, loss scale) on the host."""
    with tf.init_scope():
        finite, overflow = (int(x) for x in tf.reshape(tf.identity(counts), [-1]).numpy())
        value = tf.reshape(tf.cast(tf.identity(gs.read(scale)), tf.float32), [-1]).numpy()
        return finite, overflow, float(value[0]) if value.size else float("nan")  # nan: not initialised yet


def _counters(optimizer):
    with registry.lock:
        counts = _scale_counters.get(optimizer)
        if counts is None:
            with tf.init_scope():  # created eagerly, also from inside a trace
                counts = _scale_counters[optimizer] = gs.make_variable(tf.constant([0, 0], tf.int64), "auditor_loss_scale")
        return counts


def _apply(original):
    def apply(self, grads, trainable_variables=None):
        if not registry.active() or site.in_apply():
            return original(self, grads, trainable_variables)
        grads = list(grads)
        if trainable_variables is not None:
            variables = list(trainable_variables)
        elif getattr(self, "built", False):
            variables = list(self._trainable_variables)
        else:
            variables = None
        return site.apply_site(ENGINE, self, grads, variables, lambda: original(self, grads, trainable_variables))

    return apply


def _all_reduce_sum(original):
    def all_reduce_sum_gradients(self, grads_and_vars):
        """The replica apply's all-reduced (clipped) gradients, realigned with its variables."""
        result = original(self, grads_and_vars)
        pending = getattr(_tls, "pending", None)
        if pending is not None and pending[0] is self:
            result = list(result)
            none_mask, tap = pending[1], pending[2]
            if len(result) == none_mask.count(False):  # Keras dropped the None gradients: realign
                real = iter(g for g, _ in result)
                tap.reduced_grads = [None if none else next(real) for none in none_mask]
        return result

    return all_reduce_sum_gradients
