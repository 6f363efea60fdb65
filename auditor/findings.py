"""Turning per-step records into findings (GRD101-GRD108), with thresholds.

Pure Python: imports no TensorFlow.
"""
from __future__ import annotations

import bisect
import copy
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from gradlint.runtime_checks import RUNTIME_BY_CODE

from auditor.records import in_step_order

#: Default thresholds; override any of them with ``watch(thresholds={...})``.
DEFAULT_THRESHOLDS: dict[str, float] = {
    # GRD105: global gradient norm (before clipping) above this bound ...
    "explode_norm": 1e4,
    # ... or above this many times the running median of the previous steps ...
    "explode_ratio": 100.0,
    # ... once at least this many steps of history exist ...
    "explode_min_history": 10,
    # ... and only when it also exceeds this fraction of the largest norm seen before it in the
    # run (the run's own scale: a converged run's spike far below its early norms is no explosion).
    "explode_scale_fraction": 0.1,
    # GRD104 under LossScaleOptimizer: overflow steps (skipped) on at least this fraction ...
    "overflow_fraction": 0.2,
    # ... of at least this many steps.
    "overflow_min_steps": 5,
    # GRD106: a variable's gradient norm below this bound ...
    "vanish_norm": 1e-8,
    # ... on at least this fraction of its steps ...
    "vanish_fraction": 0.9,
    # ... with at least this many steps recorded.
    "vanish_min_steps": 5,
    # GRD107: a step counts as clipped when norm after / before clipping is below this ...
    "clip_active_ratio": 0.999,
    # ... and the finding fires when this fraction of steps is clipped ...
    "clip_fraction": 0.9,
    # ... with at least this many steps recorded.
    "clip_min_steps": 10,
    # GRD103: a cycle of disjoint variable sets must repeat this many times.
    "cycle_min_repeats": 2,
    # check_changes="auto": compare variables on every step for the first N steps ...
    "changes_first_steps": 10,
    # ... then on every N-th optimizer step.
    "changes_period": 50,
}


class AuditError(RuntimeError):
    """Raised by ``watch(raise_on=...)`` when a listed finding occurs; ``.finding`` holds it."""

    def __init__(self, finding: "Finding"):
        super().__init__(f"{finding.code} {finding.name} at step {finding.step}: {finding.message}")
        self.finding = finding


@dataclass
class Finding:
    """One runtime finding: catalogue code and name, a message, the first step, the variables."""

    code: str
    name: str
    message: str
    step: int | None
    variables: list[str] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)  # "file:line" where your code applied

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "name": self.name,
            "message": self.message,
            "step": self.step,
            "variables": list(self.variables),
            "sites": list(self.sites),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Finding":
        """The inverse of ``to_dict``."""
        return cls(str(data["code"]), str(data.get("name", "")), str(data.get("message", "")),
                   None if data.get("step") is None else int(data["step"]), list(data.get("variables") or ()),
                   [str(x) for x in data.get("sites") or ()])


#: What each threshold accepts: (integer only, lowest value, lowest allowed itself, highest value).
THRESHOLD_RANGES: dict[str, tuple] = {
    "explode_norm": (False, 0.0, False, math.inf),
    "explode_ratio": (False, 1.0, False, math.inf),
    "explode_min_history": (True, 1, True, math.inf),
    "explode_scale_fraction": (False, 0.0, True, 1.0),
    "overflow_fraction": (False, 0.0, False, 1.0),
    "overflow_min_steps": (True, 1, True, math.inf),
    "vanish_norm": (False, 0.0, True, math.inf),
    "vanish_fraction": (False, 0.0, False, 1.0),
    "vanish_min_steps": (True, 1, True, math.inf),
    "clip_active_ratio": (False, 0.0, False, 1.0),
    "clip_fraction": (False, 0.0, False, 1.0),
    "clip_min_steps": (True, 1, True, math.inf),
    "cycle_min_repeats": (True, 1, True, math.inf),
    "changes_first_steps": (True, 0, True, math.inf),
    "changes_period": (True, 1, True, math.inf),
}


def merge_thresholds(overrides) -> dict:
    """Defaults updated with ``overrides`` (a dict): an unknown key or a value out of range raises
    ``ValueError``, a value of the wrong type ``TypeError``."""
    if overrides is not None and not isinstance(overrides, Mapping):
        raise TypeError(f"thresholds must be a dict of threshold name -> number (or None), "
                        f"got {type(overrides).__name__} {overrides!r}")
    merged = dict(DEFAULT_THRESHOLDS)
    for key, value in (overrides or {}).items():
        if key not in DEFAULT_THRESHOLDS:
            raise ValueError(
                f"unknown auditor threshold {key!r}; known: {', '.join(sorted(DEFAULT_THRESHOLDS))}"
            )
        merged[key] = _checked_threshold(key, value)
    return merged


def _checked_threshold(key: str, value):
    integer, low, low_included, high = THRESHOLD_RANGES[key]
    kinds = "an int" if integer else "a number"
    bounds = f"{'>=' if low_included else '>'} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
    accepts = f"thresholds[{key!r}] must be {kinds} {bounds}"
    number = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not number:
        raise TypeError(f"{accepts}, got {type(value).__name__} {value!r}")
    if math.isnan(value) or value < low or (value == low and not low_included) or value > high:
        raise ValueError(f"{accepts}, got {value!r}")
    return value


def make_finding(code: str, message: str, step: int | None, variables=(), twins: bool = True,
                 sites=()) -> Finding:
    """A Finding whose name comes from the catalogue and whose message names the static twins
    (``twins=False``: the message already says the cause); ``sites``: where your code applied."""
    check = RUNTIME_BY_CODE[code]
    if check.static_twins and twins:
        message += f" Static rule(s) that usually cause this: {', '.join(check.static_twins)}."
    return Finding(code, check.name, message, step, sorted(variables), list(sites))


def sites_of(records) -> list[str]:
    """The call sites of ``records``, in order of first appearance."""
    found: dict[str, None] = {}
    last = None
    for r in records:
        if r.sites is not last:
            last = r.sites
            for where in r.sites:
                found[where] = None
    return list(found)


def _short(paths, limit=4) -> str:
    paths = sorted(paths)
    text = ", ".join(paths[:limit])
    return text + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def by_optimizer(records) -> dict[str, list]:
    """Records grouped by optimizer label, each group sorted by step."""
    groups: dict[str, list] = {}
    for record in records:
        groups.setdefault(record.optimizer, []).append(record)
    for group in groups.values():
        group.sort(key=lambda r: r.step)
    return groups


def tape_none_finding(tape_none: dict[str, int], applied_real: set[str], already_found) -> list[Finding]:
    """GRD101 for variables the tape returned None for that never got a real gradient in any apply
    (those of ``already_found`` excepted)."""
    tape_only = {path for path in tape_none if path not in applied_real}
    tape_only -= set().union(*(f.variables for f in already_found)) if already_found else set()
    if not tape_only:
        return []
    return [make_finding(
        "GRD101",
        f"GradientTape.gradient returned None for {len(tape_only)} variable(s) that never received "
        f"a real gradient in any apply: {_short(tape_only)}.",
        None, tape_only)]


def check_not_updated(unchanged_applied: set[str], unchanged_tape_only: set[str], skip: set[str],
                      all_zero: set[str] = frozenset(), sites_for=lambda paths: ()) -> list[Finding]:
    """GRD102: variables applied (or with computed gradients) that never changed; ``all_zero``:
    those whose gradient was exactly 0 on every recorded step (zero by construction)."""
    out = []
    applied = unchanged_applied - skip
    zero = applied & set(all_zero)
    if zero:
        out.append(make_finding(
            "GRD102",
            f"{len(zero)} variable(s) were passed to the optimizer but never changed during the watch: "
            f"{_short(zero)}. Their gradient was exactly 0 on every recorded step: the loss does not "
            f"depend on them by construction (e.g. a bias cancelled by a normalisation that follows it, "
            f"or a WGAN critic's output bias, whose gradient sums to 0). Remove them from the trainable "
            f"set if that is intended.",
            None, zero, twins=False, sites=sites_for(zero)))
    applied -= zero
    if applied:
        out.append(make_finding(
            "GRD102",
            f"{len(applied)} variable(s) were passed to the optimizer but never changed during the watch: "
            f"{_short(applied)} (a zero learning rate, updates filtered out, or gradients too small to "
            f"move the weights).",
            None, applied, sites=sites_for(applied)))
    tape_only = unchanged_tape_only - skip
    if tape_only:
        out.append(make_finding(
            "GRD102",
            f"{len(tape_only)} variable(s) had gradients computed but were never applied and never "
            f"changed: {_short(tape_only)}.",
            None, tape_only))
    return out


def repeated_apply_findings(repeats, tally: "RunTally") -> list[Finding]:
    """GRD103 for an optimizer applied several times in one step without ``mark_step()``: from two
    lines of one traced function call, or with the very same gradients (``repeats``: ``(label,
    applies, call sites, paths)`` from the engines). Reported once the applies ran (records)."""
    out = []
    for label, count, sites, paths in repeats:
        if label not in tally.optimizers:
            continue
        where = f" at {' and '.join(sites)}" if sites else ""
        out.append(make_finding(
            "GRD103",
            f"optimizer {label} is applied {count} times in one step{where} (in one traced function call, "
            f"or the same gradients applied again); `iterations` and the optimizer's slots advance "
            f"{count}x per step.",
            None, paths, sites=sites))
    return out


def discarded_clip_findings(discarded, tally: "RunTally") -> list[Finding]:
    """GRD110: an optimizer given the very gradients that went into a clip of yours (``tf.clip_by_norm``,
    ``tf.clip_by_global_norm``, ``tf.clip_by_value``) instead of the clip's result."""
    out = []
    for label, sites, paths in discarded:
        o = tally.optimizers.get(label)
        if o is None:
            continue
        out.append(make_finding(
            "GRD110",
            f"optimizer {label} was given gradients that went into a clip of yours, not the clipped "
            f"result: the clip does nothing (global norm up to {o.peak:.3g} reached apply unclipped).",
            None, paths, sites=sites))
    return out


def overflow_findings(loss_scales, thresholds: dict, tally: "RunTally") -> list[Finding]:
    """GRD104 under ``LossScaleOptimizer``: steps whose scaled gradients overflowed (NaN/Inf) are
    skipped by the wrapper and never reach the inner optimizer; a few at the start are how the
    dynamic scale finds its level, a large fraction means nothing trains."""
    out = []
    for label, finite, overflow, scale in loss_scales:
        total = finite + overflow
        if total < thresholds["overflow_min_steps"] or overflow / total < thresholds["overflow_fraction"]:
            continue
        o = tally.optimizers.get(label)
        out.append(make_finding(
            "GRD104",
            f"optimizer {label} (LossScaleOptimizer): {overflow} of {total} step(s) overflowed (NaN/Inf in "
            f"the scaled gradients) and were skipped: nothing was applied on them; the loss scale is now "
            f"{scale:.3g}.",
            None, (), sites=list(o.sites) if o is not None else ()))
    return out


def check_never_applied(paths, skip: set[str]) -> list[Finding]:
    """GRD102 for trainable variables of the watched model that no optimizer was given."""
    names = set(paths) - skip
    if not names:
        return []
    return [make_finding(
        "GRD102",
        f"{len(names)} trainable variable(s) of the watched model were never passed to an optimizer: "
        f"{_short(names)}. Keras keeps training the variables it compiled with: after setting "
        f"`trainable = True`, call `compile` again.",
        None, names)]


def _cycle_period(keys: list, min_repeats: int) -> int | None:
    """Smallest period p >= 2 such that ``keys`` splits into windows of p pairwise-disjoint sets,
    every window holding the same sets (in any order: TF1 runs sibling apply ops concurrently)."""
    n = len(keys)
    for p in range(2, n // max(min_repeats, 1) + 1):
        head = keys[:p]
        if len(set(head)) != p or any(a & b for i, a in enumerate(head) for b in head[i + 1:]):
            continue
        members = set(head)
        windows = [keys[i:i + p] for i in range(0, n, p)]
        if all(set(w) == members and len(w) == p for w in windows[:-1]) and \
                len(set(windows[-1])) == len(windows[-1]) and set(windows[-1]) <= members:
            return p
    return None


def check_apply_patterns(records, marks: list[dict], thresholds: dict) -> list[Finding]:
    """GRD103 (several applies per step) and GRD108 (variable set changes) per optimizer."""
    out = []
    for label, group in by_optimizer(records).items():
        # Explicit step boundaries from mark_step().
        bounds = sorted(m[label] for m in marks if label in m)
        if bounds:
            crowded = _first_crowded_interval(sorted(r.step for r in group), bounds)
            if crowded is not None:
                first, count = crowded
                out.append(make_finding(
                    "GRD103",
                    f"optimizer {label} was applied {count} times between two mark_step() calls "
                    f"(first at step {first}); each apply advances `iterations`.",
                    first, sites=sites_of(group)))
        sets: dict[tuple, frozenset] = {}  # records of one apply site share their var_set tuple
        keys = [sets.get(r.var_set) or sets.setdefault(r.var_set, frozenset(r.var_set)) for r in group]
        if len(set(keys)) <= 1:
            continue
        period = _cycle_period(keys, int(thresholds["cycle_min_repeats"]))
        if period:
            if not any(f.code == "GRD103" for f in out):
                names = set().union(*keys[:period])
                out.append(make_finding(
                    "GRD103",
                    f"optimizer {label} is applied {period} times per training step to disjoint variable "
                    f"sets in a repeating cycle (a per-variable apply loop, or one optimizer for two "
                    f"models); `iterations` advances {period}x too fast.",
                    group[0].step, names, sites=sites_of(group[:period])))
            continue
        if _freeze_phases(keys):
            continue  # a layer frozen (or unfrozen) between phases: the Keras way, not a bug
        first = next(i for i in range(1, len(keys)) if keys[i] != keys[i - 1])
        changed = keys[first] ^ keys[first - 1]
        names = set()
        for r in group:
            if frozenset(r.var_set) & changed:
                names |= set(r.var_set) & set(changed)
        out.append(make_finding(
            "GRD108",
            f"optimizer {label} was applied to {len(set(keys))} different variable sets that are not a "
            f"freeze or unfreeze between phases; the set first changed at step {group[first].step}: "
            f"{_short(names)}.",
            group[first].step, names, sites=sites_of(group)))
    return out


def _first_crowded_interval(steps: list, bounds: list):
    """``(first step, count)`` of the first interval between two consecutive ``bounds`` (both
    sorted; before the first and after the last count too) that holds more than one of
    ``steps``, or None. One pass over each list."""
    first = count = 0
    interval = None
    k = 0
    for step in steps:
        while k < len(bounds) and bounds[k] <= step:
            k += 1
        if k != interval:
            if count > 1:
                return first, count
            interval, first, count = k, step, 0
        count += 1
    return (first, count) if count > 1 else None


def _freeze_phases(keys: list) -> bool:
    """Whether the variable sets form phases one after another, each set nested in the one before
    it (a subset: layers frozen; a superset: unfrozen), every phase but the last at least two
    records long: a deliberate freeze (``layer.trainable = False`` and compile again) rather than
    one optimizer switching between models. The first and last phase may be short (a run, or a
    chunk of ``history`` records, may start or end inside a phase)."""
    phases = [[keys[0], 1]]
    for key in keys[1:]:
        if key == phases[-1][0]:
            phases[-1][1] += 1
        else:
            phases.append([key, 1])
    for k, ((before, length), (after, _)) in enumerate(zip(phases, phases[1:])):
        if (k and length < 2) or not (after <= before or after >= before):
            return False
    return True


class RunningMedian:
    """The median of the last ``size`` values added (a sorted window: O(size) per value, in C)."""

    def __init__(self, size: int):
        self.size = size
        self.order: deque = deque()
        self.sorted: list[float] = []

    def __len__(self) -> int:
        return len(self.order)

    def add(self, value: float) -> None:
        self.order.append(value)
        bisect.insort(self.sorted, value)
        if len(self.order) > self.size:
            del self.sorted[bisect.bisect_left(self.sorted, self.order.popleft())]

    def median(self) -> float:
        values, mid = self.sorted, len(self.sorted) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def check_exploding(records, thresholds: dict) -> list[Finding]:
    """GRD105: global norm above a bound, or far above its running median and not far below the
    run's own scale."""
    return _tally(records, thresholds).exploding_findings()


def check_vanishing(records, thresholds: dict, skip: set[str]) -> list[Finding]:
    """GRD106: a variable's gradient norm below a tiny bound on most steps."""
    return _tally(records, thresholds).vanishing_findings(skip)


def check_clipping(records, thresholds: dict) -> list[Finding]:
    """GRD107: clipping active on nearly every step."""
    return _tally(records, thresholds).clipping_findings()


def _tally(records, thresholds=None) -> "RunTally":
    tally = RunTally(thresholds or DEFAULT_THRESHOLDS)
    tally.add(in_step_order(records))
    return tally


@dataclass
class OptimizerTally:
    """One optimizer over the whole run: exact counts, first steps and maxima per finding."""

    steps: int = 0
    none_steps: int = 0
    none_first: int | None = None
    none_names: set = field(default_factory=set)
    nonfinite_steps: int = 0
    nonfinite_first: int | None = None
    nonfinite_names: set = field(default_factory=set)
    median: RunningMedian = field(default_factory=lambda: RunningMedian(100))
    peak: float = 0.0  # the largest finite global norm so far (the run's own scale)
    explode_hits: int = 0
    explode_first: tuple | None = None  # (step, norm, reason)
    explode_max: tuple | None = None  # (norm, step)
    clip_steps: int = 0  # steps with a clip ratio
    clipped: int = 0  # ... below clip_active_ratio
    clipped_first: int | None = None
    clipped_pre: float = 0.0  # sums over clipped steps (for the means)
    clipped_post: float = 0.0
    clipped_sums: int = 0
    replica_steps: int = 0
    over: int = 0
    over_first: object = None  # the first record over the bound
    over_worst: float = 0.0
    sites: dict = field(default_factory=dict)  # "file:line" -> None, in order of first appearance


@dataclass
class VariableTally:
    """One variable over the whole run: its applies, norms (finite ones summed, the largest, the
    last), those below ``vanish_norm`` or not exactly 0, update ratios, first step, optimizer."""

    first: int | None = None
    optimizer: str = ""  # the label of the first optimizer that applied it
    applied: int = 0  # steps with a real gradient
    none_count: int = 0  # steps with a None gradient
    finite: int = 0
    total: float = 0.0  # sum of the finite norms
    maximum: float = -math.inf
    last: float | None = None
    tiny: int = 0
    nonzero: int = 0  # finite norms other than exactly 0
    ratio_log: float = 0.0  # sum of log(update ratio) over checked steps with a positive, finite ratio
    ratio_n: int = 0


class RunTally:
    """Every record of a run, once, in step order: what the record-based findings count (GRD101's
    None gradients in apply, GRD104, GRD105, GRD106, GRD107, GRD109). Counts, first steps and
    maxima are exact over the whole run, whatever ``history`` keeps; memory is per optimizer and
    per variable, not per step."""

    def __init__(self, thresholds: dict):
        self.thresholds = thresholds
        self.optimizers: dict[str, OptimizerTally] = {}
        self.variables: dict[str, VariableTally] = {}
        self.set_sites: dict[tuple, dict] = {}  # variable set -> its call sites

    def copy(self) -> "RunTally":
        return copy.deepcopy(self)

    def add(self, records) -> None:
        """Records in step order (per optimizer)."""
        t = self.thresholds
        bound, ratio = t["explode_norm"], t["explode_ratio"]
        min_hist, fraction = int(t["explode_min_history"]), t["explode_scale_fraction"]
        active, tiny = t["clip_active_ratio"], t["vanish_norm"]
        for r in records:
            o = self.optimizers.get(r.optimizer)
            if o is None:
                o = self.optimizers[r.optimizer] = OptimizerTally()
            o.steps += 1
            if r.sites:
                known = self.set_sites.get(r.var_set)
                if known is None:
                    known = self.set_sites[r.var_set] = {}
                if r.sites[-1] not in known:
                    for where in r.sites:
                        known[where] = None
                        o.sites[where] = None
            if r.none_vars:
                o.none_steps += 1
                o.none_names.update(r.none_vars)
                if o.none_first is None:
                    o.none_first = r.step
            if r.nonfinite:
                o.nonfinite_steps += 1
                o.nonfinite_names.update(r.nonfinite)
                if o.nonfinite_first is None:
                    o.nonfinite_first = r.step
            self._explode(o, r, bound, ratio, min_hist, fraction)
            if _finite(r.clip_ratio):
                o.clip_steps += 1
                if r.clip_ratio < active:
                    o.clipped += 1
                    if o.clipped_first is None:
                        o.clipped_first = r.step
                    if _finite(r.global_norm) and _finite(r.clipped_norm):
                        o.clipped_pre += r.global_norm
                        o.clipped_post += r.clipped_norm
                        o.clipped_sums += 1
            if r.replica_norms is not None:
                self._replica(o, r)
            for path, value in r.var_norms.items():
                v = self.variables.get(path)
                if v is None:
                    v = self.variables[path] = VariableTally(first=r.step, optimizer=r.optimizer)
                if value is None:
                    v.none_count += 1
                    continue
                v.applied += 1
                v.last = value
                if value == value and value != math.inf:
                    v.finite += 1
                    v.total += value
                    if value > v.maximum:
                        v.maximum = value
                    if value < tiny:
                        v.tiny += 1
                    if value != 0.0:
                        v.nonzero += 1
            if r.update_ratios:
                for path, moved in r.update_ratios.items():
                    if moved is not None and 0.0 < moved < math.inf:
                        v = self.variables[path]
                        v.ratio_log += math.log(moved)
                        v.ratio_n += 1

    @staticmethod
    def _explode(o: OptimizerTally, r, bound, ratio, min_hist, fraction) -> None:
        norm = r.global_norm
        if norm is None or math.isnan(norm) or (math.isinf(norm) and r.nonfinite):
            return  # NaN / Inf gradients are GRD104
        reason = None
        if norm > bound:  # includes a norm that overflowed float32 while every element is finite
            reason = f"above the bound {bound:g}"
        elif len(o.median) >= min_hist:
            med = o.median.median()
            if med > 0 and norm > ratio * med and norm > fraction * o.peak:
                reason = f"{norm / med:.0f}x the running median {med:.3g}"
        if reason:
            o.explode_hits += 1
            if o.explode_first is None:
                o.explode_first = (r.step, norm, reason)
            if o.explode_max is None or norm > o.explode_max[0]:
                o.explode_max = (norm, r.step)
        if math.isfinite(norm):
            o.median.add(norm)
            o.peak = max(o.peak, norm)

    @staticmethod
    def _replica(o: OptimizerTally, r) -> None:
        o.replica_steps += 1
        if not r.clip_bound:
            return
        tol = r.clip_bound * (1 + 1e-3) + 1e-12
        if r.clip_kind == "global_clipnorm":
            applied = r.clipped_norm
        else:
            applied = max((v for v in r.var_norms.values() if _finite(v)), default=None)
        if _finite(applied) and applied > tol:
            o.over += 1
            o.over_worst = max(o.over_worst, applied)
            if o.over_first is None:
                o.over_first = r

    def sites_for(self, paths) -> list[str]:
        """Call sites of the apply sites that applied any of ``paths``."""
        paths = set(paths)
        found: dict[str, None] = {}
        for var_set, sites in self.set_sites.items():
            if paths.intersection(var_set):
                found.update(sites)
        return list(found)

    def all_zero(self, path: str) -> bool:
        """Whether every recorded gradient of ``path`` was exactly 0 (and there was one)."""
        v = self.variables.get(path)
        return v is not None and v.finite > 0 and v.nonzero == 0

    # ---- findings -----------------------------------------------------------------------------
    def none_findings(self) -> list[Finding]:
        return [make_finding(
            "GRD101",
            f"optimizer {label}: {len(o.none_names)} variable(s) received a None gradient on "
            f"{o.none_steps} step(s), first at step {o.none_first}: {_short(o.none_names)}. "
            f"They are skipped and never train.",
            o.none_first, o.none_names, sites=o.sites) for label, o in self.optimizers.items() if o.none_steps]

    def nonfinite_findings(self) -> list[Finding]:
        return [make_finding(
            "GRD104",
            f"optimizer {label}: NaN/Inf gradients on {o.nonfinite_steps} step(s) of {o.steps}, first at "
            f"step {o.nonfinite_first}, in {_short(o.nonfinite_names)}.",
            o.nonfinite_first, o.nonfinite_names, sites=o.sites) for label, o in self.optimizers.items() if o.nonfinite_steps]

    def exploding_findings(self) -> list[Finding]:
        out = []
        for label, o in self.optimizers.items():
            if not o.explode_hits:
                continue
            step, norm, reason = o.explode_first
            worst, worst_step = o.explode_max
            out.append(make_finding(
                "GRD105",
                f"optimizer {label}: global gradient norm {norm:.3g} (before clipping) at step {step} is "
                f"{reason} ({o.explode_hits} such step(s) in the run; max {worst:.3g} at step {worst_step}).",
                step, sites=o.sites))
        return out

    def vanishing_findings(self, skip: set[str]) -> list[Finding]:
        t = self.thresholds
        names = {path for path, v in self.variables.items()
                 if path not in skip and v.finite and v.finite >= t["vanish_min_steps"]
                 and v.tiny / v.finite >= t["vanish_fraction"]}
        if not names:
            return []
        step = min(self.variables[p].first for p in names)
        return [make_finding(
            "GRD106",
            f"{len(names)} variable(s) had a gradient norm below {t['vanish_norm']:g} on at least "
            f"{t['vanish_fraction']:.0%} of their steps: {_short(names)}.",
            step, names, sites=self.sites_for(names))]

    def clipping_findings(self, classes: dict | None = None) -> list[Finding]:
        """``classes``: optimizer label -> class name (the message says what the clip does to it)."""
        t = self.thresholds
        out = []
        for label, o in self.optimizers.items():
            if o.clip_steps < t["clip_min_steps"] or o.clipped / o.clip_steps < t["clip_fraction"]:
                continue
            pre = o.clipped_pre / o.clipped_sums if o.clipped_sums else math.nan
            post = o.clipped_post / o.clipped_sums if o.clipped_sums else math.nan
            out.append(make_finding(
                "GRD107",
                f"optimizer {label}: clipping was active on {o.clipped} of {o.clip_steps} steps "
                f"({o.clipped / o.clip_steps:.0%}; mean norm {pre:.3g} before, {post:.3g} after clipping); "
                f"{clip_effect((classes or {}).get(label))}",
                o.clipped_first, sites=o.sites))
        return out

    def replica_findings(self) -> list[Finding]:
        out = []
        for label, o in self.optimizers.items():
            if not o.over:
                continue
            first = o.over_first
            out.append(make_finding(
                "GRD109",
                f"optimizer {label}: {first.clip_kind}={first.clip_bound:.4g} is applied per replica before "
                f"the all-reduce across {first.replicas_in_sync or len(first.replica_norms)} replicas; "
                f"the applied gradient norm reached "
                f"{o.over_worst:.4g} (over the bound on {o.over} of {o.replica_steps} steps).",
                first.step, sites=o.sites))
        return out


ADAPTIVE_OPTIMIZERS = ("adam", "rmsprop", "adagrad", "adadelta", "adafactor", "lion", "lamb")


def clip_effect(class_name: str | None) -> str:
    """What a clip active on every step does to this optimizer's updates."""
    if class_name is None:
        return ("the bound sets every update's size: a learning-rate cut for SGD-like optimizers; for "
                "Adam-family ones a constant scale mostly cancels, so the clip does little but hide the "
                "gradient scale.")
    if any(kind in class_name.lower() for kind in ADAPTIVE_OPTIMIZERS):
        return (f"for {class_name} (Adam family) a constant scale mostly cancels in the update, so the "
                f"clip does little but hide the real gradient scale; set the bound above the typical norm "
                f"so that it only catches spikes.")
    return f"for {class_name} the clip acts as a learning-rate cut (every update is scaled down)."
