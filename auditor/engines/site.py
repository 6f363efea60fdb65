"""The one apply-site flow every engine runs, and what engines tell it (``ApplyEngine``).

For each optimizer ``apply`` inside a watch: find the watches that see it, the probe of this
site (optimizer, variables, None pattern, replica), attach it to those watches (None gradients,
your own clipping), then emit the probe's ops before the optimizer's own apply, run it, emit the
ops after it, and give the watches an eager host point. Engines differ only in how their patched
method reads the call (gradients, variables, the original call), the step counter, the probe kind,
a tap around the original call (``tf.distribute``) and how the result is tied to the recording (TF1
graphs): what ``ApplyEngine`` subclasses override.
"""
from __future__ import annotations

import contextlib
import threading

import tensorflow as tf

from auditor import registry
from auditor.probe import ClipConfig, DeviceProbe, UserClip

_tls = threading.local()  # per thread: in_apply (the flow is running), clips (your own clipping)
_CLIP_MEMORY = 4096


class Tap:
    """What an engine's tap around the original call saw (``tf.distribute``): per variable the
    all-reduced gradient applied, and the all-reduced norm before clipping (a tensor, or a
    callable building it where it is used); ``reached`` False: skip this step's row."""

    reduced_grads = None
    reduced_pre = None
    reached = True


class ApplyEngine:
    """The defaults of an engine (Keras-like optimizers with a device probe); engines override."""

    keeps_traced = True  # probes traced into a graph stay alive with their optimizer

    def replica(self):
        """``tf.distribute`` replica information, for engines that record per replica."""
        return None

    def probe(self, optimizer, variables, none_mask, with_snapshots, replica):
        key = (id(optimizer), tuple(id(v) for v in variables), none_mask, replica and replica[:2])

        def matches(probe):
            return (probe.optimizer_ref() is optimizer and all(a is b for a, b in zip(probe.variables, variables))
                    and not (with_snapshots and probe.snapshots is None))

        return registry.probe(key, matches,
                              lambda: DeviceProbe(optimizer, variables, none_mask, with_snapshots, replica))

    def iteration(self, optimizer):
        """The optimizer's step counter before this apply (an int64 scalar tensor)."""
        raise NotImplementedError

    def clip(self, optimizer) -> ClipConfig:
        return ClipConfig.of(optimizer)

    @contextlib.contextmanager
    def tap(self, optimizer, probe, grads):
        yield Tap()

    def ordered(self, deps):
        """A context in which new ops run after ``deps`` (needed in a plain graph only: functions
        and eager code order stateful ops by themselves)."""
        return contextlib.nullcontext()

    def finish(self, result, after):
        return result


def in_apply() -> bool:
    """Whether the flow is running in this thread (the optimizer's own calls are not observed)."""
    return getattr(_tls, "in_apply", False)


def apply_site(engine: ApplyEngine, optimizer, grads, variables, original):
    """Record one ``apply`` of ``optimizer`` (``original()`` runs the optimizer's own)."""
    if not registry.active() or in_apply():
        return original()
    watchers = registry.watching(optimizer)
    if not watchers or not grads or variables is None or len(variables) != len(grads):
        return original()
    none_mask = tuple(g is None for g in grads)
    with_snapshots = any(w.settings.check_changes != "off" for w in watchers)
    replica = engine.replica()
    probe = engine.probe(optimizer, variables, none_mask, with_snapshots, replica)
    user = attach(probe, optimizer, watchers, grads, engine.keeps_traced)
    _tls.in_apply = True
    try:
        clip = engine.clip(optimizer)
        state = probe.before(engine.iteration(optimizer), grads, clip, user)
        with engine.tap(optimizer, probe, grads) as tap:
            with engine.ordered(state.deps):
                result = original()
        with engine.ordered([result]):
            after = probe.after(state, tap.reduced_grads, tap.reduced_pre, clip.scale) if tap.reached else None
        result = engine.finish(result, after)
    finally:
        _tls.in_apply = False
    if tf.executing_eagerly():
        for watcher in watchers:
            watcher.after_eager_apply(probe)
    return result


def attach(probe, optimizer, watchers, grads, keep_traced: bool) -> UserClip:
    """Wire a probe to the watches at trace time; return the user clipping it sees.

    Traced probes are kept alive with their optimizer (so ``watch(model)`` can re-enable them); a
    probe whose gradients came out of user clipping is marked so."""
    if keep_traced and not tf.executing_eagerly():
        registry.keep_traced(optimizer, probe)
    for watcher in watchers:
        registry.subscribe(probe, watcher)
        watcher.site_traced(probe)
    user = _user_clip(grads)
    if user.seen():
        probe.user_clip = True
    return user


# ---- your own clipping --------------------------------------------------------------------------
def remember_clip(tensor, kind: str, norm) -> None:
    """A clip of yours produced ``tensor``: ``kind`` "global" (``norm``: the global norm before it)
    or "single" (``norm``: a callable building that tensor's norm before the clip)."""
    memory = _clip_memory()
    memory.append((tensor, kind, norm))
    if len(memory) > _CLIP_MEMORY:
        del memory[: len(memory) - _CLIP_MEMORY]


def clip_memory_size() -> int:
    """Clips remembered in this thread (a testing hook)."""
    return len(_clip_memory())


def _clip_memory() -> list:
    memory = getattr(_tls, "clips", None)
    if memory is None:
        memory = _tls.clips = []
    return memory


def _same_context(tensor) -> bool:
    if tf.executing_eagerly():
        return not hasattr(tensor, "graph") or isinstance(tensor, tf.__internal__.EagerTensor)
    try:
        return tensor.graph is tf.compat.v1.get_default_graph()
    except AttributeError:
        return False


def _user_clip(grads) -> UserClip:
    """Per gradient: the norm before a user clip that produced it, plus a shared global norm."""
    memory = _clip_memory()
    if not memory:
        return UserClip([None] * len(grads))
    per, global_norm = [], None
    for g in grads:
        found = None
        for tensor, kind, norm in reversed(memory):
            if tensor is g:
                found = (kind, norm)
                break
        if found and _same_context(g):
            if found[0] == "global":
                global_norm = found[1]
                per.append(None)
            else:
                per.append(found[1])
        else:
            per.append(None)
    memory.clear()
    return UserClip(per, global_norm)
