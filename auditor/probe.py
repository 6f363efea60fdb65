"""One audited apply site: an optimizer applied to one fixed list of variables.

A probe owns the device-side state for that site (ring buffer, change snapshots, flags)
and emits the ops that record one row per ``apply`` call. The ops run wherever ``apply``
runs (eagerly, in a ``tf.function``, inside ``model.fit``'s loop, under XLA); they are
gated by ``enabled``, so a function traced during a watch goes inert when it ends.
"""
from __future__ import annotations

import math
import weakref

import numpy as np
import tensorflow as tf

from auditor import graph_stats as gs
from auditor.ring_buffer import RingBuffer

# Row layout: fixed columns, then three blocks of one column per variable.
COL_APPLIED, COL_PRE, COL_CLIPPED, COL_CHECKED, COL_NONFINITE = range(5)
FIXED = 5
MODES = {"off": 0, "auto": 1, "every": 2}
RING_BYTES = 256 << 10  # per probe (the non-XLA write copies the ring once)
HIST_BYTES = 2 << 20  # per probe, for the gradient histograms (written every `hist_every` steps)


def variable_path(variable) -> str:
    """The variable's Keras path, or its TF name."""
    path = getattr(variable, "path", None)
    return path if isinstance(path, str) and path else getattr(variable, "name", repr(variable))


def is_variable(obj) -> bool:
    import keras

    return isinstance(obj, (tf.Variable, keras.Variable))


class Probe:
    """Device state and emitted ops for one (optimizer, variable list, None pattern)."""

    hist_ring = None  # RingBuffer of gradient histograms (None: this probe keeps none)
    hist_on = False  # a subscriber wants histograms (host-side copy of hist_every > 0)

    def __init__(self, optimizer, variables, none_mask, with_snapshots: bool, replica=None):
        """``replica``: ``(local index, local replica count, device)`` when ``apply`` runs in a
        ``tf.distribute`` replica context; each replica then owns a probe whose buffers live on
        its device (no state shared across replicas), and rows carry the all-reduced norms."""
        self.optimizer_ref = weakref.ref(optimizer)
        self.variables = list(variables)
        self.none_mask = tuple(none_mask)
        self.user_clip = False
        self.subscribers: list = []
        self.replica = replica
        self.group = (id(optimizer), tuple(id(v) for v in variables), tuple(none_mask))
        device = replica[2] if replica else None
        n = len(self.variables)
        self.extra = n + 1 if replica else 0  # all-reduced per-variable norms, then their total
        width = FIXED + 3 * n + self.extra
        capacity = int(min(1024, max(64, RING_BYTES // (4 * width))))
        self.ring = RingBuffer(width, capacity, device)
        # Gradient-value histograms every `hist_every` steps: one row of n x (2 + bins) per
        # histogram step. Under tf.distribute only the first local replica keeps them (of the
        # all-reduced gradients, which every replica holds alike).
        self.hist_ring = None
        if replica is None or replica[0] == 0:
            hist_width = n * (2 + gs.HIST_BINS)
            self.hist_ring = RingBuffer(hist_width, int(min(capacity, max(4, HIST_BYTES // (4 * hist_width)))),
                                        device)
        mk = gs.make_variable
        with tf.init_scope():
            self.hist_every = mk(tf.constant(0, tf.int64), "auditor_hist_every", device)
            self.enabled = mk(False, "auditor_enabled", device)
            self.mode = mk(tf.constant(0, tf.int64), "auditor_mode", device)
            self.every = mk(tf.constant(1, tf.int64), "auditor_every", device)
            self.period = mk(tf.constant(50, tf.int64), "auditor_period", device)
            self.check_until = mk(tf.constant(0, tf.int64), "auditor_check_until", device)
            self.snapshots = None
            if with_snapshots:
                self.snapshots = [
                    None if none else mk(tf.zeros(v.shape, v.dtype), "auditor_snapshot", device)
                    for v, none in zip(self.variables, self.none_mask)
                ]

    # ---- runtime configuration (host side, eager) -------------------------------------------
    def configure(self):
        """Set the device flags from the current subscribers (called under the registry lock)."""
        with tf.init_scope():
            if not self.subscribers:
                self.enabled.assign(False)
                return
            mode = max(MODES[s.check_changes] for s in self.subscribers)
            self.mode.assign(mode)
            self.every.assign(min(s.every for s in self.subscribers))
            first = max(int(s.thresholds["changes_first_steps"]) for s in self.subscribers)
            period = min(int(s.thresholds["changes_period"]) for s in self.subscribers)
            self.period.assign(max(1, period))
            self.check_until.assign(self.ring.count.read_value() + first)
            hist = [int(s.histogram_every) for s in self.subscribers if s.logdir and s.histogram_every]
            self.hist_on = bool(hist) and self.hist_ring is not None
            self.hist_every.assign(min(hist) if self.hist_on else 0)
            self.enabled.assign(True)

    # ---- emitted ops --------------------------------------------------------------------------
    def emit_before(self, iteration, grads, optimizer, user_norms, user_global, aggregate_pre=None):
        """Ops run before ``apply``: decide whether to record/check, measure the gradients,
        snapshot the variables if checking. Returns the state ``emit_after`` needs.

        Measuring before ``apply`` lets the gradients' last readers be the optimizer's own
        ops (which may then reuse their buffers), instead of a recording op that runs later.
        """
        record = tf.logical_and(
            self.enabled.read_value(),
            tf.equal(tf.math.floormod(iteration, self.every.read_value()), 0),
        )
        width = 4 + 2 * len(grads)
        config = _clip_config(optimizer)
        def measure():
            if self.replica is None:
                self._emit_histograms(iteration, grads)
            pre = aggregate_pre() if callable(aggregate_pre) else aggregate_pre
            return self._measure(grads, config, user_norms, user_global, pre)

        measured = tf.cond(record, measure, lambda: tf.zeros([width], tf.float32))
        if self.snapshots is None:
            return record, tf.constant(False), measured
        mode = self.mode.read_value()
        scheduled = tf.logical_or(
            tf.less(self.ring.count.read_value(), self.check_until.read_value()),
            tf.equal(tf.math.floormod(iteration, self.period.read_value()), 0),
        )
        check = tf.logical_and(
            record,
            tf.logical_or(tf.equal(mode, 2), tf.logical_and(tf.equal(mode, 1), scheduled)),
        )

        def take_snapshot():
            for snap, var in zip(self.snapshots, self.variables):
                if snap is not None:
                    snap.assign(gs.read(var))
            return tf.constant(True)

        gs.cond(check, take_snapshot, lambda: tf.constant(False))
        return record, check, measured

    def emit_after(self, state, iteration, reduced_grads=None):
        """Ops run after ``apply``: compare with the snapshot, append the row (if recording).

        ``reduced_grads``: per variable, the all-reduced gradient (replicas), measured for the
        row and the histograms only on recorded steps."""
        record, check, measured = state
        n = len(self.variables)

        def reduced_tail():
            if not self.extra:
                return []
            nan = tf.constant(math.nan, tf.float32)
            if reduced_grads is None:
                return [tf.fill([n + 1], nan)]
            sq = [nan if g is None else gs.sq_norm(g) for g in reduced_grads]
            real = [r for r, g in zip(sq, reduced_grads) if g is not None]
            total = tf.sqrt(tf.add_n(real)) if real else nan
            return [tf.sqrt(tf.stack(sq)), tf.reshape(total, [1])]

        def write_row():
            if self.snapshots is None:
                changed = tf.zeros([n], tf.bool)
            else:
                def compare():
                    return tf.stack([
                        gs.differs(gs.read(v), snap) if snap is not None else tf.constant(False)
                        for v, snap in zip(self.variables, self.snapshots)
                    ])

                changed = tf.cond(check, compare, lambda: tf.zeros([n], tf.bool))
            row = tf.concat([measured[:3], tf.reshape(tf.cast(check, tf.float32), [1]), measured[3:],
                             tf.cast(changed, tf.float32)] + reduced_tail(), 0)
            self.ring.write(row, iteration)
            if self.replica is not None and reduced_grads is not None:
                self._emit_histograms(iteration, reduced_grads)
            return tf.constant(True)

        gs.cond(record, write_row, lambda: tf.constant(False))

    def _emit_histograms(self, iteration, grads):
        """On steps that are multiples of ``hist_every``: one histogram row for every gradient."""
        if self.hist_ring is None:
            return
        every = self.hist_every.read_value()
        due = tf.logical_and(tf.greater(every, 0),
                             tf.equal(tf.math.floormod(iteration, tf.maximum(every, 1)), 0))

        def write():
            blank = tf.fill([2 + gs.HIST_BINS], tf.constant(math.nan, tf.float32))
            row = tf.concat([blank if g is None else gs.histogram(g) for g in grads], 0)
            self.hist_ring.write(row, iteration)
            return tf.constant(True)

        gs.cond(due, write, lambda: tf.constant(False))

    def _measure(self, grads, config, user_norms, user_global, aggregate_pre=None):
        """[applied, pre, clipped, nonfinite count, norms..., nonfinite flags...] as float32."""
        scale, clipnorm, global_clipnorm, clipvalue, accumulating = config
        nan = tf.constant(math.nan, tf.float32)
        sq = [nan if g is None else gs.sq_norm(g) / (scale * scale) for g in grads]
        real = [s for s, g in zip(sq, grads) if g is not None]
        norms = tf.sqrt(tf.stack(sq))
        applied = tf.sqrt(tf.add_n(real)) if real else nan
        n = len(grads)

        # A finite sum of squares proves every element finite; only otherwise (an Inf/NaN, or
        # float32 overflow of the square) pay for the exact per-variable check.
        def exact_nonfinite():
            return tf.stack([tf.constant(False) if g is None else gs.has_nonfinite(g) for g in grads])

        all_finite = tf.math.is_finite(applied) if real else tf.constant(True)
        bad_vec = tf.cond(all_finite, lambda: tf.zeros([n], tf.bool), exact_nonfinite)

        # Norm before any user clipping (tf.clip_by_global_norm / tf.clip_by_norm inside watch()).
        if aggregate_pre is not None:  # replicas: the norm of the summed, unclipped gradients
            pre = tf.cast(aggregate_pre, tf.float32) / scale
        elif user_global is not None:
            pre = tf.cast(user_global, tf.float32) / scale
        elif any(u is not None for u in user_norms):
            pre_sq = [
                tf.square(tf.cast(u() if callable(u) else u, tf.float32) / scale) if u is not None else s
                for u, s, g in zip(user_norms, sq, grads) if g is not None
            ]
            pre = tf.sqrt(tf.add_n(pre_sq))
        else:
            pre = applied

        # Norm after the optimizer's own clipping (computed analytically, not by re-clipping).
        real_norms = [tf.sqrt(s) for s in real]
        if accumulating and (clipnorm or global_clipnorm or clipvalue):
            clipped = nan  # Keras clips the accumulated mean on update steps only
        elif clipnorm:
            clipped = tf.sqrt(tf.add_n([tf.square(tf.minimum(n, clipnorm)) for n in real_norms]))
        elif global_clipnorm:
            clipped = tf.minimum(applied, global_clipnorm) + (applied - applied)
        elif clipvalue:
            clipped = tf.sqrt(tf.add_n([gs.clipvalue_sq_norm(g, clipvalue, scale)
                                        for g in grads if g is not None]))
        else:
            clipped = applied

        fixed = tf.stack([applied, pre, clipped, tf.reduce_sum(tf.cast(bad_vec, tf.float32))])
        return tf.concat([fixed, norms, tf.cast(bad_vec, tf.float32)], 0)

    # ---- host side ----------------------------------------------------------------------------
    def has_clipping(self) -> bool:
        opt = self.optimizer_ref()
        own = opt is not None and any(
            (getattr(opt, name, None) or 0) > 0 for name in ("clipnorm", "global_clipnorm", "clipvalue")
        )
        return own or self.user_clip

    def clipped_unknown(self) -> bool:
        """Keras clips the accumulated mean under gradient accumulation: no per-call clipped norm."""
        opt = self.optimizer_ref()
        return bool(opt is not None and getattr(opt, "gradient_accumulation_steps", None)
                    and self.has_clipping())

    def split(self, row: np.ndarray):
        """Unpack one drained row: (applied, pre, clipped, checked, norms, nonfinite, changed)."""
        n = len(self.variables)
        norms = row[FIXED:FIXED + n]
        bad = row[FIXED + n:FIXED + 2 * n] > 0.5
        changed = row[FIXED + 2 * n:FIXED + 3 * n] > 0.5
        return (float(row[COL_APPLIED]), float(row[COL_PRE]), float(row[COL_CLIPPED]),
                bool(row[COL_CHECKED] > 0.5), norms, bad, changed)

    def split_reduced(self, row: np.ndarray):
        """Replica rows: (all-reduced per-variable norms, all-reduced total norm)."""
        n = len(self.variables)
        start = FIXED + 3 * n
        return row[start:start + n], float(row[start + n])

    def split_histograms(self, row: np.ndarray):
        """Unpack one histogram row: per variable ``(min, max, counts)`` or None (no finite value)."""
        out = []
        for chunk in row.reshape(len(self.variables), 2 + gs.HIST_BINS):
            lo, hi, counts = float(chunk[0]), float(chunk[1]), chunk[2:]
            ok = math.isfinite(lo) and math.isfinite(hi) and counts.sum() > 0
            out.append((lo, hi, counts) if ok else None)
        return out

    def clip_bounds(self):
        """(global_clipnorm, clipnorm) configured on the optimizer (0.0 when unset)."""
        opt = self.optimizer_ref()
        if opt is None:
            return 0.0, 0.0
        return (float(getattr(opt, "global_clipnorm", None) or 0.0), float(getattr(opt, "clipnorm", None) or 0.0))

    def changed_since_snapshot(self) -> list[bool]:
        """Per variable: differs from its last snapshot (eager, at exit)."""
        out = []
        with tf.init_scope():
            for var, snap in zip(self.variables, self.snapshots or [None] * len(self.variables)):
                out.append(bool(snap is not None and gs.differs(gs.read(var), snap.read_value()).numpy()))
        return out


def _clip_config(optimizer):
    scale = getattr(optimizer, "loss_scale_factor", None) or 1.0
    return (
        float(scale),
        float(getattr(optimizer, "clipnorm", None) or 0.0),
        float(getattr(optimizer, "global_clipnorm", None) or 0.0),
        float(getattr(optimizer, "clipvalue", None) or 0.0),
        bool(getattr(optimizer, "gradient_accumulation_steps", None)),
    )
