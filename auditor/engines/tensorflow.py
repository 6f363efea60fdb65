"""TensorFlow itself: ``GradientTape.gradient`` (variables whose gradients were computed but
never applied), ``tf.clip_by_global_norm`` / ``tf.clip_by_norm`` (your own clipping, for the norm
before it) and ``tf.function`` calls (the host points where a watch drains its device buffers).
"""
from __future__ import annotations

import sys
import threading

import tensorflow as tf

from auditor import graph_stats as gs
from auditor import patching, registry
from auditor.engines import site
from auditor.patching import Patch

_tls = threading.local()  # depth: 1 while this thread runs an outermost tf.function call


def patches() -> list[Patch]:
    from tensorflow.python.eager.polymorphic_function import polymorphic_function

    return [
        Patch(tf.GradientTape, "gradient", _gradient),
        Patch(tf, "clip_by_global_norm", _clip_by_global_norm),
        Patch(tf, "clip_by_norm", _clip_by_norm),
        Patch(tf, "clip_by_value", _clip_by_value),
        Patch(polymorphic_function.Function, "__call__", _function_call),
    ] + [Patch(module, name, make) for module in _compat_v1_modules()
         for name, make in (("clip_by_global_norm", _clip_by_global_norm), ("clip_by_norm", _clip_by_norm),
                            ("clip_by_value", _clip_by_value))]


def _compat_v1_modules() -> list:
    """TF1 code imports ``tensorflow.compat.v1 as tf``: the same functions under a second name.
    ``tf.compat.v1`` is a lazy module wrapper that TensorFlow replaces when some libraries are
    imported (tf_keras does): code holding the first one (``sys.modules`` keeps it as
    ``tensorflow._api.v2.compat.v1``) must see the patch too."""
    found = []
    for module in (tf.compat.v1, sys.modules.get("tensorflow.compat.v1"),
                   sys.modules.get("tensorflow._api.v2.compat.v1")):
        if module is not None and all(module is not other for other in found):
            found.append(module)
    return found


def is_variable(obj) -> bool:
    import keras

    return isinstance(obj, (tf.Variable, keras.Variable))


class TapeSnapshot:
    """A variable's value when the tape first saw it, to tell at exit whether it changed. A
    variable created during a ``tf.function``'s first trace (Sonnet's usual way) has no value yet
    when the tape sees it: its value is taken at the next host point instead (``settle``)."""

    def __init__(self, variable, value):
        self.variable = variable
        self.value = value  # None: not taken yet

    @classmethod
    def take(cls, variable):
        """The snapshot, or None in a TF1 graph (the value lives in a Session)."""
        with tf.init_scope():
            if not tf.executing_eagerly():
                return None
            return cls(variable, cls._value(variable))

    @staticmethod
    def _value(variable):
        try:
            value = tf.identity(gs.read(variable))
        except (tf.errors.OpError, ValueError):
            return None  # created in a trace and not initialised yet
        return value if value.shape == variable.shape else None

    def settle(self) -> bool:
        """Take the value now if it was not there when first seen; whether it is taken."""
        if self.value is None:
            with tf.init_scope():
                self.value = self._value(self.variable)
        return self.value is not None

    def differs(self) -> bool:
        """Whether the variable differs from the snapshot (True when none could ever be taken:
        a variable that cannot be compared is not reported as unchanged)."""
        if self.value is None:
            return True
        with tf.init_scope():
            current = gs.read(self.variable)
            if current.shape != self.value.shape:
                return True
            return bool(gs.differs(current, self.value).numpy())


def _gradient(original):
    def gradient(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if registry.active():
            patching.install_late()
            watchers = registry.watching()
            if watchers:
                sources = kwargs["sources"] if "sources" in kwargs else args[1]
                flat_sources = tf.nest.flatten(sources)
                flat_result = tf.nest.flatten(result, expand_composites=False)
                if len(flat_sources) == len(flat_result):
                    pairs = [(s, g) for s, g in zip(flat_sources, flat_result) if is_variable(s)]
                    for watcher in watchers:
                        watcher.tape_observed(pairs, TapeSnapshot.take)
        return result

    return gradient


def _clip_by_global_norm(original):
    def clip_by_global_norm(t_list, clip_norm, use_norm=None, name=None):
        clipped, norm = original(t_list, clip_norm, use_norm=use_norm, name=name)
        if registry.active() and not site.in_apply() and registry.watching():
            for tensor, source in zip(clipped, t_list):
                if tensor is not None:
                    site.remember_clip(tensor, "global", norm, source)
        return clipped, norm

    return clip_by_global_norm


def _clip_by_norm(original):
    def clip_by_norm(t, clip_norm, axes=None, name=None):
        result = original(t, clip_norm, axes=axes, name=name)
        if axes is None:
            _remember_single_clip(result, t)
        return result

    return clip_by_norm


def _clip_by_value(original):
    def clip_by_value(t, clip_value_min, clip_value_max, name=None):
        result = original(t, clip_value_min, clip_value_max, name=name)
        _remember_single_clip(result, t)
        return result

    return clip_by_value


def _remember_single_clip(result, t) -> None:
    """A clip of one tensor ``t`` produced ``result``: remember it, with ``t``'s norm before the clip
    (while a watch of this thread is active and the clip is not the optimizer's own)."""
    if (registry.active() and not site.in_apply() and registry.watching()
            and not isinstance(t, tf.IndexedSlices)):
        def norm(t=t):  # built where it is used: inside the probe's recording branch
            return tf.sqrt(tf.reduce_sum(tf.square(tf.cast(t, tf.float32))))

        site.remember_clip(result, "single", norm, t)


def _function_call(original):
    def call(self, *args, **kwargs):
        if not registry.active():
            return original(self, *args, **kwargs)
        state = _tls.__dict__
        if state.get("depth") or site.in_apply():  # a nested call, or the probe's own eager functions
            return original(self, *args, **kwargs)
        patching.install_late()
        tid = registry.thread_id()
        registry.enter_function(self, tid)
        state["depth"] = 1
        try:
            result = original(self, *args, **kwargs)
        finally:
            state["depth"] = 0
            registry.leave_function(tid)
        if tf.executing_eagerly():
            for watcher in registry.watching(None, tid):
                watcher.after_function_call()
        return result

    return call
