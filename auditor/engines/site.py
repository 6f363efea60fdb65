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
import os
import sys
import sysconfig
import threading
import weakref

import tensorflow as tf
from tensorflow.python.util import tf_stack

from auditor import registry
from auditor.probe import ClipConfig, DeviceProbe, UserClip

_tls = threading.local()  # per thread: in_apply (the flow is running), clips (your own clipping)
_CLIP_MEMORY = 4096
EAGER_SIGHTINGS = 8  # eager applies of a site whose call site is looked up (then it is known)
_LIBRARIES = ("tensorflow", "keras", "tf_keras", "sonnet", "auditor", "absl", "tree", "wrapt")


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

    def probe(self, optimizer, variables, none_mask, with_snapshots, replica, with_histograms):
        key = (id(optimizer), tuple(id(v) for v in variables), none_mask, replica and replica[:2])

        def matches(probe):
            return (probe.optimizer_ref() is optimizer and all(a is b for a, b in zip(probe.variables, variables))
                    and not (with_snapshots and probe.snapshots is None)
                    and not (with_histograms and not probe.histograms_built))

        return registry.probe(key, matches, lambda: DeviceProbe(optimizer, variables, none_mask, with_snapshots,
                                                                replica, with_histograms))

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
    with_histograms = any(w.settings.histogram_every for w in watchers)
    replica = engine.replica()
    probe = engine.probe(optimizer, variables, none_mask, with_snapshots, replica, with_histograms)
    user = attach(probe, optimizer, watchers, grads, engine.keeps_traced)
    note_call_site(probe)
    repeated = repeated_applies(optimizer, probe, grads)
    if repeated:
        for watcher in watchers:
            watcher.repeated_apply(optimizer, repeated)
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
    if user.discarded:
        for watcher in watchers:
            watcher.clip_discarded(optimizer, probe)
    return user


# ---- where your code applied ----------------------------------------------------------------------
def note_call_site(probe) -> None:
    """Add the ``file:line`` of the user code that called ``apply`` to the probe: once per trace
    (a graph site runs this flow only when traced) and on a site's first eager applies. TF's own
    stack (``tf_stack``) maps autograph's generated code back to your source lines; frames of
    TensorFlow, Keras, tf_keras, Sonnet, the auditor and the standard library are skipped."""
    if tf.executing_eagerly():
        if probe.eager_sightings >= EAGER_SIGHTINGS:
            return
        probe.eager_sightings += 1
    where = call_site()
    if where is not None and where not in probe.call_sites:
        probe.call_sites = probe.call_sites + (where,)


def call_site() -> str | None:
    """The innermost frame of the stack that is the user's code, as ``file:line``."""
    skip = _library_dirs()
    for frame in reversed(tf_stack.extract_stack()):
        filename = frame.filename
        if filename.startswith(skip) or filename.startswith("<") or "__autograph_generated" in filename:
            continue
        return f"{_shown_path(filename)}:{frame.lineno}"
    return None


_dirs: dict = {"stdlib": os.path.abspath(sysconfig.get_paths()["stdlib"]) + os.sep}


def _library_dirs() -> tuple:
    """The directories of the libraries imported so far (and of the standard library)."""
    for name in _LIBRARIES:
        if name not in _dirs:
            module = sys.modules.get(name)
            if module is not None and getattr(module, "__file__", None):
                _dirs[name] = os.path.dirname(os.path.abspath(module.__file__)) + os.sep
    return tuple(_dirs.values())


def _shown_path(filename: str) -> str:
    """Relative to the working directory when inside it, else as is."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive
        return filename
    return filename if relative.startswith("..") else relative


# ---- the same optimizer twice in one step -----------------------------------------------------------
_last_eager: dict = {}  # id(optimizer) -> (weak reference to it, the first gradient it was last given)
_trace_applies: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # function graph -> applies


def repeated_applies(optimizer, probe, grads):
    """When this apply repeats one of ``optimizer`` in the same step, every apply of that step so
    far as ``[(probe, call site)]``; else None. Inside one traced ``tf.function`` call: applies from
    two different lines of your code, or the very same gradient tensors applied again (a loop that
    applies once per iteration, or Keras' unrolled steps, is one line with new gradients: not a
    repeat). Eagerly: the very same gradient tensors applied again."""
    first = next((g for g in grads if g is not None), None)
    where = probe.call_sites[-1] if probe.call_sites else None
    if tf.executing_eagerly():
        key = id(optimizer)
        last = _last_eager.get(key)
        _last_eager[key] = (weakref.ref(optimizer), first)
        if last is not None and last[0]() is optimizer and first is not None and last[1] is first:
            sites = probe.call_sites[-2:] if len(probe.call_sites) >= 2 else (where, where)
            return [(probe, w) for w in sites]
        return None
    graph = _function_graph()
    if graph is None:
        return None
    applies = _trace_applies.setdefault(graph, {}).setdefault(id(optimizer), [])
    repeat = any(g is first for _, _, g in applies) and first is not None
    applies.append((probe, where, first))
    if len(applies) < 2 or not (repeat or len({w for _, w, _ in applies}) >= 2):
        return None
    return [(p, w) for p, w, _ in applies]


def _function_graph():
    """The outermost ``tf.function`` graph being traced (None outside one, e.g. a TF1 graph)."""
    from tensorflow.python.framework.func_graph import FuncGraph

    graph = tf.compat.v1.get_default_graph()
    if not isinstance(graph, FuncGraph):
        return None
    while isinstance(getattr(graph, "outer_graph", None), FuncGraph):
        graph = graph.outer_graph
    return graph


# ---- your own clipping --------------------------------------------------------------------------
def remember_clip(tensor, kind: str, norm, source=None) -> None:
    """A clip of yours produced ``tensor`` from ``source``: ``kind`` "global" (``norm``: the global
    norm before it) or "single" (``norm``: a callable building that tensor's norm before the clip)."""
    memory = _clip_memory()
    memory.append((tensor, kind, norm, source))
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
        for tensor, kind, norm, _ in reversed(memory):
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
    clip = UserClip(per, global_norm)
    if not clip.seen():  # gradients that went into a clip of yours reach apply unclipped
        sources = {id(source) for *_, source in memory if source is not None}
        clip.discarded = any(g is not None and id(g) in sources and _same_context(g) for g in grads)
    memory.clear()
    return clip
