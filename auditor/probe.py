"""One audited apply site: an optimizer applied to one fixed list of variables.

A probe emits the ops that measure one ``apply`` call (``before``: norms, non-finite flags, the
clipped norm, a snapshot of the variables on checked steps; ``after``: the comparison with the
snapshot and the row), lays the row out (``RowLayout``: one layout, written and decoded here
only) and hands drained rows to the registry decoded (``SiteRows``). ``DeviceProbe`` keeps its rows
in a device ring buffer and follows a schedule table (``Plan``), all zeros when no watch uses the
site, so that a function traced during a watch goes inert when it ends; TF1's host probe
(``auditor.engines.tf1``) shares the measurement and the layout.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from auditor import graph_stats as gs
from auditor.ring_buffer import RingBuffer

MODES = {"off": 0, "auto": 1, "every": 2}
RING_BYTES = 256 << 10  # per probe
HIST_BYTES = 2 << 20  # per probe, for the gradient histograms (written every `hist_every` steps)


def variable_path(variable) -> str:
    """The variable's Keras path, or its TF name."""
    path = getattr(variable, "path", None)
    return path if isinstance(path, str) and path else getattr(variable, "name", repr(variable))


@dataclass(frozen=True)
class ClipConfig:
    """The optimizer's own clipping, read when its apply is traced (0.0: not set)."""

    scale: float = 1.0  # loss-scale factor the gradients are divided by
    clipnorm: float = 0.0
    global_clipnorm: float = 0.0
    clipvalue: float = 0.0
    accumulating: bool = False  # gradient accumulation: Keras clips the accumulated mean

    @classmethod
    def of(cls, optimizer) -> "ClipConfig":
        """Keras-style attributes (``clipnorm`` ...); an optimizer without them clips nothing."""
        return cls(float(getattr(optimizer, "loss_scale_factor", None) or 1.0),
                   float(getattr(optimizer, "clipnorm", None) or 0.0),
                   float(getattr(optimizer, "global_clipnorm", None) or 0.0),
                   float(getattr(optimizer, "clipvalue", None) or 0.0),
                   bool(getattr(optimizer, "gradient_accumulation_steps", None)))

    def clips(self) -> bool:
        """Whether the optimizer clips (``clipnorm``, ``global_clipnorm`` or ``clipvalue``)."""
        return bool(self.clipnorm or self.global_clipnorm or self.clipvalue)


@dataclass
class UserClip:
    """Your own clipping upstream of ``apply``: per gradient, the norm before a ``tf.clip_by_norm``
    that produced it (a tensor, or a callable building it where it is used), and the norm before a
    ``tf.clip_by_global_norm``."""

    per_gradient: list
    global_norm: object = None
    discarded: bool = False  # the gradients went into a clip of yours, and its result was not applied

    def seen(self) -> bool:
        return self.global_norm is not None or any(u is not None for u in self.per_gradient)


class SiteRow(NamedTuple):
    """One decoded row (see ``RowLayout``)."""

    tag: int  # the optimizer step
    applied: float  # norm of the gradients reaching apply
    pre: float  # norm before any clipping
    clipped: float  # norm after the optimizer's clipping
    checked: bool  # changes were checked on this step
    nonfinite_count: float  # variables with a NaN/Inf gradient
    norms: list  # per variable (NaN for None gradients)
    nonfinite: list  # per variable, bool
    changed: list  # per variable, bool
    ratios: list  # per variable, ||w_after - w_before|| / ||w_before|| (NaN: not checked)
    reduced_norms: list | None  # tf.distribute: all-reduced per-variable norms
    reduced_total: float | None  # tf.distribute: all-reduced norm
    reduced_pre: float | None  # tf.distribute: all-reduced norm before clipping (NaN: not measured)


@dataclass
class SiteRows:
    """Decoded rows of one probe, column by column (oldest row first): Python values, except the
    per-variable flags and ratios, which only the few rows with a non-finite gradient or a check
    need: NumPy arrays (``[rows, variables]``), a row read with ``.tolist()``."""

    tags: list
    applied: list
    pre: list
    clipped: list
    checked: list
    nonfinite_count: list
    norms: list
    nonfinite: np.ndarray  # bool
    changed: np.ndarray  # bool
    ratios: np.ndarray  # float64
    reduced_norms: list | None = None
    reduced_total: list | None = None
    reduced_pre: list | None = None

    def __len__(self) -> int:
        return len(self.tags)

    def row(self, k: int) -> SiteRow:
        replica = self.reduced_norms is not None
        return SiteRow(self.tags[k], self.applied[k], self.pre[k], self.clipped[k], self.checked[k],
                       self.nonfinite_count[k], self.norms[k], self.nonfinite[k].tolist(), self.changed[k].tolist(),
                       self.ratios[k].tolist(),
                       self.reduced_norms[k] if replica else None, self.reduced_total[k] if replica else None,
                       self.reduced_pre[k] if replica else None)


class RowLayout:
    """The float32 row of one apply: ``applied, pre, clipped, checked``, then one block per
    variable of norms, non-finite flags, changed flags and update ratios (the last two: the change
    block, see ``change_block``); under ``tf.distribute`` three more: the
    all-reduced per-variable norms, their total, the all-reduced norm before clipping. The first
    part (up to the non-finite flags) is what ``measure`` returns, before ``apply``.

    A **derived** row (``CHECKED`` holds ``DERIVED`` + checked) leaves the arithmetic to the host:
    its norm columns hold each gradient's ``l2_loss`` (half its squared norm, NaN for a ``None``
    gradient), its non-finite flags may be NaN for "non-finite" (``graph_stats.zero_sums``), and
    ``applied, pre, clipped`` are blank; ``decode`` computes the norms and their total in float32
    exactly as the ops of a full row do (``2 * half``, ``sqrt``, a sum in variable order), so both
    give the same bits. A step without any clipping or loss scale writes a derived row: fewer ops
    on the device, where each costs more than on the host, decoded in batches."""

    FIXED = 4
    APPLIED, PRE, CLIPPED, CHECKED = range(4)
    DERIVED = 2.0

    def __init__(self, n: int, replica: bool, none_mask):
        self.n = n
        self.replica = replica
        self.real = [k for k, none in enumerate(none_mask) if not none]  # columns summed into a derived total
        self.measured_width = self.FIXED + 2 * n
        self.width = self.FIXED + 4 * n + (n + 2 if replica else 0)

    def parts(self, measured, changed, reduced=None) -> list:
        """The row's parts, in order (one concatenation makes the row): ``measured`` from
        ``measure``, ``changed`` the change block (``change_block`` or ``unchecked_block``),
        ``reduced`` the ``[norms..., total, pre]`` tail (replicas)."""
        return [measured, changed] + ([reduced] if self.replica else [])

    def decode(self, rows: np.ndarray, tags: np.ndarray) -> SiteRows:
        """Drained rows (``[k, width]``) and their tags as ``SiteRows``."""
        n, f = self.n, self.FIXED
        derived = rows[:, self.CHECKED] > self.DERIVED - 0.5
        if derived.any():
            rows = self._derive(rows, derived)
        nonfinite = rows[:, f + n:f + 2 * n] > 0.5
        wide = rows.astype(np.float64)  # one conversion: the float columns read as Python floats
        applied, pre, clipped = wide[:, self.APPLIED:self.CLIPPED + 1].T.tolist()
        out = SiteRows(
            tags=tags.astype(np.int64).tolist(),
            applied=applied,
            pre=pre,
            clipped=clipped,
            checked=self.checked(rows).tolist(),
            nonfinite_count=nonfinite.sum(axis=1).tolist(),
            norms=wide[:, f:f + n].tolist(),
            nonfinite=nonfinite,
            changed=rows[:, f + 2 * n:f + 3 * n] > 0.5,
            ratios=wide[:, f + 3 * n:f + 4 * n],
        )
        if self.replica:
            start = f + 4 * n
            out.reduced_norms = wide[:, start:start + n].tolist()
            out.reduced_total = wide[:, start + n].tolist()
            out.reduced_pre = wide[:, start + n + 1].tolist()
        return out

    def _derive(self, rows: np.ndarray, derived: np.ndarray) -> np.ndarray:
        """A copy of ``rows`` whose derived rows are full rows (float32, the ops' order)."""
        n, f = self.n, self.FIXED
        every = derived.all()  # the usual batch: slices, not masked copies
        rows = np.array(rows, np.float32)
        part = rows if every else rows[derived]
        squares = part[:, f:f + n] * np.float32(2.0)
        if self.real:
            total = squares[:, self.real[0]]
            for k in self.real[1:]:
                total = total + squares[:, k]
            applied = np.sqrt(total)
        else:
            applied = np.full(len(squares), np.nan, np.float32)
        part[:, f:f + n] = np.sqrt(squares)
        flags = part[:, f + n:f + 2 * n]
        flags[np.isnan(flags)] = np.float32(1.0)
        part[:, self.APPLIED:self.CLIPPED + 1] = applied[:, None]
        if not every:
            rows[derived] = part
        return rows

    @classmethod
    def checked(cls, rows: np.ndarray) -> np.ndarray:
        """Per row, whether its changes were checked (full or derived)."""
        return np.mod(rows[:, cls.CHECKED], cls.DERIVED) > 0.5


def change_block(variables, befores):
    """Ops: per variable whether it changed (bitwise, 0/1), then per variable its update ratio
    ``||w - w_before|| / ||w_before||`` (NaN where there is no copy)."""
    nan = tf.constant(math.nan, tf.float32)
    flags, ratios = [], []
    for var, before in zip(variables, befores):
        if before is None:
            flags.append(tf.constant(False))
            ratios.append(nan)
        else:
            now = gs.read(var)
            flags.append(gs.differs(now, before))
            ratios.append(gs.update_ratio(now, before))
    return tf.concat([tf.cast(tf.stack(flags), tf.float32), tf.stack(ratios)], 0)


def unchecked_block(n: int):
    """Ops: the change block of a step whose changes were not checked."""
    return tf.constant([0.0] * n + [math.nan] * n, tf.float32)


def histogram_row(grads):
    """Ops: ``[min, max, counts...]`` for every gradient, concatenated (NaN for a None gradient)."""
    real = [g for g in grads if g is not None]
    rows = gs.histograms(real) if real else None
    if len(real) == len(grads):
        return tf.reshape(rows, [-1])
    blank = tf.fill([2 + gs.HIST_BINS], tf.constant(math.nan, tf.float32))
    found = iter(tf.unstack(rows) if real else [])
    return tf.concat([blank if g is None else next(found) for g in grads], 0)


def decode_histograms(row: np.ndarray, n: int):
    """One histogram row: per variable ``(min, max, counts)``, or None (no finite value)."""
    out = []
    for chunk in row.reshape(n, 2 + gs.HIST_BINS):
        lo, hi, counts = float(chunk[0]), float(chunk[1]), chunk[2:]
        ok = math.isfinite(lo) and math.isfinite(hi) and counts.sum() > 0
        out.append((lo, hi, counts) if ok else None)
    return out


class SiteProbe:
    """What every probe shares: the site's identity, its subscribers, the measurement ops and
    the row layout. Subclasses store rows (device ring, host list) and emit ``before``/``after``."""

    # The exact non-finite check as a branch of its own (a subclass for TF1 session graphs: an If
    # with nothing around it costs less than two ops per gradient); else small graph sites go
    # branch-free.
    top_level_branch = False

    def __init__(self, optimizer, variables, none_mask, replica=None):
        """``replica``: ``(local index, local replica count, device, replicas in sync)`` when
        ``apply`` runs in a ``tf.distribute`` replica context; each replica then owns a probe whose
        buffers live on its device (no state shared across replicas)."""
        self.optimizer_ref = weakref.ref(optimizer)
        self.variables = list(variables)
        self.none_mask = tuple(none_mask)
        self.user_clip = False  # the gradients came out of your own clipping
        self.subscribers: list = []
        self.replica = replica
        self.group = (id(optimizer), tuple(id(v) for v in variables), self.none_mask)
        self.layout = RowLayout(len(self.variables), replica is not None, self.none_mask)
        # A small site (a few thousand weights): its per-step ops cost more in count than in data,
        # so they run without a nested branch, on the single-threaded executor where available.
        self.small = _elements(self.variables) <= SMALL_SITE
        self.histograms_built = False  # its ops can write gradient histograms (a watch with a logdir saw it built)
        self.call_sites: tuple = ()  # "file:line" of your code that applied here (engines.site)
        self.eager_sightings = 0  # eager applies whose call site was looked up

    # ---- measurement ops ----------------------------------------------------------------------
    def measure(self, grads, clip: ClipConfig, user: UserClip, checked):
        """Ops: ``[applied, pre, clipped, checked, norms..., nonfinite flags...]`` (float32);
        ``checked``: whether this step compares the variables (a bool, or a bool tensor). Without
        clipping or a loss scale the row is a derived one (``RowLayout``: half squared norms, the
        rest computed on the host).

        Sums of per-variable values use ``add_n`` (a sequential sum), so the numbers do not
        depend on how many variables there are."""
        nan = tf.constant(math.nan, tf.float32)
        real = [g for g in grads if g is not None]
        if clip.scale == 1.0 and not user.seen() and not clip.clips():
            halves = [nan if g is None else gs.half_sq_norm(g) for g in grads]
            mark = RowLayout.DERIVED + (float(checked) if isinstance(checked, bool) else tf.cast(checked, tf.float32))
            head = [nan, nan, nan, mark] + halves
            if self._flags_inline():
                zero = tf.constant(0.0)
                sums = iter(gs.zero_sums(real))  # the host reads NaN as "non-finite"
                return tf.stack(head + [zero if g is None else next(sums) for g in grads])
            bad = self._nonfinite(grads, real, lambda: tf.add_n([h for h, g in zip(halves, grads) if g is not None]))
            return tf.concat([tf.stack(head), bad], 0)
        sq_real = None
        if real:
            sq_real = tf.stack([gs.half_sq_norm(g) for g in real]) * 2.0
            if clip.scale != 1.0:
                sq_real = sq_real / (clip.scale * clip.scale)
        sq = _scatter_real(sq_real, [g is None for g in grads], nan)
        norms = tf.sqrt(sq)
        applied = tf.sqrt(_total(sq_real)) if real else nan
        bad = self._nonfinite(grads, real, lambda: applied)

        # Norm before any user clipping (tf.clip_by_global_norm / tf.clip_by_norm inside watch()).
        if user.global_norm is not None:
            pre = tf.cast(user.global_norm, tf.float32) / clip.scale
        elif any(u is not None for u in user.per_gradient):
            sq_list = tf.unstack(sq)
            pre_sq = [
                tf.square(tf.cast(u() if callable(u) else u, tf.float32) / clip.scale) if u is not None else s
                for u, s, g in zip(user.per_gradient, sq_list, grads) if g is not None
            ]
            pre = tf.sqrt(tf.add_n(pre_sq))
        else:
            pre = applied

        # Norm after the optimizer's own clipping (computed analytically, not by re-clipping).
        if clip.accumulating and clip.clips():
            clipped = nan  # Keras clips the accumulated mean on update steps only
        elif clip.clipnorm:
            clipped = tf.sqrt(_total(tf.square(tf.minimum(tf.sqrt(sq_real), clip.clipnorm))))
        elif clip.global_clipnorm:
            clipped = tf.minimum(applied, clip.global_clipnorm) + (applied - applied)
        elif clip.clipvalue:
            clipped = tf.sqrt(tf.add_n([gs.clipvalue_sq_norm(g, clip.clipvalue, clip.scale) for g in real]))
        else:
            clipped = applied

        checked = tf.constant(1.0 if checked else 0.0) if isinstance(checked, bool) else tf.cast(checked, tf.float32)
        fixed = tf.stack([applied, pre, clipped, checked])
        return tf.concat([fixed, norms, bad], 0)

    def _flags_inline(self) -> bool:
        """Whether the non-finite check runs every recorded step, two ops per gradient (a small
        site in a graph, where a nested branch costs more), not in a branch taken rarely."""
        return self.small and not tf.executing_eagerly() and not self.top_level_branch

    def _nonfinite(self, grads, real, total):
        """Ops: per variable 1.0 where its gradient holds a NaN or Inf (0.0 for ``None``);
        ``total()``: a value that is finite only if every gradient is (ops, built if needed)."""
        n = len(grads)
        if not real:  # every gradient None: nothing can be non-finite
            return tf.zeros([n], tf.float32)

        def per_variable(flags_of):
            """``flags_of(real gradients)`` laid out per variable (False for a None gradient)."""
            if len(real) == n:
                return flags_of(real)
            flags = iter(tf.unstack(flags_of(real)))
            return tf.stack([tf.constant(False) if g is None else next(flags) for g in grads])

        if self._flags_inline():
            return tf.cast(per_variable(gs.nonfinite_small), tf.float32)
        # A finite sum of squares proves every element finite; only otherwise (an Inf/NaN, or
        # float32 overflow of the square) pay for the exact per-variable check, as floats in the
        # branch taken rarely (no cast on the usual path).
        return gs.cond(tf.math.is_finite(total()), lambda: tf.zeros([n], tf.float32),
                       lambda: tf.cast(per_variable(gs.nonfinite_each), tf.float32),
                       single_threaded=self.top_level_branch)

    def reduced_tail(self, reduced_grads, reduced_pre, scale: float):
        """Ops: ``[all-reduced per-variable norms..., their total, all-reduced pre-clip norm]``."""
        n = len(self.variables)
        nan = tf.constant(math.nan, tf.float32)
        if reduced_grads is None:
            norms, total = tf.fill([n], nan), nan
        else:
            real = [g for g in reduced_grads if g is not None]
            sq_real = tf.stack([gs.half_sq_norm(g) for g in real]) * 2.0 if real else None
            norms = tf.sqrt(_scatter_real(sq_real, [g is None for g in reduced_grads], nan))
            total = tf.sqrt(_total(sq_real)) if real else nan
        if reduced_pre is None:
            pre = nan
        else:
            pre = tf.cast(reduced_pre() if callable(reduced_pre) else reduced_pre, tf.float32) / scale
        return tf.concat([norms, tf.reshape(total, [1]), tf.reshape(pre, [1])], 0)

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

    def clip_bounds(self):
        """(global_clipnorm, clipnorm) configured on the optimizer (0.0 when unset)."""
        opt = self.optimizer_ref()
        if opt is None:
            return 0.0, 0.0
        return (float(getattr(opt, "global_clipnorm", None) or 0.0), float(getattr(opt, "clipnorm", None) or 0.0))

    def drain(self):
        """(decoded new rows, rows lost to a full ring): one read of the ring (``ring``)."""
        rows, tags, lost = self.ring.drain()
        return self.layout.decode(rows, tags), lost

    def drain_histograms(self):
        """``[(step, [(min, max, counts) or None per variable])]`` of new histogram rows, or None."""
        if not (self.hist_on and self.hist_ring.pending_estimate()):
            return None
        rows, tags, _ = self.hist_ring.drain()
        n = len(self.variables)
        return [(int(tag), decode_histograms(row, n)) for row, tag in zip(rows, tags)]

    def wanted_histograms(self) -> int:
        """The smallest ``histogram_every`` its subscribers write (0: none)."""
        wanted = [s.settings.histogram_every for s in self.subscribers if s.settings.histogram_every]
        return min(wanted) if wanted else 0

    def changed_since_snapshot(self) -> list[bool]:
        """Per variable: differs from its last snapshot (eager, at exit); all False without snapshots."""
        return [False] * len(self.variables)


def _elements(variables) -> float:
    """The number of weights in ``variables`` (infinite when a shape is not fully known)."""
    total = 0
    for var in variables:
        shape = getattr(var, "shape", None)
        if shape is None or not tf.TensorShape(shape).is_fully_defined():
            return math.inf
        total += tf.TensorShape(shape).num_elements()
    return total


def _total(vector):
    """The sum of a short vector, element by element in order (``add_n``)."""
    parts = tf.unstack(vector)
    return parts[0] if len(parts) == 1 else tf.add_n(parts)


def _scatter_real(sq_real, none_mask, nan):
    """The per-variable vector from the values of the real gradients, NaN where None."""
    if not any(none_mask):
        return sq_real
    real = iter(tf.unstack(sq_real) if sq_real is not None else [])
    return tf.stack([nan if none else next(real) for none in none_mask])


@dataclass
class BeforeState:
    """What ``before`` hands to ``after``: whether this step records, and what it measured."""

    record: object  # device probes: the step's branch (an int32 tensor, or an int when eager; 0: skip)
    measured: object  # float32: what ``measure`` returns
    iteration: object  # int64 scalar tensor: the optimizer step before this apply
    deps: list = field(default_factory=list)  # ops the optimizer's own apply must run after
    check: object = None  # host probes: whether this run compares the variables (bool or bool tensor)
    snapshots: list | None = None  # host probes: the copies of the variables (None: not checked)
    histograms: object = None  # host probes: the histogram row (None: no histograms)
    eager: tuple | None = None  # an eager step recorded after apply: (the real gradients, the clip config)
    written: object = None  # device probes: the ring's write count, read with the plan


SMALL_SITE = 1 << 16  # weights; see SiteProbe.small
PLAN_MAX = 1 << 14  # longest schedule plan (steps); see ``Plan.build``
# STATE: a device probe's int64 state variable: [modulus, offset of the plan half in use, first checks
# left, rows written, histogram rows written, plan codes (two halves)...]. ``configure`` rewrites it
# whole and keeps the two counts it read (a site configured while another thread runs its steps could
# lose a count: watches are entered and left in the training thread).
MODULUS, OFFSET, CHECKS_LEFT, ROWS, HISTOGRAMS = range(5)
HEADER = 5


class Snapshots:
    """Copies of a site's variables (not those with a None gradient) for the change check: one
    variable per copied variable, or (``merged``, for small sites in a graph) one flat variable per
    dtype, since every variable a ``tf.function`` captures costs on every call; with a ``store``
    (a ``RingBuffer`` with ``float32_size(...)`` spare values), the float32 copies live in its
    spare rows (one captured variable fewer)."""

    def __init__(self, variables, none_mask, device=None, merged: bool = True, store=None):
        self.variables = variables
        self.store = store
        groups = self._groups(variables, none_mask, merged)
        self.groups = []  # (copy variable, or None: in the store; members); a group of one keeps its shape
        with tf.init_scope():
            for key, members in groups.items():
                var = variables[members[0][0]]
                if store is not None and key == tf.float32:
                    self.groups.append((None, members))
                    continue
                if len(members) == 1:
                    initial = tf.zeros(var.shape, var.dtype)
                else:
                    initial = tf.zeros([members[-1][1] + members[-1][2]], var.dtype)
                self.groups.append((gs.make_variable(initial, "auditor_snapshot", device), members))

    @staticmethod
    def _groups(variables, none_mask, merged: bool) -> dict:
        """dtype (merged) or variable index -> [(variable index, start, size)]."""
        groups: dict = {}
        for k, (var, none) in enumerate(zip(variables, none_mask)):
            if not none:
                size = tf.TensorShape(var.shape).num_elements()
                key = tf.as_dtype(var.dtype).base_dtype if merged and size is not None else k
                members = groups.setdefault(key, [])
                start = members[-1][1] + members[-1][2] if members else 0
                members.append((k, start, size))
        return groups

    @classmethod
    def float32_size(cls, variables, none_mask, merged: bool) -> int:
        """How many values the merged float32 copies hold (what a ``store`` must spare)."""
        members = cls._groups(variables, none_mask, merged).get(tf.float32) if merged else None
        return members[-1][1] + members[-1][2] if members else 0

    def take(self):
        """Ops: copy the variables."""
        for copy, members in self.groups:
            if copy is not None and len(members) == 1:
                copy.assign(gs.read(self.variables[members[0][0]]))
                continue
            flat = [tf.reshape(gs.read(self.variables[k]), [-1]) for k, _, _ in members]
            if copy is None:
                self.store.write_spare(flat)
            else:
                copy.assign(tf.concat(flat, 0))

    def befores(self) -> list:
        """Per variable, its copy (None for a variable without one)."""
        out = [None] * len(self.variables)
        for copy, members in self.groups:
            value = self.store.read_spare() if copy is None else copy.read_value()
            for k, start, size in members:
                whole = len(members) == 1 and copy is not None
                out[k] = value if whole else tf.reshape(value[start:start + size], self.variables[k].shape)
        return out


@dataclass
class Plan:
    """A device probe's schedule as a table: for step ``i``, the branch of the probe's ``Case`` ops
    is ``codes[i % modulus]``, or ``codes[modulus + i % modulus]`` (the same with every recorded step
    checked) while "auto" still checks the first recorded steps (``checks_left`` > 0). The graph
    reads one entry per step of the half in use (the device switches halves when the first checks
    are used up); eager steps read the host's copy (this object)."""

    modulus: int
    codes: list  # 2 x modulus branch indices (0: skip)
    checks_left: int  # first recorded steps still to check (the device counts them down)

    @classmethod
    def build(cls, every, period, hist, first, branch) -> "Plan":
        """Record every ``every`` steps, check changes every ``period`` steps (0: never) and on the
        first ``first`` recorded steps, histograms every ``hist`` steps (0: never); ``branch(check,
        histogram)`` is the site's branch index. The plan repeats after the least common multiple
        of the three periods; past ``PLAN_MAX`` steps it repeats after a multiple of ``every``
        (recording stays exact, checks and histograms keep their period within each repetition)."""
        modulus = math.lcm(every, period or 1, hist or 1)
        if modulus > PLAN_MAX:
            modulus = every * max(1, PLAN_MAX // every)
        rows = []
        for forced in (False, True):
            rows += [0 if k % every else branch(forced or bool(period and k % period == 0), bool(hist and k % hist == 0))
                     for k in range(modulus)]
        return cls(modulus, rows, first)

    def offset(self) -> int:
        return self.modulus if self.checks_left > 0 else 0


class DeviceProbe(SiteProbe):
    """Device state and emitted ops for one (optimizer, variable list, None pattern).

    Per step the hook adds six small ops that look the step's branch up in the schedule
    (``Plan``: record? check changes? write histograms?) and two ``Case`` ops on it: before
    ``apply`` (measure; on checked steps, copy the variables) and after it (compare, write the
    row). The ``Case`` ops are kept functional (not lowered to switch/merge): a branch not taken
    runs nothing. Eager steps look the branch up in the host's copy of the plan and run only the
    ops of that branch."""

    hist_ring = None

    def __init__(self, optimizer, variables, none_mask, with_snapshots: bool, replica=None,
                 with_histograms: bool = True):
        """``with_histograms``: build the histogram ring and branches (a watch wants histograms;
        unused, they still cost every call of a traced step: one more captured variable, ~10–20 µs
        a step in ``fit`` on the tiny MLP)."""
        super().__init__(optimizer, variables, none_mask, replica)
        device = replica[2] if replica else None
        n = len(self.variables)
        width = self.layout.width
        capacity = int(min(1024, max(64, RING_BYTES // (4 * width))))
        with tf.init_scope():
            # The site's int64 state in one variable (``STATE``): the plan's header, the rings' write
            # counts, the plan (branch of step i: state[offset + i % modulus]; 0 everywhere when idle).
            self.state = gs.make_variable(tf.constant([1, HEADER, 0, 0, 0, 0], tf.int64), "auditor_state", device,
                                          shape=tf.TensorShape([None]))
        # Merged copies pay off in a graph (fewer captured variables), not in eager steps (more ops);
        # the float32 ones live in spare rows of the ring (one captured variable fewer).
        merged = self.small and not tf.executing_eagerly()
        spare = Snapshots.float32_size(self.variables, self.none_mask, merged) if with_snapshots else 0
        self.ring = RingBuffer(width, capacity, self.state, ROWS, device, spare)
        self.capacity = capacity
        # Gradient-value histograms every `hist_every` steps: one row of n x (2 + bins) per
        # histogram step, built only when a watch with a logdir sees the site built. Under
        # tf.distribute only the first local replica keeps them (of the all-reduced gradients,
        # which every replica holds alike).
        self.hist_on = False  # a subscriber wants histograms
        self.histograms_built = with_histograms
        if with_histograms and (replica is None or replica[0] == 0):
            hist_width = n * (2 + gs.HIST_BINS)
            self.hist_ring = RingBuffer(hist_width, int(min(capacity, max(4, HIST_BYTES // (4 * hist_width)))),
                                        self.state, HISTOGRAMS, device)
        # The branches this site can take (a branch is a function to build: only those it can need).
        self.branches = [(c, h) for c in ((False, True) if with_snapshots else (False,))
                         for h in ((False, True) if self.hist_ring is not None else (False,))]
        self.snapshots = (Snapshots(self.variables, self.none_mask, device, merged, self.ring if spare else None)
                          if with_snapshots else None)
        self._plan = None  # the schedule as last configured (Plan), for eager steps

    # ---- runtime configuration (host side, eager) -------------------------------------------
    def configure(self):
        """Set the device schedule from the current subscribers (called under the registry lock):
        record every ``min(every)`` steps; check changes on every recorded step ("every"), on the
        first ``changes_first_steps`` recorded steps and every ``changes_period`` steps ("auto"),
        or never ("off"); histograms every ``min(histogram_every)`` steps."""
        with tf.init_scope():
            counts = [int(c) for c in gs.host_read(self.state, [ROWS, HISTOGRAMS])]  # kept (see STATE)
            if not self.subscribers:
                self._plan = None
                self.state.assign(tf.constant([1, HEADER, 0] + counts + [0], tf.int64))
                return
            settings = [s.settings for s in self.subscribers]
            mode = max(MODES[s.check_changes] for s in settings)
            period = {2: 1, 1: max(1, min(s.changes_period for s in settings)), 0: 0}[mode]
            first = max(s.changes_first_steps for s in settings) if mode == 1 else 0
            hist = self.wanted_histograms() if self.hist_ring is not None else 0
            self.hist_on = bool(hist)
            plan = Plan.build(min(s.every for s in settings), period, hist, first if self.snapshots is not None else 0,
                              self.branch)
            self._plan = plan
            header = [plan.modulus, HEADER + plan.offset(), plan.checks_left]
            self.state.assign(tf.constant(header + counts + plan.codes, tf.int64))

    def branch(self, check: bool, histogram: bool) -> int:
        """The ``Case`` branch of a recorded step (1 + its index in ``branches``)."""
        return 1 + self.branches.index((check and self.snapshots is not None,
                                        histogram and self.hist_ring is not None))

    def recording(self) -> bool:
        """Whether the site's ops record (False once no watch uses it)."""
        return self._plan is not None and any(self._plan.codes)

    # ---- emitted ops --------------------------------------------------------------------------
    def before(self, iteration, grads, clip: ClipConfig, user: UserClip) -> BeforeState:
        """Ops run before ``apply``: decide whether to record and check, measure the gradients,
        snapshot the variables if checking.

        Measuring before ``apply`` lets the gradients' last readers be the optimizer's own
        ops (which may then reuse their buffers), instead of a recording op that runs later."""
        real = [g for g in grads if g is not None]
        if self.replica is None and tf.executing_eagerly() and not user.seen():
            return self._eager_before(iteration, real, clip)
        code, measured, written = self._before_ops(iteration, real, clip, user)
        return BeforeState(code, measured, iteration, written=written)

    def _eager_before(self, iteration, real_grads, clip) -> BeforeState:
        """An eager apply: the host looks the branch up in its copy of the plan (reading the
        device's count of first checks while "auto" may still check the first steps), copies the
        variables on checked steps, and leaves the rest (measure, compare, write) until after
        apply: eager code still holds the gradients then, and a step not recorded runs no op."""
        plan = self._plan
        branch = 0
        if plan is not None:
            if plan.checks_left > 0:  # traced steps of this site may have used some
                plan.checks_left = int(gs.host_read(self.state, CHECKS_LEFT))
            branch = plan.codes[int(iteration) % plan.modulus + plan.offset()]
        if branch and self.branches[branch - 1][0]:
            self.snapshots.take()
        return BeforeState(branch, None, iteration, eager=(real_grads, clip))

    def _before_ops(self, iteration, real_grads, clip, user):
        real = iter(real_grads)
        grads = [None if none else next(real) for none in self.none_mask]
        # The step's branch: one entry of the plan, so that one Case op runs exactly its work; the
        # ring's write count in the same read (nothing else writes it before this step's row).
        modulus, offset, written = tf.unstack(tf.raw_ops.ResourceGather(
            resource=self.state.handle, indices=[MODULUS, OFFSET, ROWS], dtype=tf.int64))
        index = tf.math.floormod(iteration, modulus) + offset
        branch = tf.cast(tf.raw_ops.ResourceGather(resource=self.state.handle, indices=index, dtype=tf.int64), tf.int32)

        def measuring(check: bool, histogram: bool):
            def run():
                if check:
                    self.snapshots.take()
                if histogram and self.replica is None:
                    self.hist_ring.write([histogram_row(grads)], iteration)
                return self.measure(grads, clip, user, check)
            return run

        def skipped():
            return tf.zeros([self.layout.measured_width], tf.float32)

        measured = gs.switch_case(branch, [skipped] + [measuring(c, h) for c, h in self.branches], self.small)
        return branch, measured, written

    def after(self, state: BeforeState, reduced_grads=None, reduced_pre=None, scale: float = 1.0) -> None:
        """Ops run after ``apply``: compare with the snapshot and write the row (if recording).

        ``reduced_grads``: per variable, the all-reduced gradient (replicas), and ``reduced_pre``
        the all-reduced norm before clipping; measured for the row and the histograms only on
        recorded steps."""
        if state.measured is None:  # eager (see _eager_before): the ops of this step's branch only
            if state.record:
                real, clip = state.eager
                check, histogram = self.branches[state.record - 1]
                self._record_ops(state.iteration, real, clip, check, histogram)
                if check:
                    self._plan.checks_left -= 1
            return
        self._after_ops(state, reduced_grads, reduced_pre, scale)

    def _record_ops(self, iteration, real_grads, clip: ClipConfig, check: bool, histogram: bool):
        """Measure, compare and write one eager step (after apply)."""
        real = iter(real_grads)
        grads = [None if none else next(real) for none in self.none_mask]
        if histogram:
            self.hist_ring.write([histogram_row(grads)], iteration)
        measured = self.measure(grads, clip, UserClip([None] * len(grads)), check)
        n = len(self.variables)
        changed = self._compare(self._plan.checks_left > 0) if check else unchecked_block(n)
        self.ring.write(self.layout.parts(measured, changed), iteration)

    def _after_ops(self, state: BeforeState, reduced_grads=None, reduced_pre=None, scale=1.0):
        n, measured, iteration = len(self.variables), state.measured, state.iteration

        def writing(check: bool, histogram: bool):
            def run():
                changed = self._compare() if check else unchecked_block(n)
                tail = self.reduced_tail(reduced_grads, reduced_pre, scale) if self.replica else None
                self.ring.write(self.layout.parts(measured, changed, tail), iteration, state.written)
                if histogram and self.replica is not None and reduced_grads is not None:
                    self.hist_ring.write([histogram_row(reduced_grads)], iteration)
                return iteration  # an output the branch has (no constant node)
            return run

        def skipped():
            return iteration

        gs.switch_case(state.record, [skipped] + [writing(c, h) for c, h in self.branches], self.small)

    def _compare(self, count_down: bool = True):
        """Ops of a checked step after apply: the change block, and one first check counted down
        (the plan switches to its later half when none is left; an eager step whose host copy of
        the plan has none left skips that)."""
        if count_down:
            self._count_down()
        return change_block(self.variables, self.snapshots.befores())

    def _count_down(self):
        handle = self.state.handle
        tf.raw_ops.ResourceScatterAdd(resource=handle, indices=CHECKS_LEFT, updates=tf.constant(-1, tf.int64))
        modulus, offset, left = tf.unstack(tf.raw_ops.ResourceGather(
            resource=handle, indices=[MODULUS, OFFSET, CHECKS_LEFT], dtype=tf.int64))
        later = tf.where(tf.logical_and(left <= 0, offset > HEADER), offset - modulus, offset)
        tf.raw_ops.ResourceScatterUpdate(resource=handle, indices=OFFSET, updates=later)

    # ---- host side ----------------------------------------------------------------------------
    def changed_since_snapshot(self) -> list[bool]:
        if self.snapshots is None:
            return [False] * len(self.variables)
        with tf.init_scope():
            befores = self.snapshots.befores()
            return [bool(before is not None and gs.differs(gs.read(var), before).numpy())
                    for var, before in zip(self.variables, befores)]
