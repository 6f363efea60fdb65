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

import tensorflow as tf

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
    return out


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
