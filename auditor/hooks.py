"""Class-level patches (Keras optimizer ``apply``, ``GradientTape.gradient``, user clipping,
``tf.function`` calls) and the registry of active watches and probes.

Patches are installed when the first watch is entered and restored when the last one
exits (reference counted, under a lock). Each watch sees the applies of the thread that
entered it, plus those of its model's optimizer.
"""
from __future__ import annotations

import sys
import threading
import weakref

import tensorflow as tf

from auditor.probe import Probe, is_variable

_lock = threading.RLock()
_sessions: list = []  # active Audit objects, in entry order
_originals: dict = {}
_extra: dict = {}  # key -> (owner, attribute, original): tf_keras and TF1 patches (auditor.legacy)
_tls = threading.local()
_probes: "weakref.WeakValueDictionary[tuple, Probe]" = weakref.WeakValueDictionary()
_live: set = set()  # probes with subscribers (kept alive here)
# Probes traced into a graph stay alive as long as their optimizer, so a later watch(model)
# can re-enable them; eager-only probes are dropped when no watch uses them.
_traced: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# The apply sites each outermost tf.function traced, so a later watch re-enables them when the
# function is called again inside it (a watch per epoch around one function records every epoch).
_function_sites: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_calling: dict = {}  # owner thread id -> the outermost tf.function it is calling (set while tracing)
_CLIP_MEMORY = 4096


# ---- registry --------------------------------------------------------------------------------
def current_thread_id() -> int:
    """The id of the thread that owns this work: a ``tf.distribute`` replica thread counts as
    the thread that started it (``strategy.run`` / ``fit`` run replicas in threads)."""
    thread = threading.current_thread()
    parent = getattr(thread, "_auditor_parent", None)
    return parent if parent is not None else threading.get_ident()


def active_sessions(optimizer=None) -> list:
    """Watches that should see an apply of ``optimizer`` in the current thread."""
    if not _sessions:
        return []
    tid = current_thread_id()
    with _lock:
        return [s for s in _sessions if s._thread == tid or (optimizer is not None and s._owns(optimizer))]


def register(session) -> None:
    """Add a watch; install the patches if it is the first one; subscribe inherited probes."""
    with _lock:
        if not _sessions:
            _install()
        else:
            _ensure_tf_keras()
        inherited = []
        for other in _sessions:
            if other._thread == session._thread:
                inherited.extend(other._probes)
        candidates = list(_live) + list(_probes.values()) + [p for ps in list(_traced.values()) for p in ps]
        for probe in candidates:
            opt = probe.optimizer_ref()
            if opt is not None and session._owns(opt):
                inherited.append(probe)
        _sessions.append(session)
        seen = set()
        for probe in inherited:
            if id(probe) not in seen:
                seen.add(id(probe))
                subscribe(probe, session)


def unregister(session) -> None:
    """Remove a watch: unsubscribe its probes (they go inert if unused); restore patches if last."""
    with _lock:
        try:
            for probe in list(session._probes):
                drain_probe(probe)
                if session in probe.subscribers:
                    probe.subscribers.remove(session)
                probe.configure()
                if not probe.subscribers:
                    _live.discard(probe)
        finally:
            if session in _sessions:
                _sessions.remove(session)
            if not _sessions:
                _restore()


def subscribe(probe: Probe, session) -> None:
    with _lock:
        if session in probe.subscribers:
            return
        drain_probe(probe)  # earlier rows belong to earlier subscribers
        probe.subscribers.append(session)
        session._probes.append(probe)
        _live.add(probe)
        probe.configure()


def drain_probe(probe: Probe) -> None:
    """Read the probe's new rows once and hand them to every subscriber."""
    with _lock:
        rows, tags, lost = probe.ring.drain()
        for session in probe.subscribers:
            session._ingest(probe, rows, tags, lost)
        if probe.hist_on and probe.hist_ring.pending_estimate():
            rows, tags, _ = probe.hist_ring.drain()
            for session in probe.subscribers:
                session._ingest_histograms(probe, rows, tags)


def get_probe(optimizer, variables, none_mask, with_snapshots, replica=None) -> Probe:
    key = (id(optimizer), tuple(id(v) for v in variables), tuple(none_mask), replica and replica[:2])
    with _lock:
        probe = _probes.get(key)
        if (probe is None or probe.optimizer_ref() is not optimizer
                or any(a is not b for a, b in zip(probe.variables, variables))
                or (with_snapshots and probe.snapshots is None)):
            probe = Probe(optimizer, variables, none_mask, with_snapshots, replica)
            _probes[key] = probe
        return probe


# ---- user clipping memory ----------------------------------------------------------------------
def _clip_memory() -> list:
    memory = getattr(_tls, "clips", None)
    if memory is None:
        memory = _tls.clips = []
    return memory


def _remember_clip(tensor, kind, norm) -> None:
    memory = _clip_memory()
    memory.append((tensor, kind, norm))
    if len(memory) > _CLIP_MEMORY:
        del memory[: len(memory) - _CLIP_MEMORY]


def _same_context(tensor) -> bool:
    if tf.executing_eagerly():
        return not hasattr(tensor, "graph") or isinstance(tensor, tf.__internal__.EagerTensor)
    try:
        return tensor.graph is tf.compat.v1.get_default_graph()
    except AttributeError:
        return False


def attach_probe(optimizer, probe, sessions, grads, keep_traced: bool = True):
    """Wire a probe to the watching sessions at trace time; return the user clipping it sees.

    Traced probes are kept alive with their optimizer (so `watch(model)` can re-enable them); a probe
    whose gradients came out of user clipping is marked so.
    """
    if keep_traced and not tf.executing_eagerly():
        with _lock:
            kept = _traced.setdefault(optimizer, [])
            if probe not in kept:
                kept.append(probe)
            outer = _calling.get(current_thread_id())
            if outer is not None:
                sites = _function_sites.setdefault(outer, [])
                if probe not in sites:
                    sites.append(probe)
    for session in sessions:
        subscribe(probe, session)
        session._on_trace(probe)  # may raise AuditError for a None gradient (raise_on GRD101)
    user_norms, user_global = _user_clip_norms(grads)
    if user_global is not None or any(u is not None for u in user_norms):
        probe.user_clip = True
    return user_norms, user_global


def _user_clip_norms(grads):
    """Per gradient: the norm before a user clip that produced it, plus a shared global norm."""
    memory = _clip_memory()
    if not memory:
        return [None] * len(grads), None
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
    return per, global_norm


# ---- tf.distribute --------------------------------------------------------------------------------
def replica_info():
    """``(local replica index, local replica count, device, replicas in sync)`` inside a replica
    context of a strategy with more than one replica in sync, else None. Local: per worker, so that
    ``MultiWorkerMirroredStrategy`` keeps per-process state only."""
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    strategy = tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync < 2:
        return None
    ctx = tf.distribute.get_replica_context()
    devices = [str(d) for d in strategy.extended.worker_devices]
    try:
        device = str(ctx.devices[0]) if getattr(ctx, "devices", None) else None
    except IndexError:
        # MirroredReplicaContext.devices indexes this worker's device list with the global
        # replica id: IndexError on MultiWorkerMirroredStrategy workers other than the first.
        device = None
    if device in devices:
        index = devices.index(device)
    else:
        index = int(tf.get_static_value(ctx.replica_id_in_sync_group) or 0) % max(len(devices), 1)
        device = devices[index] if devices else None
    return index, max(len(devices), 1), device, strategy.num_replicas_in_sync


def _aggregate_pre_norm(grads):
    """Norm of the replicas' summed gradients before clipping: one extra all-reduce, emitted
    only when the optimizer clips (otherwise the all-reduced gradients Keras computes anyway
    give it)."""
    ctx = tf.distribute.get_replica_context()
    dense = [tf.cast(tf.convert_to_tensor(g), tf.float32) for g in grads if g is not None]
    if not dense:
        return None
    summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, dense)
    return tf.sqrt(tf.add_n([gs_sq(t) for t in summed]))


def gs_sq(t):
    from auditor import graph_stats as gs

    return gs.sq_norm(t)


def _patched_all_reduce_sum(self, grads_and_vars):
    """Keras 3 (TF backend) all-reduces the clipped gradients in the replica context: measure
    the result locally (no second all-reduce) for the apply being recorded."""
    result = _originals["all_reduce_sum"](self, grads_and_vars)
    pending = getattr(_tls, "reduce_for", None)
    if pending is not None and pending[0] is self:
        result = list(result)
        none_mask = pending[1]
        if len(result) == none_mask.count(False):  # Keras dropped the None gradients: realign
            real = iter(g for g, _ in result)
            reduced = [None if none else next(real) for none in none_mask]
            _tls.reduced_grads = reduced
    return result


def _patched_replica_thread_init(self, *args, **kwargs):
    _originals["replica_thread_init"](self, *args, **kwargs)
    self._auditor_parent = current_thread_id()


# ---- patched functions --------------------------------------------------------------------------
def _patched_apply(self, grads, trainable_variables=None):
    original = _originals["apply"]
    if not _sessions or getattr(_tls, "in_apply", False):
        return original(self, grads, trainable_variables)
    sessions = active_sessions(self)
    grads = list(grads)
    if trainable_variables is not None:
        variables = list(trainable_variables)
    elif getattr(self, "built", False):
        variables = list(self._trainable_variables)
    else:
        variables = None
    if not sessions or not grads or variables is None or len(variables) != len(grads):
        return original(self, grads, trainable_variables)

    none_mask = [g is None for g in grads]
    with_snapshots = any(s.check_changes != "off" for s in sessions)
    replica = replica_info()
    probe = get_probe(self, variables, none_mask, with_snapshots, replica)
    user_norms, user_global = attach_probe(self, probe, sessions, grads)

    aggregate_pre = None
    if replica is not None and probe.has_clipping() and not probe.user_clip:
        aggregate_pre = _aggregate_pre_norm(grads)
    _tls.in_apply = True
    _tls.reduce_for = (self, none_mask) if replica is not None else None
    _tls.reduced_grads = None
    try:
        iteration = tf.identity(self._iterations.value)  # read before apply increments it
        state = probe.emit_before(iteration, grads, self, user_norms, user_global, aggregate_pre)
        result = original(self, grads, trainable_variables)
        probe.emit_after(state, iteration, _tls.reduced_grads)
    finally:
        _tls.in_apply = False
        _tls.reduce_for = None
        _tls.reduced_grads = None
    if tf.executing_eagerly():
        for session in sessions:
            session._after_eager_apply(probe)
    return result


def _patched_gradient(self, *args, **kwargs):
    result = _originals["gradient"](self, *args, **kwargs)
    if _sessions:
        _ensure_tf_keras()
        sessions = active_sessions()
        if sessions:
            sources = kwargs["sources"] if "sources" in kwargs else args[1]
            flat_sources = tf.nest.flatten(sources)
            flat_result = tf.nest.flatten(result, expand_composites=False)
            if len(flat_sources) == len(flat_result):
                pairs = [(s, g) for s, g in zip(flat_sources, flat_result) if is_variable(s)]
                for session in sessions:
                    session._observe_tape(pairs)
    return result


def _patched_clip_by_global_norm(t_list, clip_norm, use_norm=None, name=None):
    clipped, norm = _originals["clip_by_global_norm"](t_list, clip_norm, use_norm=use_norm, name=name)
    if _sessions and not getattr(_tls, "in_apply", False) and active_sessions():
        for tensor in clipped:
            if tensor is not None:
                _remember_clip(tensor, "global", norm)
    return clipped, norm


def _patched_clip_by_norm(t, clip_norm, axes=None, name=None):
    result = _originals["clip_by_norm"](t, clip_norm, axes=axes, name=name)
    if _sessions and not getattr(_tls, "in_apply", False) and active_sessions() and axes is None and not isinstance(t, tf.IndexedSlices):
        def norm(t=t):  # built where it is used: inside the probe's recording cond
            return tf.sqrt(tf.reduce_sum(tf.square(tf.cast(t, tf.float32))))

        _remember_clip(result, "single", norm)
    return result


def _patched_function_call(self, *args, **kwargs):
    original = _originals["function_call"]
    if not _sessions:
        return original(self, *args, **kwargs)
    _ensure_tf_keras()
    depth = getattr(_tls, "fn_depth", 0)
    tid = current_thread_id()
    if depth == 0:
        _resubscribe_sites(self)
        _calling[tid] = self
    _tls.fn_depth = depth + 1
    try:
        result = original(self, *args, **kwargs)
    finally:
        _tls.fn_depth = depth
        if depth == 0:
            _calling.pop(tid, None)
    if depth == 0 and tf.executing_eagerly():
        for session in active_sessions():
            session._after_function_call()
    return result


def _resubscribe_sites(function) -> None:
    """Re-enable the sites ``function`` traced in an earlier watch for the watches of this call."""
    try:
        sites = _function_sites.get(function)
    except TypeError:  # not weak-referenceable
        return
    for probe in sites or ():
        opt = probe.optimizer_ref()
        if opt is None:
            continue
        for session in active_sessions(opt):
            if session not in probe.subscribers:
                subscribe(probe, session)


# ---- install / restore ----------------------------------------------------------------------------
def _apply_owner():
    import keras

    for cls in keras.optimizers.Optimizer.__mro__:
        if "apply" in cls.__dict__:
            return cls
    raise RuntimeError("no class defines Optimizer.apply")


def _function_class():
    from tensorflow.python.eager.polymorphic_function import polymorphic_function

    return polymorphic_function.Function


def _tf_optimizer_class():
    import keras

    for cls in keras.optimizers.Optimizer.__mro__:  # Keras 3.15: backend.tensorflow.optimizer.TFOptimizer
        if "_all_reduce_sum_gradients" in cls.__dict__:
            return cls
    return None  # another Keras backend: no TF all-reduce to observe


def _replica_thread_class():
    from tensorflow.python.distribute import mirrored_run

    return mirrored_run._MirroredReplicaThread


def patch_targets():
    """(owner, attribute, key, replacement) for every patch."""
    optional = []
    tf_opt = _tf_optimizer_class()
    if tf_opt is not None:
        optional.append((tf_opt, "_all_reduce_sum_gradients", "all_reduce_sum", _patched_all_reduce_sum))
    return optional + [
        (_replica_thread_class(), "__init__", "replica_thread_init", _patched_replica_thread_init),
        (_apply_owner(), "apply", "apply", _patched_apply),
        (tf.GradientTape, "gradient", "gradient", _patched_gradient),
        (tf, "clip_by_global_norm", "clip_by_global_norm", _patched_clip_by_global_norm),
        (tf, "clip_by_norm", "clip_by_norm", _patched_clip_by_norm),
        # TF1 code imports `tensorflow.compat.v1 as tf`: the same functions under a second name.
        (tf.compat.v1, "clip_by_global_norm", "v1_clip_by_global_norm", _patched_clip_by_global_norm),
        (tf.compat.v1, "clip_by_norm", "v1_clip_by_norm", _patched_clip_by_norm),
        (_function_class(), "__call__", "function_call", _patched_function_call),
    ]


def _install() -> None:
    done = []
    try:
        for owner, attr, key, replacement in patch_targets():
            _originals[key] = owner.__dict__[attr] if attr in getattr(owner, "__dict__", {}) else getattr(owner, attr)
            setattr(owner, attr, replacement)
            done.append((owner, attr, key))
        from auditor import legacy

        legacy.install_tf1()
        legacy.ensure_tf_keras()
    except BaseException:
        for owner, attr, key in reversed(done):
            setattr(owner, attr, _originals.pop(key))
        _restore_extra()
        raise


def _ensure_tf_keras() -> None:
    """Hook tf_keras once it is imported (cheap when done or absent; never imports it)."""
    if "tf_keras" in sys.modules and ("tfk_apply_gradients" not in _extra or "tfk_v2_apply_gradients" not in _extra):
        from auditor import legacy

        with _lock:
            if _sessions:
                legacy.ensure_tf_keras()


def _restore_extra() -> None:
    if _extra:
        from auditor import legacy

        legacy.restore_all()


def _restore() -> None:
    try:
        for owner, attr, key, _ in reversed(patch_targets()):
            if key in _originals:
                setattr(owner, attr, _originals.pop(key))
    finally:
        _restore_extra()


def installed() -> bool:
    """Whether the patches are currently in place."""
    return bool(_originals) or bool(_extra)
