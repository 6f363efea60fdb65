"""TF1 graph mode: ``tf.compat.v1.train.Optimizer.apply_gradients`` (which ``minimize`` calls).

The returned train op also measures the gradients and copies the variables (the update ops run
under control dependencies on both), compares after the update, and writes the row into a ring of
its graph: the session that runs it hands the rows over in batches (``tf1_sessions``), so a run
calls nothing on the host. ``step`` is the ``global_step`` before the update when the train op
increments one, else how many times the optimizer's train ops had run before (like Keras'
per-optimizer ``iterations``; counted in the graph per session, from the host's count). The
optimizer's own update is built again for sessions to run in place of the train op
(``tf1_sessions.Sampler``): alone on the runs the watches do not record (``every`` > 1), and with
the row but without the change check on the recorded runs the plan does not compare. A
TF1 optimizer used eagerly or inside a ``tf.function`` hands each row over with a
``tf.numpy_function``.
"""
from __future__ import annotations

import threading
import weakref

import numpy as np
import tensorflow as tf

from auditor import graph_stats as gs
from auditor import registry
from auditor.engines import site, tf1_sessions
from auditor.patching import Patch
from auditor.probe import BeforeState, RowLayout, SiteProbe, histogram_row, change_block, unchecked_block
from auditor.ring_buffer import HostRing, SessionRing, tag_columns, tags_of


PLANNED_ELEMENTS = 1 << 16  # outside sessions, sites with more variable elements are planned
NEVER = np.iinfo(np.int64).max  # a plan's next step when nothing is compared


def patches() -> list[Patch]:
    from tensorflow.python.training import optimizer as v1_optimizer

    return [Patch(v1_optimizer.Optimizer, "apply_gradients", _apply_gradients)] + tf1_sessions.patches()


class V1Probe(SiteProbe):
    """A TF1 apply site: the measurement and the copies are ops of the train op, changes are
    compared in the graph on the runs a plan picks (``before``), and rows reach the host's ring
    (``take``) from the graph's ring of each session (``SessionProbe``) or, in eager code and
    functions, one by one from a ``tf.numpy_function`` (``EagerProbe``)."""

    capacity = tf1_sessions.CAPACITY  # rows between drains (the host list is not bounded)
    snapshots = None  # nothing to compare at exit: the plan keeps "never changed" exact

    def __init__(self, optimizer, variables, none_mask, check: bool):
        super().__init__(optimizer, variables, none_mask)
        # TF1 code often drops the optimizer after minimize(); the graph keeps the probe and the
        # probe the optimizer (graph mode only: eager probes are owned by the optimizer)
        self._optimizer = None if tf.executing_eagerly() else optimizer
        self.check = check
        self.planned = check  # compared on the runs a plan picks (else on every run, or never)
        self.runs = _run_counter(optimizer)
        self.ring = HostRing(self.layout.width)
        self.hist_every = 0  # set when the train op is built (histograms computed in the graph)
        self.hist_ring = HostRing(len(self.variables) * (2 + gs.HIST_BINS))
        self.hist_on = False
        self.counted = False  # the steps come from a session's run counter
        self.step = None  # the train op's step (a tensor), once built
        self._unseen = set()  # variables not seen changing yet, where the host plans

    def configure(self):
        """Nothing to set on the device: the plan reads the watches' settings (``plan_settings``)."""

    def recorded_every(self) -> int:
        """The watches record the steps that are multiples of this (1 without watches)."""
        return min((s.settings.every for s in self.subscribers), default=1)

    def plan_settings(self) -> np.ndarray:
        """``[next, every, first, stride, limit]``: a run is compared when its step is a multiple
        of ``every`` and fewer than ``first`` runs were compared, or more than ``limit`` variables
        were not seen changing yet, or its step is a multiple of ``stride`` (> 0); ``next``: the
        step from which a session looks again ("every": ``first`` is unbounded; "off": nothing
        matches)."""
        big = NEVER
        settings = [s.settings for s in self.subscribers]
        if not any(s.check_changes != "off" for s in settings):
            return np.array([big, 1, 0, 0, big], np.int64)
        every = min(s.every for s in settings)
        if any(s.check_changes == "every" for s in settings):
            return np.array([0, every, big, 0, 0], np.int64)
        period = max(1, min(s.changes_period for s in settings))  # "auto"
        return np.array([0, every, max(s.changes_first_steps for s in settings), np.lcm(every, period), 0], np.int64)

    def before(self, step, grads, clip, user) -> BeforeState:
        """Measure the gradients, copy the variables, and the histograms on steps that are
        multiples of ``histogram_every``.

        ``step``: the global step's value before the update, or None: then the optimizer's run
        count numbers the runs (``_plan_run``). Only the copies (and the global step's read) must
        precede the update; the measurement runs beside it. Copies of a planned site are taken
        on every run until each variable was seen changing, then as ``check_changes`` schedules
        it, so "never changed" stays exact without a comparison at exit (a graph variable cannot
        be read without the user's session); the copy is a branch that does not run otherwise."""
        every = self.wanted_histograms()
        self.histograms_built = bool(every)
        global_step = step  # read before the update increments it: the update must wait for it
        step, check = self._plan_run(step, every)
        measured = self.measure(grads, clip, user, self._checked_column(check))
        snaps = None
        if self.planned:
            copies = [v for v, none in zip(self.variables, self.none_mask) if not none]
            taken = self._cond(check, lambda: [_snapshot(v) for v in copies],
                               lambda: [tf.zeros([0], v.dtype) for v in copies])
            taken = iter(taken if isinstance(taken, (list, tuple)) else [taken])
            snaps = [None if none else next(taken) for none in self.none_mask]
        elif self.check:
            snaps = [None if none else _snapshot(v) for v, none in zip(self.variables, self.none_mask)]
        hist = self._histograms(grads, step, every)
        self.step = step
        deps = [s for s in snaps or () if s is not None] + ([global_step] if global_step is not None else [])
        return BeforeState(None, measured, step, deps=deps, check=check, snapshots=snaps, histograms=hist)

    def _histograms(self, grads, step, every):
        if not every:
            return None
        self.hist_every = every
        self.hist_on = True
        width = self.hist_ring.width
        due = tf.equal(tf.math.floormod(step, every), 0)
        return self._cond(due, lambda: histogram_row(grads), lambda: tf.fill([width], float("nan")))

    def _packed(self, state, changed):
        """One float32 row (one concatenation): the measured row, the step's 8 bytes, the
        histograms (if any)."""
        step = state.iteration if state.iteration is not None else tf.constant(-1, tf.int64)
        return tf.concat(self.layout.parts(state.measured, changed) + [tag_columns(step)]
                         + ([state.histograms] if state.histograms is not None else []), 0)

    def take(self, packed, lost: int) -> None:
        """Rows as ``after`` wrote them (from a session, or one from ``deliver``), in the order
        they were written, each with its step; ``lost``: rows that never reached the host. Keeps
        those of the steps a watch records, and their histograms."""
        if lost:
            self.ring.lose(lost)
        width = self.layout.width
        steps = tags_of(packed[:, width:width + 2])
        if self.counted and len(steps):
            self.runs.seen(int(steps.max()))
        if not self.subscribers or not len(steps):
            return
        kept = steps % self.recorded_every() == 0
        rows, steps, packed = packed[kept, :width], steps[kept], packed[kept]
        self.ring.push_many(rows, steps)
        if self._unseen:  # the host plans (``EagerProbe.plan``)
            n, start = len(self.variables), self.layout.measured_width  # the change block: flags, ratios
            changed = rows[RowLayout.checked(rows), start:start + n]
            self._unseen = {k for k in self._unseen if not (changed[:, k] > 0.5).any()}
        if self.hist_every:
            due = steps % self.hist_every == 0
            self.hist_ring.push_many(packed[due, width + 2:], steps[due])


class SessionProbe(V1Probe):
    """A train op of a plain graph, run by sessions: the row goes into a ring of the graph
    (``SessionRing``) and the sessions hand the rows over in batches (``tf1_sessions``); the run
    count and the plan are graph variables per session, so a run calls nothing on the host."""

    top_level_branch = True  # the exact non-finite check is one ``If`` (``SiteProbe.measure``)

    def __init__(self, optimizer, variables, none_mask, check: bool):
        super().__init__(optimizer, variables, none_mask, check)
        self.recording = tf1_sessions.recording(tf.compat.v1.get_default_graph())
        self.session_ring = None  # created with the row (its width includes the histograms)
        self.graph_plan = None  # the plan's state (a SessionVariable), once built
        self.next_check = None  # the plan's next compared step, read after the comparison (fetched)
        self.sampler = None  # set when sessions may run another op in place of the train op
        self.inputs = None  # (gradients, clip, user clip, histogram every) that ``before`` measured

    def configure(self):
        if self.graph_plan is not None:
            self.recording.reconfigured()
        self.recording.raising(self, any(s.settings.raise_on for s in self.subscribers))
        if self.sampler is not None:
            self.sampler.every = self.recorded_every()

    def sampled(self, train, plain, unchecked) -> None:
        """Sessions may run ``plain`` (the optimizer's own update op, built again, or None) in
        place of ``train`` on runs whose step the watches do not record, and ``unchecked`` (or
        None) on recorded runs the plan does not compare (``tf1_sessions.Sampler``)."""
        if plain is not None and self.counted:  # the run counter counts every run
            plain = tf.group(plain, self.recording.counter(self.optimizer_ref(), self.runs).increment())
        self.sampler = tf1_sessions.Sampler(train, self.step, self.recorded_every(), plain=plain,
                                            unchecked=unchecked, next_check=self.next_check)
        self.recording.sample(self.sampler)

    def before(self, step, grads, clip, user) -> BeforeState:
        state = super().before(step, grads, clip, user)
        self.inputs = (grads, clip, user, self.wanted_histograms())  # for ``unchecked``
        return state

    def unchecked(self, update, global_step):
        """The train op once more without the change check (no plan read, no copies, no
        comparison; ``update`` builds the optimizer's own update again): on a run the plan does
        not compare it writes the row, the step and the histograms the train op writes
        (``tf1_sessions.Sampler`` decides when it runs)."""
        grads, clip, user, every = self.inputs
        if global_step is not None:
            step = _step_before(global_step)
            with tf.control_dependencies([step]):  # the step before the update increments it
                result = update()
        else:
            step = self.recording.counter(self.optimizer_ref(), self.runs).next()
            result = update()
        measured = self.measure(grads, clip, user, False)
        state = BeforeState(None, measured, step, histograms=self._histograms(grads, step, every))
        with tf.control_dependencies(None):
            written, _ = self.session_ring.write(self._packed(state, unchecked_block(len(self.variables))))
        return tf.group(result, written, name="auditor_unchecked_train_op")

    # The plan's state (one int64 vector): runs compared so far, variables not seen changing yet,
    # the step of the next run to copy and compare, then the watches' settings (``NEXT`` and these
    # loaded again when a watch comes or goes), then per variable whether it was not seen changing
    # yet. A run reads ``NEXT`` only; the comparison's branch updates the rest.
    COUNT, UNSEEN, NEXT, EVERY, FIRST, STRIDE, LIMIT = range(7)
    SETTINGS = slice(NEXT, LIMIT + 1)

    def _plan_run(self, step, every):
        """The run's step (the graph's run counter's where there is no global step) and whether
        it copies the variables and compares them after the update (a bool tensor: its step
        reached ``NEXT``; ``_compared`` decides and moves ``NEXT`` on)."""
        if step is None:
            step = self.recording.counter(self.optimizer_ref(), self.runs).next()
            self.counted = True
        if not self.planned:
            return step, False
        if self.graph_plan is None:
            marks = [0 if none else 1 for none in self.none_mask]

            def initial():
                return np.concatenate([[0, sum(marks)], self.plan_settings(), marks])

            self.graph_plan = self.recording.add_variable(tf1_sessions.SessionVariable(
                initial, "auditor_plan", reload=self.SETTINGS))
        with tf.device("/cpu:0"):
            due = tf.raw_ops.ResourceGather(resource=self.graph_plan.handle, indices=self.NEXT, dtype=tf.int64)
        return step, tf.greater_equal(step, due)

    def _checked_column(self, check):
        return False  # the comparison's branch writes it (``after``)

    def _compared(self, step, block):
        """Ops of the comparison's branch (after the update): whether the plan wants this run
        compared (the rule of ``plan_settings``), and the op updating the plan: the count, the
        marks of the variables ``block`` (the change block) shows changing, and ``NEXT``."""
        n = len(self.variables)
        now = self.graph_plan.read()
        count, unseen, _, every, first, stride, limit = tf.unstack(now[:7], 7)
        period = tf.maximum(stride, tf.constant(1, tf.int64))  # stride 0: no periodic comparison
        into_every, into_period = tf.math.floormod(step, every), tf.math.floormod(step, period)
        wanted = tf.logical_and(tf.equal(into_every, 0), tf.reduce_any(tf.stack([
            count < first, unseen > limit, tf.logical_and(stride > 0, tf.equal(into_period, 0))])))
        seen = tf.cast(tf.logical_and(wanted, block[:n] > 0.5), tf.int64)
        marks = now[7:] * (1 - seen)
        count, unseen = count + tf.cast(wanted, tf.int64), tf.reduce_sum(marks)
        again = tf.logical_or(count < first, unseen > limit)
        following = tf.where(again, step - into_every + every,
                             tf.where(stride > 0, step - into_period + period, NEVER))
        update = tf.raw_ops.ResourceScatterUpdate(
            resource=self.graph_plan.handle, indices=np.array([self.COUNT, self.UNSEEN, self.NEXT] + list(range(7, 7 + n)), np.int64),
            updates=tf.concat([tf.stack([count, unseen, following]), marks], 0))
        return wanted, update

    def _cond(self, pred, true_fn, false_fn):
        """A functional ``If`` on the single-threaded executor where it can (the branch not
        taken costs nothing)."""
        return gs.cond(pred, true_fn, false_fn, single_threaded=True)

    def after(self, state, reduced_grads=None, reduced_pre=None, scale=1.0):
        """The row goes into the graph's ring beside the update (nothing in it waits for the
        update); on a planned run a branch after the update compares the variables and writes the
        change block over the row."""
        n = len(self.variables)
        with tf.control_dependencies(None):
            packed = self._packed(state, unchecked_block(n))
            self.session_ring = SessionRing(int(packed.shape[0]), tf1_sessions.CAPACITY)
            self.recording.add(self)
            written, slot = self.session_ring.write(packed)
        if not self.planned:
            return written

        def compare():
            block = change_block(self.variables, state.snapshots)
            wanted, planned = self._compared(state.iteration, block)
            columns = [RowLayout.CHECKED] + list(range(self.layout.measured_width, self.layout.measured_width + 2 * n))
            mark = state.measured[RowLayout.CHECKED:RowLayout.CHECKED + 1]  # 0 or DERIVED: not checked
            values = tf.where(wanted, tf.concat([mark + 1.0, block], 0), tf.concat([mark, unchecked_block(n)], 0))
            with tf.control_dependencies([self.session_ring.overwrite(slot, columns, values), planned]):
                return tf.constant(True)

        with tf.control_dependencies([written]):  # after the row's write (and, by the flow, the update)
            compared = self._cond(state.check, compare, lambda: tf.constant(False))
        with tf.control_dependencies([compared]), tf.device("/cpu:0"):  # run only when fetched
            self.next_check = tf.raw_ops.ResourceGather(resource=self.graph_plan.handle, indices=self.NEXT,
                                                        dtype=tf.int64)
        return compared

    def drain(self):
        """Read what the sessions wrote first (unless a collection just did), then the host ring."""
        self.recording.collect_everywhere()
        return super().drain()


class EagerProbe(V1Probe):
    """A TF1 optimizer used eagerly or inside a ``tf.function``: a ``tf.numpy_function`` hands
    each row to the host; sites of more than ``PLANNED_ELEMENTS`` elements are planned on the
    host (``plan``, a call per run), smaller ones compared on every run."""

    def __init__(self, optimizer, variables, none_mask, check: bool):
        super().__init__(optimizer, variables, none_mask, check)
        size = sum(int(np.prod(v.shape)) for v, none in zip(self.variables, self.none_mask) if not none)
        self.planned = check and size > PLANNED_ELEMENTS
        self._unseen = {k for k, none in enumerate(self.none_mask) if not none} if self.planned else set()
        self._planned = 0  # runs compared while recording

    def _plan_run(self, step, every):
        """The run's step (numbered on the host where there is no global step: by the plan, by a
        side op where histograms need it, else when the row arrives) and whether it compares."""
        if self.planned:
            given = step if step is not None else tf.constant(-1, tf.int64)
            plan = tf.numpy_function(self.plan, [given], tf.int64, stateful=True, name="auditor_plan")
            plan.set_shape([2])
            return plan[0], tf.greater(plan[1], 0)
        if step is None and every:
            step = tf.numpy_function(self.runs.next, [], tf.int64, stateful=True, name="auditor_step")
        return step, self.check

    def _checked_column(self, check):
        return check

    def plan(self, given):
        """Host side, before a run of a planned site: ``[step, compare the variables?]``, by the
        rule of ``plan_settings`` (which a session's graph follows too)."""
        step = int(given)
        if step < 0:
            step = int(self.runs.next())
        _, every, first, stride, limit = (int(v) for v in self.plan_settings())
        check = bool(self.subscribers) and step % every == 0 and (
            self._planned < first or len(self._unseen) > limit or (stride > 0 and step % stride == 0))
        self._planned += check
        return np.array([step, 1 if check else 0], np.int64)

    def _cond(self, pred, true_fn, false_fn):
        return tf.cond(pred, true_fn, false_fn)

    def after(self, state, reduced_grads=None, reduced_pre=None, scale=1.0):
        """Compare with the copies; a ``tf.numpy_function`` hands the row to the host."""
        n = len(self.variables)

        def compare():
            return change_block(self.variables, state.snapshots)

        if self.planned:
            changed = tf.cond(state.check, compare, lambda: unchecked_block(n))
        elif self.check:
            changed = compare()
        else:
            changed = unchecked_block(n)
        return tf.numpy_function(self.deliver, [self._packed(state, changed)], tf.int64, stateful=True,
                                 name="auditor_record")

    def deliver(self, packed):
        """Called by the side op on every run (eager code, a ``tf.function``): keep the row; hand
        the rows over when half a ring is waiting (and at every drain of the watch)."""
        width = self.layout.width
        step = int(tags_of(packed[width:width + 2].reshape(1, 2))[0])
        if step < 0:  # numbered on the host, as the rows arrive
            step = int(self.runs.next())
            packed = packed.copy()
            packed[width:width + 2] = np.array([step], np.int64).view(np.float32)
        self.take(packed.reshape(1, -1), 0)
        if self.ring.pending_estimate() >= self.capacity // 2:
            registry.drain(self)
        return np.int64(step)


class RunCounter:
    """How many times an optimizer's train ops ran (a side op of each run without a global step)."""

    def __init__(self):
        self.value = 0
        self._lock = threading.Lock()

    def next(self) -> np.int64:
        with self._lock:
            self.value += 1
            return np.int64(self.value - 1)

    def seen(self, step: int) -> None:
        """A run numbered ``step`` by a session's counter happened."""
        with self._lock:
            self.value = max(self.value, step + 1)


_counters: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # optimizer -> RunCounter


def _run_counter(optimizer) -> RunCounter:
    """One run counter per TF1 optimizer, shared by all its train ops."""
    with registry.lock:
        counter = _counters.get(optimizer)
        if counter is None:
            counter = _counters[optimizer] = RunCounter()
        return counter


_eager_probes: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # optimizer -> {site: probe}


class TF1(site.ApplyEngine):
    """One ``apply_gradients`` call (engines are per call here: the global step is an argument)."""

    keeps_traced = False

    def __init__(self, global_step, update):
        self.global_step = global_step
        self.update = update  # builds the optimizer's own update op (again)
        self.made = None  # the probe of this call

    def probe(self, optimizer, variables, none_mask, with_snapshots, replica, with_histograms):
        """A new probe per train op in graph mode; in eager mode (a TF1 optimizer used eagerly)
        one per apply site, so that its run counter counts the steps."""
        if not tf.executing_eagerly():
            probe = EagerProbe if tf.inside_function() else SessionProbe
            self.made = probe(optimizer, variables, none_mask, with_snapshots)
            return self.made
        key = (tuple(id(v) for v in variables), none_mask)
        with registry.lock:
            sites = _eager_probes.setdefault(optimizer, {})
            probe = sites.get(key)
            if probe is None or any(a is not b for a, b in zip(probe.variables, variables)):
                probe = sites[key] = EagerProbe(optimizer, variables, none_mask, with_snapshots)
            return probe

    def iteration(self, optimizer):
        """The global step before the update, or None (the probe numbers the runs)."""
        if self.global_step is not None:  # resumed runs keep their step numbers
            return _step_before(self.global_step)
        return None

    def ordered(self, deps):
        deps = [d for d in deps if d is not None]
        if tf.executing_eagerly() or not deps:
            return super().ordered(deps)
        return tf.control_dependencies(deps)

    def finish(self, result, after):
        if tf.executing_eagerly():
            return result
        with tf.control_dependencies([after]):
            train = tf.group(result, name="auditor_train_op")
        probe = self.made
        if not isinstance(probe, SessionProbe):
            return train
        # the update built again: without the auditor's ops (runs not recorded, every > 1) and
        # without the change check (recorded runs the plan does not compare); an optimizer that
        # cannot build its update again runs the train op on every run
        plain = unchecked = None
        try:
            if probe.recorded_every() > 1:
                plain = self.update()
            if probe.planned:
                unchecked = probe.unchecked(self.update, self.global_step)
        except Exception:  # noqa: BLE001 - the user's train op must not fail for this
            pass
        if plain is not None or unchecked is not None:
            probe.sampled(train, plain, unchecked)
        return train


def _step_before(global_step):
    """The global step's value as the update finds it (int64): a copy, run before the update."""
    return tf.cast(_snapshot(global_step), tf.int64)


def _snapshot(var):
    """A copy of the variable's current value that the update cannot alias: for a TF1
    ``RefVariable`` ``read_value()`` (an Identity of the ref) shares the buffer the update
    writes in place (measured: the snapshot then equals the updated value and every step
    looks like "no change"), so copy it explicitly. ``DeepCopy`` states the intent; ``x + 0``
    also works today but is an arithmetic no-op a graph optimizer is entitled to fold."""
    return tf.raw_ops.DeepCopy(x=var.read_value())


def _apply_gradients(original):
    def apply_gradients(self, grads_and_vars, global_step=None, name=None, *args, **kwargs):
        if not registry.active() or site.in_apply() or tf.distribute.has_strategy():
            return original(self, grads_and_vars, global_step, name, *args, **kwargs)
        pairs = tuple(grads_and_vars)
        if not pairs or all(g is None for g, _ in pairs):
            return original(self, pairs, global_step, name, *args, **kwargs)
        grads = [None if g is None else (g if isinstance(g, tf.IndexedSlices) else tf.convert_to_tensor(g))
                 for g, _ in pairs]
        def update():
            return original(self, pairs, global_step, name, *args, **kwargs)

        return site.apply_site(TF1(global_step, update), self, grads, [v for _, v in pairs], update)

    return apply_gradients
