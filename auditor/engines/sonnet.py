"""Sonnet 2 optimizers (``snt.optimizers.SGD``, ``Adam``, ``Momentum``, ``RMSProp``): ``apply(updates,
parameters)``.

Sonnet is never imported here: it is hooked once it is in ``sys.modules``. ``step`` is Adam's own
``step`` counter before the apply; SGD, Momentum and RMSProp keep none, so the auditor counts their
applies itself (a device counter per optimizer, advanced by every apply made while a watch was
active, eagerly or in a function traced then). Sonnet optimizers clip nothing themselves and refuse
``tf.distribute`` strategies other than their own replicators: no replica handling here.
"""
from __future__ import annotations

import weakref

import tensorflow as tf

from auditor import graph_stats as gs
from auditor import patching, registry
from auditor.engines import site
from auditor.patching import Patch

_OPTIMIZERS = (
    ("sonnet.src.optimizers.sgd", "SGD"),
    ("sonnet.src.optimizers.adam", "Adam"),
    ("sonnet.src.optimizers.momentum", "Momentum"),
    ("sonnet.src.optimizers.rmsprop", "RMSProp"),
)
_counters: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # optimizer -> int64 variable


def ready() -> bool:
    return patching.imported(_OPTIMIZERS)


def patches() -> list[Patch]:
    return patching.method_patches(_OPTIMIZERS, "apply", _apply)


class Sonnet(site.ApplyEngine):
    def iteration(self, optimizer):
        step = getattr(optimizer, "step", None)
        if isinstance(step, tf.Variable) and step.dtype.is_integer:
            return tf.cast(tf.identity(step), tf.int64)  # Adam: read before apply increments it
        with registry.lock:
            counter = _counters.get(optimizer)
            if counter is None:
                with tf.init_scope():  # created eagerly, also from inside a trace
                    counter = _counters[optimizer] = gs.make_variable(tf.constant(0, tf.int64), "auditor_applies")
        return counter.assign_add(1) - 1


ENGINE = Sonnet()


def _apply(original):
    def apply(self, updates, parameters):
        if not registry.active() or site.in_apply():
            return original(self, updates, parameters)
        updates, parameters = list(updates), list(parameters)
        if all(u is None for u in updates):  # Sonnet raises its own error
            return original(self, updates, parameters)
        return site.apply_site(ENGINE, self, updates, parameters, lambda: original(self, updates, parameters))

    return apply
