"""tf_keras (legacy Keras 2): ``apply_gradients`` of ``tf_keras.optimizers.Optimizer`` (the 2.11+
optimizer, which every ``tf_keras.optimizers.*`` class inherits) and of ``OptimizerV2``
(``tf_keras.optimizers.legacy.*``).

tf_keras is never imported here: it is hooked once it is in ``sys.modules`` (checked when a watch
is entered and at each ``tape.gradient`` / ``tf.function`` call). Under ``tf.distribute`` tf_keras
sums the replicas' gradients *before* clipping them, in the replica context: the 2.11+ optimizer in
``apply_gradients`` (``aggregate_gradients``), then ``_BaseOptimizer._clip_gradients``;
OptimizerV2 in ``apply_gradients`` (``_aggregate_gradients``), then ``_transform_gradients``.
Tapping those clip steps gives the all-reduced gradients before and after clipping, without a
second all-reduce.
"""
from __future__ import annotations

import contextlib
import threading

import tensorflow as tf

from auditor import patching, registry
from auditor.engines import distribute, site
from auditor.patching import Patch

_OPTIMIZERS = (
    ("tf_keras.src.optimizers.optimizer", "Optimizer"),
    ("tf_keras.src.optimizers.legacy.optimizer_v2", "OptimizerV2"),
)
# (module, class, clip step, whether it takes (gradient, variable) pairs)
_CLIP_STEPS = (
    ("tf_keras.src.optimizers.optimizer", "_BaseOptimizer", "_clip_gradients", False),
    ("tf_keras.src.optimizers.legacy.optimizer_v2", "OptimizerV2", "_transform_gradients", True),
)
_tls = threading.local()  # tap: the replica apply whose clip step is being tapped (per replica thread)


def ready() -> bool:
    return patching.imported(_OPTIMIZERS)


def patches() -> list[Patch]:
    out = patching.method_patches(_OPTIMIZERS, "apply_gradients", _apply_gradients)
    for module_name, cls_name, attr, pairs in _CLIP_STEPS:
        out += patching.method_patches([(module_name, cls_name)], attr, _clip_step(pairs))
    return out


class ReplicaTap(site.Tap):
    """One replica's apply: its clip step reports the all-reduced gradients before and after
    clipping (non-None, in the order of the apply's pairs)."""

    def __init__(self, optimizer, probe):
        self.optimizer = optimizer
        self.probe = probe
        self.reached = False

    def before_clip(self, reduced):
        self.reached = True
        if self.probe.has_clipping() and not self.probe.user_clip:
            self.reduced_pre = lambda: distribute.summed_norm(reduced)  # built inside the recording cond

    def after_clip(self, clipped):
        none_mask = self.probe.none_mask
        if len(clipped) != none_mask.count(False):
            return  # a gradient transformer changed the list: the row's applied norms stay NaN
        real = iter(clipped)
        self.reduced_grads = [None if none else next(real) for none in none_mask]


class TfKeras(site.ApplyEngine):
    def replica(self):
        return distribute.replica_info()

    def iteration(self, optimizer):
        with tf.init_scope():  # OptimizerV2 creates `iterations` on first use: there, as it does itself
            _ = optimizer.iterations
        return tf.cast(tf.identity(optimizer.iterations), tf.int64)  # before apply increments it

    @contextlib.contextmanager
    def tap(self, optimizer, probe, grads):
        if probe.replica is None:
            yield site.Tap()
            return
        tap, outer = ReplicaTap(optimizer, probe), getattr(_tls, "tap", None)
        _tls.tap = tap
        try:
            yield tap
        finally:
            _tls.tap = outer


ENGINE = TfKeras()


def _apply_gradients(original):
    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        if not registry.active() or site.in_apply():
            return original(self, grads_and_vars, *args, **kwargs)
        pairs = list(grads_and_vars)
        if not pairs or (tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context()) \
                or all(g is None for g, _ in pairs):  # tf_keras raises or no-ops itself
            return original(self, pairs, *args, **kwargs)
        return site.apply_site(ENGINE, self, [g for g, _ in pairs], [v for _, v in pairs],
                               lambda: original(self, pairs, *args, **kwargs))

    apply_gradients.__auditor_patch__ = True
    return apply_gradients


def _clip_step(pairs: bool):
    """The clip step of one tf_keras optimizer family, reporting to the pending replica apply
    (``pairs``: OptimizerV2's ``_transform_gradients`` takes (gradient, variable) pairs)."""

    def make(original):
        def tapped(self, grads, *args, **kwargs):
            tap = getattr(_tls, "tap", None)
            if tap is None or tap.optimizer is not self or tap.reached:
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

    return make
