"""TF1 sessions: the rows a train op writes into its graph, collected through the session that ran it.

A train op built inside a watch writes its row into a ``SessionRing`` of its graph on every run
(nothing runs on the host per run). While a watch is active, the runs of a session
(``Session.run``, ``make_callable``) and ``Session.close`` are patched: before a session's first
run of a graph with rings, the session initializes them (and the optimizers' run counters, from
the host's count); after every ``COLLECT_EVERY`` runs, at ``close`` and whenever a watch drains a probe, the new rows
are read with one ``Session.run`` of the auditor's own and handed to their probes. What the graph
needs from the host (a probe's plan settings) are ``SessionVariable``s, loaded again when a watch
comes or goes. Rows written beyond a ring's capacity between two collections (runs the patches
did not see) are counted as lost; threads running the same train op at once may overwrite each
other's rows. While a watch of a probe has ``raise_on``, its rows are read after every run, and
the run that wrote them raises what they show. A train op built again without some of its work
has a ``Sampler``: ``Session.run`` runs the optimizer's own update in its place on the runs
between two recorded steps (``every`` > 1), and the train op without its change check on the
recorded runs its plan does not compare.
"""
from __future__ import annotations

import contextlib
import threading
import weakref

import numpy as np
import tensorflow as tf

from auditor import graph_stats as gs
from auditor import registry
from auditor.patching import Patch
from auditor.ring_buffer import SessionRing

ATTRIBUTE = "_auditor_recording"  # a graph's GraphRecording; a session's SessionState
CAPACITY = 1024  # rows per ring
COLLECT_EVERY = CAPACITY // 2  # runs of a session between two collections
_tls = threading.local()  # flags of this thread (``_flagged``)


def patches() -> list[Patch]:
    from tensorflow.python.client import session as session_lib

    base = session_lib.BaseSession
    # every run of a session: Session.run and make_callable end in _call_tf_sessionrun; the
    # callables Keras makes (_make_callable_from_options) call the C API from _Callable
    return [Patch(base, "_call_tf_sessionrun", _run), Patch(base._Callable, "__call__", _call),
            Patch(base, "close", _close)]


class SessionVariable:
    """An int64 variable of the graph in no collection, loaded by each session from the host
    (``value()``) before its first run; ``reload``: the slice of it loaded again when a watch
    comes or goes (``reloader``, ``reload_feed()``)."""

    def __init__(self, value, name: str, reload: slice | None = None):
        self.value = value
        self.reload = reload
        initial = np.asarray(value(), np.int64)
        self.variable = gs.graph_variable(tf.constant(initial), name)
        with tf.init_scope(), tf.device("/cpu:0"):
            self.start = tf.compat.v1.placeholder(tf.int64, initial.shape, name=name + "_start")
            self.initializer = tf.raw_ops.AssignVariableOp(resource=self.variable.handle, value=self.start)
            if reload is not None:
                indices = np.arange(len(initial), dtype=np.int64)[reload]
                self.reloaded = tf.compat.v1.placeholder(tf.int64, indices.shape, name=name + "_reloaded")
                self.reloader = tf.raw_ops.ResourceScatterUpdate(resource=self.variable.handle, indices=indices,
                                                                 updates=self.reloaded)

    def reload_feed(self) -> dict:
        return {self.reloaded: np.asarray(self.value(), np.int64)[self.reload]}

    @property
    def handle(self):
        return self.variable.handle

    def initial_feed(self) -> dict:
        return {self.start: np.asarray(self.value(), np.int64)}

    def read(self):
        with tf.device("/cpu:0"):
            return tf.raw_ops.ReadVariableOp(resource=self.handle, dtype=tf.int64)


class GraphRunCounter(SessionVariable):
    """How many times an optimizer's train ops ran, per session, started from the host's count
    (``host.value``); the variable holds the step of the last run (the count less one)."""

    def __init__(self, host):
        super().__init__(lambda: host.value - 1, "auditor_runs")

    def next(self):
        """The runs before this one (an int64 scalar; the count is incremented by the same op)."""
        with tf.control_dependencies([self.increment()]), tf.device("/cpu:0"):
            return tf.raw_ops.ReadVariableOp(resource=self.handle, dtype=tf.int64)

    def increment(self):
        """The op counting one run."""
        with tf.device("/cpu:0"):
            return tf.raw_ops.AssignAddVariableOp(resource=self.handle, value=tf.constant(1, tf.int64))


class Sampler:
    """A recorded train op (``watched``) and what a session may run in its place: ``plain`` (the
    optimizer's own update, built once more without the auditor's ops) on the runs whose step the
    watches do not record (one in ``every``), and ``unchecked`` (the train op without its change
    check) on recorded runs before ``next_check``, the step from which the plan compares again.
    A run of ``watched`` also fetches its ``step`` (and ``next_check``); the session counts the
    runs from there, one step a run. Where other ops move the step too (or other train ops of
    the optimizer move its run counter), fewer steps are recorded, as without a sampler, and a
    comparison the plan wanted comes at the next run of ``watched``."""

    def __init__(self, watched, step, every: int, plain=None, unchecked=None, next_check=None):
        self.watched = watched._c_op
        self.plain = plain._c_op if plain is not None else None
        self.unchecked = unchecked._c_op if unchecked is not None else None
        self.fetches = [step._as_tf_output()] + ([next_check._as_tf_output()] if unchecked is not None else [])
        self.every = every

    def choose(self, step: int, next_check: int):
        """The op to run at ``step``: ``plain``, ``unchecked``, or None (``watched``)."""
        if self.every > 1 and step % self.every:
            return self.plain if self.plain is not None else self.unchecked
        if self.unchecked is not None and step < next_check:
            return self.unchecked
        return None


class SessionState:
    """What one session did with its graph's recording: parts initialized, runs since the last
    collection, and per ring the rows read so far."""

    def __init__(self):
        self.ready = 0
        self.version = 0  # of the graph's reloadable values last loaded
        self.runs = 0
        self.cursors: dict = {}  # id(ring) -> rows read
        self.steps: dict = {}  # Sampler -> [step of its next run, the plan's next compared step]


class GraphRecording:
    """The rings and run counters of one graph (an attribute of the graph, so it lives as long
    as the graph and keeps its probes alive), and the sessions that ran them."""

    def __init__(self):
        self.probes: list = []  # probes writing a ring (``session_ring``) in this graph
        self.parts: list = []  # what sessions initialize (``initializer``, ``initial_feed()``), in creation order
        self.counters: dict = {}  # id(optimizer) -> GraphRunCounter (optimizers live with their probes)
        self.sessions = weakref.WeakSet()
        self.version = 0  # bumped when reloadable values change (a watch came or went)
        self.raise_on: list = []  # probes a watch with ``raise_on`` subscribes to
        self.samplers: dict = {}  # the recorded train op's TF_Operation -> Sampler

    def add(self, probe) -> None:
        with registry.lock:
            self.probes.append(probe)
            self.parts.append(probe.session_ring)

    def add_variable(self, variable: SessionVariable) -> SessionVariable:
        with registry.lock:
            self.parts.append(variable)
            return variable

    def reconfigured(self) -> None:
        with registry.lock:
            self.version += 1

    def raising(self, probe, wanted: bool) -> None:
        """Whether a watch of ``probe`` has ``raise_on`` (its rows are then read after every run)."""
        with registry.lock:
            self.raise_on = [p for p in self.raise_on if p is not probe] + ([probe] if wanted else [])

    def sample(self, sampler: Sampler) -> None:
        with registry.lock:
            self.samplers[sampler.watched] = sampler

    def sampled_run(self, state: SessionState, original, session, options, feeds, fetches, targets, metadata):
        """``original(session, ...)`` (``_call_tf_sessionrun``) with each sampled train op among
        ``targets`` replaced by what its ``Sampler`` chooses for the step of this run; a run of
        the train op itself also fetches its step (and the plan's next compared step). A run of
        none of them (an assignment of the global step, a restore) makes the next run of each
        run its train op again."""
        fetched, sampled, replaced = [], False, None
        for k, op in enumerate(targets):
            sampler = self.samplers.get(op)
            if sampler is None:
                continue
            sampled = True
            known = state.steps.get(sampler)  # [step of this run, the plan's next compared step]
            instead = sampler.choose(known[0], known[1]) if known is not None else None
            if instead is None:
                fetched.append(sampler)
                continue
            known[0] += 1
            if replaced is None:
                replaced = list(targets)  # the caller's list may be reused (make_callable)
            replaced[k] = instead
        if not sampled and state.steps:
            state.steps.clear()
        if replaced is not None:
            targets = replaced
        if not fetched:
            return original(session, options, feeds, fetches, targets, metadata)
        extra = [f for sampler in fetched for f in sampler.fetches]
        results = original(session, options, feeds, list(fetches) + extra, targets, metadata)
        n = len(fetches)
        for sampler in fetched:
            got = [int(v) for v in results[n:n + len(sampler.fetches)]]
            n += len(sampler.fetches)
            state.steps[sampler] = [got[0] + 1, got[1] if len(got) > 1 else 0]
        return results[:len(fetches)]

    def counter(self, optimizer, host) -> GraphRunCounter:
        """The run counter of ``optimizer``'s train ops in this graph."""
        with registry.lock:
            counter = self.counters.get(id(optimizer))
            if counter is None:
                counter = self.counters[id(optimizer)] = self.add_variable(GraphRunCounter(host))
            return counter

    def prepare(self, session) -> SessionState:
        """Before a run of ``session``: initialize what it has not initialized yet."""
        state = session.__dict__.get(ATTRIBUTE)
        if state is not None and state.ready == len(self.parts) and state.version == self.version:
            return state
        with registry.lock:
            state = session.__dict__.setdefault(ATTRIBUTE, SessionState())
            self.sessions.add(session)
            parts = self.parts[state.ready:]
            reloads = [p for p in self.parts[:state.ready] if getattr(p, "reload", None) is not None]
            if state.version == self.version:
                reloads = []
            else:  # the plans start again: the next run of each train op reads its plan
                state.steps.clear()
            if parts or reloads:
                feeds = {}
                for part in parts:
                    feeds.update(part.initial_feed())
                for part in reloads:
                    feeds.update(part.reload_feed())
                _own_run(session, [p.initializer for p in parts] + [p.reloader for p in reloads], feeds)
                for probe in self.probes:
                    state.cursors.setdefault(id(probe.session_ring), 0)
            state.ready, state.version = len(self.parts), self.version
            return state

    def ran(self, session, state: SessionState) -> None:
        """After a run of ``session`` (in the thread that ran it): collect when due, and hand over
        half-full host rings; with ``raise_on``, hand the rows over now and raise what they show."""
        state.runs += 1
        raising = self.raise_on  # replaced, never changed in place (``raising``)
        if raising:
            before = [state.cursors.get(id(p.session_ring)) for p in raising]
            self.collect_everywhere()  # once for every probe (each drain alone would read again)
            with _flagged("collected"):
                for probe, read in zip(raising, before):
                    registry.drain(probe)
                    if state.cursors.get(id(probe.session_ring)) != read:  # this run ran the train op
                        for watcher in list(probe.subscribers):
                            watcher.raise_pending()
        if state.runs >= COLLECT_EVERY:
            self.collect(session)
            with _flagged("collected"):
                for probe in self.probes:
                    if probe.subscribers and probe.ring.pending_estimate() >= probe.capacity // 2:
                        registry.drain(probe)

    def collect_everywhere(self) -> None:
        if getattr(_tls, "collected", False):
            return
        for session in list(self.sessions):
            self.collect(session)

    def collect(self, session) -> None:
        """Read the rows written in ``session`` since its last collection and give them to their
        probes (only probes with subscribers: later rows of the others are never wanted)."""
        with registry.lock:
            state = session.__dict__.get(ATTRIBUTE)
            if state is None or session._closed:
                return
            guess, state.runs = min(state.runs, CAPACITY), 0
            live = [p for p in self.probes if p.subscribers and id(p.session_ring) in state.cursors]
            if not live:
                return
            feeds = {}
            for probe in live:
                cursor = state.cursors[id(probe.session_ring)]
                feeds.update(probe.session_ring.read_feed(cursor, cursor + guess))
            try:
                read = _own_run(session, [p.session_ring.read for p in live], feeds)
            except tf.errors.OpError:  # a broken session: what it wrote since the last collection is lost
                for probe in live:
                    probe.ring.lose(guess)
                return
            for probe, (count, rows) in zip(live, read):
                ring = probe.session_ring
                cursor, count = state.cursors[id(ring)], int(count)
                lost = 0
                if count - cursor > guess:  # runs the patches did not count
                    start = max(cursor, count - ring.capacity)
                    _, rows = _own_run(session, ring.read, ring.read_feed(start, count))
                    lost = start - cursor
                state.cursors[id(ring)] = count
                probe.take(rows[:count - cursor - lost], lost)


def recording(graph) -> GraphRecording:
    """The recording of ``graph`` (created on first use)."""
    with registry.lock:
        found = getattr(graph, ATTRIBUTE, None)
        if found is None:
            found = GraphRecording()
            setattr(graph, ATTRIBUTE, found)
        return found


@contextlib.contextmanager
def _flagged(flag: str):
    """Inside: ``flag`` is set in this thread (``busy``: the auditor's own ``Session.run`` runs;
    ``collected``: the drains of probes hand over what a collection just read, without reading
    again)."""
    outer = getattr(_tls, flag, False)
    setattr(_tls, flag, True)
    try:
        yield
    finally:
        setattr(_tls, flag, outer)


def _own_run(session, fetches, feeds):
    with _flagged("busy"):
        return session.run(fetches, feed_dict=feeds)


def _observed(session, original, target, args, kwargs, sampled=False):
    """``original(target, ...)``: one run of ``session``, prepared for and counted; ``sampled``:
    ``args`` are those of ``_call_tf_sessionrun`` (sampled train ops may be replaced)."""
    graph_recording = getattr(session._graph, ATTRIBUTE, None)
    if graph_recording is None or getattr(_tls, "busy", False):
        return original(target, *args, **kwargs)
    state = graph_recording.prepare(session)
    if sampled and graph_recording.samplers and len(args) == 5 and not kwargs:
        result = graph_recording.sampled_run(state, original, target, *args)
    else:
        result = original(target, *args, **kwargs)
    graph_recording.ran(session, state)
    return result


def _run(original):
    def run(self, *args, **kwargs):
        return _observed(self, original, self, args, kwargs, sampled=True)

    return run


def _call(original):
    def call(self, *args, **kwargs):
        return _observed(self._session, original, self, args, kwargs)

    return call


def _close(original):
    def close(self):
        graph_recording = getattr(self._graph, ATTRIBUTE, None)
        if graph_recording is not None and self._session is not None and not self._closed:
            graph_recording.collect(self)
        return original(self)

    return close
