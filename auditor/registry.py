"""The registry of active watches and of apply-site probes: who watches which apply, and where
drained rows go.

A watch takes part through its recorder (``auditor.recorder.Recorder``): the registry reads its
``thread`` and ``owns(optimizer)``, and hands it rows (``ingest``, ``ingest_histograms``). Engines
call the functions here; nothing here imports TensorFlow or knows an engine.
"""
from __future__ import annotations

import threading
import weakref

lock = threading.RLock()  # guards everything below, and patch installation (auditor.engines)
_watchers: tuple = ()  # recorders of the active watches, in entry order (replaced, never mutated)
_probes: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()  # site key -> probe
_live: set = set()  # probes with subscribers (kept alive here)
# Probes traced into a graph stay alive as long as their optimizer, so a later watch(model)
# can re-enable them; eager-only probes are dropped when no watch uses them.
_traced: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# The apply sites each outermost tf.function traced, so a later watch re-enables them when the
# function is called again inside it (a watch per epoch around one function records every epoch).
_function_sites: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_calling: dict = {}  # owner thread id -> the outermost tf.function it is calling
# (id of an outermost tf.function, thread id) whose sites were re-enabled since a watch last started or ended
_synced: set = set()
PARENT = "_auditor_parent"  # attribute of a replica thread: the id of the thread that started it


# ---- threads ---------------------------------------------------------------------------------
def thread_id() -> int:
    """The id of the thread that owns this work: a ``tf.distribute`` replica thread counts as
    the thread that started it (``strategy.run`` / ``fit`` run replicas in threads)."""
    thread = threading.current_thread()
    parent = getattr(thread, PARENT, None)
    return parent if parent is not None else threading.get_ident()


def adopt(thread) -> None:
    """``thread`` (being created by the current thread) works for the current thread's watches."""
    setattr(thread, PARENT, thread_id())


# ---- watches ---------------------------------------------------------------------------------
def active() -> bool:
    """Whether any watch is active (the cheap test every patched function starts with)."""
    return bool(_watchers)


def watching(optimizer=None, tid=None) -> list:
    """Recorders that should see an apply of ``optimizer`` in the current thread (``tid``)."""
    watchers = _watchers  # a tuple: read without the lock
    if not watchers:
        return []
    if tid is None:
        tid = thread_id()
    return [w for w in watchers if w.thread == tid or (optimizer is not None and w.owns(optimizer))]


def register(recorder) -> bool:
    """Add a watch's recorder and subscribe it to the probes it inherits (those of enclosing
    watches of its thread, and those of its model's optimizer). Returns whether it is the first."""
    global _watchers
    with lock:
        first = not _watchers
        inherited = [p for w in _watchers if w.thread == recorder.thread for p in w.probes]
        candidates = list(_live) + list(_probes.values()) + [p for ps in list(_traced.values()) for p in ps]
        for probe in candidates:
            opt = probe.optimizer_ref()
            if opt is not None and recorder.owns(opt):
                inherited.append(probe)
        _watchers = _watchers + (recorder,)
        _synced.clear()
        seen = set()
        for probe in inherited:
            if id(probe) not in seen:
                seen.add(id(probe))
                subscribe(probe, recorder)
        return first


def unregister(recorder) -> bool:
    """Remove a watch's recorder: its probes are drained and go inert when unused. Returns
    whether it was the last watch."""
    global _watchers
    with lock:
        try:
            for probe in list(recorder.probes):
                drain(probe)
                if recorder in probe.subscribers:
                    probe.subscribers.remove(recorder)
                probe.configure()
                if not probe.subscribers:
                    _live.discard(probe)
        finally:
            _watchers = tuple(w for w in _watchers if w is not recorder)
            _synced.clear()
        return not _watchers


# ---- probes ----------------------------------------------------------------------------------
def probe(key, matches, create):
    """The probe registered under ``key`` if ``matches(probe)``, else a new one from ``create()``."""
    with lock:
        found = _probes.get(key)
        if found is None or not matches(found):
            found = _probes[key] = create()
        return found


def subscribe(probe, recorder) -> None:
    """``recorder`` gets the rows of ``probe`` from now on (earlier rows go to earlier subscribers)."""
    with lock:
        if recorder in probe.subscribers:
            return
        drain(probe)
        probe.subscribers.append(recorder)
        recorder.probes.append(probe)
        _live.add(probe)
        probe.configure()


def drain(probe) -> None:
    """Read the probe's new rows once and hand them to every subscriber."""
    with lock:
        rows, lost = probe.drain()
        for recorder in probe.subscribers:
            recorder.ingest(probe, rows, lost)
        histograms = probe.drain_histograms()
        if histograms is not None:
            for recorder in probe.subscribers:
                recorder.ingest_histograms(probe, histograms)


def keep_traced(optimizer, probe) -> None:
    """A probe traced into a graph: keep it with its optimizer, and with the outermost
    ``tf.function`` being called, so later watches can re-enable it."""
    with lock:
        kept = _traced.setdefault(optimizer, [])
        if probe not in kept:
            kept.append(probe)
        outer = _calling.get(thread_id())
        if outer is not None:
            sites = _function_sites.setdefault(outer, [])
            if probe not in sites:
                sites.append(probe)


def enter_function(function, tid: int) -> None:
    """Thread ``tid`` calls ``function`` (outermost): re-enable the sites it traced in an earlier
    watch for the watches of this call, and note the sites it traces now (the sites are looked at
    once per function, thread and set of watches)."""
    key = (id(function), tid)
    if _function_sites and key not in _synced:
        _synced.add(key)
        try:
            sites = _function_sites.get(function)
        except TypeError:  # not weak-referenceable
            sites = None
        for site in sites or ():
            opt = site.optimizer_ref()
            if opt is None:
                continue
            for recorder in watching(opt, tid):
                if recorder not in site.subscribers:
                    subscribe(site, recorder)
    _calling[tid] = function


def leave_function(tid: int) -> None:
    _calling.pop(tid, None)


# ---- a testing hook ----------------------------------------------------------------------------
def census() -> dict:
    """Counts for tests and debugging: active watches, probes alive, probes with subscribers,
    probes kept with their optimizer (traced)."""
    with lock:
        return {"watches": len(_watchers), "probes": len(_probes), "live": len(_live),
                "traced": sum(len(v) for v in list(_traced.values()))}
