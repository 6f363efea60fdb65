"""Turning per-step records into findings (GRD101-GRD108), with thresholds.

Pure Python: imports no TensorFlow.
"""
from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from gradlint.runtime_checks import RUNTIME_BY_CODE

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

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "name": self.name,
            "message": self.message,
            "step": self.step,
            "variables": list(self.variables),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Finding":
        """The inverse of ``to_dict``."""
        return cls(str(data["code"]), str(data.get("name", "")), str(data.get("message", "")),
                   None if data.get("step") is None else int(data["step"]), list(data.get("variables") or ()))


#: What each threshold accepts: (integer only, lowest value, lowest allowed itself, highest value).
THRESHOLD_RANGES: dict[str, tuple] = {
    "explode_norm": (False, 0.0, False, math.inf),
    "explode_ratio": (False, 1.0, False, math.inf),
    "explode_min_history": (True, 1, True, math.inf),
    "explode_scale_fraction": (False, 0.0, True, 1.0),
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


def make_finding(code: str, message: str, step: int | None, variables=()) -> Finding:
    """A Finding whose name comes from the catalogue and whose message names the static twins."""
    check = RUNTIME_BY_CODE[code]
    if check.static_twins:
        message += f" Static rule(s) that usually cause this: {', '.join(check.static_twins)}."
    return Finding(code, check.name, message, step, sorted(variables))


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


def check_none_gradients(records, tape_none: dict[str, int], applied_real: set[str]) -> list[Finding]:
    """GRD101: None gradients passed to apply, or returned by the tape and never replaced."""
    out = []
    for label, group in by_optimizer(records).items():
        bad = [r for r in group if r.none_vars]
        if bad:
            names = set().union(*(r.none_vars for r in bad))
            out.append(make_finding(
                "GRD101",
                f"optimizer {label}: {len(names)} variable(s) received a None gradient on {len(bad)} "
                f"step(s), first at step {bad[0].step}: {_short(names)}. They are skipped and never train.",
                bad[0].step, names))
    tape_only = {path for path in tape_none if path not in applied_real}
    already = set().union(*(f.variables for f in out)) if out else set()
    tape_only -= already
    if tape_only:
        out.append(make_finding(
            "GRD101",
            f"GradientTape.gradient returned None for {len(tape_only)} variable(s) that never received "
            f"a real gradient in any apply: {_short(tape_only)}.",
            None, tape_only))
    return out


def check_not_updated(unchanged_applied: set[str], unchanged_tape_only: set[str], skip: set[str]) -> list[Finding]:
    """GRD102: variables applied (or with computed gradients) that never changed."""
    out = []
    applied = unchanged_applied - skip
    if applied:
        out.append(make_finding(
            "GRD102",
            f"{len(applied)} variable(s) were passed to the optimizer but never changed during the watch: "
            f"{_short(applied)} (zero gradients, a zero learning rate, or updates filtered out).",
            None, applied))
    tape_only = unchanged_tape_only - skip
    if tape_only:
        out.append(make_finding(
            "GRD102",
            f"{len(tape_only)} variable(s) had gradients computed but were never applied and never "
            f"changed: {_short(tape_only)}.",
            None, tape_only))
    return out


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
        bounds = [m[label] for m in marks if label in m]
        if bounds:
            steps = [r.step for r in group]
            edges = [-math.inf] + sorted(bounds) + [math.inf]
            for lo, hi in zip(edges, edges[1:]):
                inside = [s for s in steps if lo <= s < hi]
                if len(inside) > 1:
                    out.append(make_finding(
                        "GRD103",
                        f"optimizer {label} was applied {len(inside)} times between two mark_step() calls "
                        f"(first at step {inside[0]}); each apply advances `iterations`.",
                        inside[0]))
                    break
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
                    group[0].step, names))
            continue
        first = next(i for i in range(1, len(keys)) if keys[i] != keys[i - 1])
        changed = keys[first] ^ keys[first - 1]
        names = set()
        for r in group:
            if frozenset(r.var_set) & changed:
                names |= set(r.var_set) & set(changed)
        out.append(make_finding(
            "GRD108",
            f"optimizer {label} was applied to {len(set(keys))} different variable sets; the set first "
            f"changed at step {group[first].step}: {_short(names)}.",
            group[first].step, names))
    return out


def check_nonfinite(records) -> list[Finding]:
    """GRD104: NaN or Inf in a gradient."""
    out = []
    for label, group in by_optimizer(records).items():
        bad = [r for r in group if r.nonfinite]
        if bad:
            names = set().union(*(r.nonfinite for r in bad))
            out.append(make_finding(
                "GRD104",
                f"optimizer {label}: NaN/Inf gradients on {len(bad)} step(s), first at step {bad[0].step}, "
                f"in {_short(names)}.",
                bad[0].step, names))
    return out


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
    """GRD105: global norm above a bound or far above its running median."""
    out = []
    bound = thresholds["explode_norm"]
    ratio = thresholds["explode_ratio"]
    min_hist = int(thresholds["explode_min_history"])
    for label, group in by_optimizer(records).items():
        history = RunningMedian(100)
        hits = []
        for r in group:
            norm = r.global_norm
            if norm is None or math.isnan(norm) or (math.isinf(norm) and r.nonfinite):
                continue  # NaN / Inf gradients are GRD104
            reason = None
            if norm > bound:  # includes a norm that overflowed float32 while every element is finite
                reason = f"above the bound {bound:g}"
            elif len(history) >= min_hist:
                med = history.median()
                if med > 0 and norm > ratio * med:
                    reason = f"{norm / med:.0f}x the running median {med:.3g}"
            if reason:
                hits.append((r, reason))
            if math.isfinite(norm):
                history.add(norm)
        if hits:
            r, reason = hits[0]
            out.append(make_finding(
                "GRD105",
                f"optimizer {label}: global gradient norm {r.global_norm:.3g} (before clipping) at step "
                f"{r.step} is {reason} "
                f"({len(hits)} such step(s); max {max(h[0].global_norm for h in hits):.3g}).",
                r.step))
    return out


def check_vanishing(records, thresholds: dict, skip: set[str]) -> list[Finding]:
    """GRD106: a variable's gradient norm below a tiny bound on most steps."""
    norms: dict[str, list[float]] = {}
    first_step: dict[str, int] = {}
    for r in records:
        for path, value in r.var_norms.items():
            if _finite(value):
                norms.setdefault(path, []).append(value)
                first_step.setdefault(path, r.step)
    bound = thresholds["vanish_norm"]
    names = set()
    for path, values in norms.items():
        if path in skip or len(values) < thresholds["vanish_min_steps"]:
            continue
        tiny = sum(v < bound for v in values)
        if tiny / len(values) >= thresholds["vanish_fraction"]:
            names.add(path)
    if not names:
        return []
    step = min(first_step[p] for p in names)
    return [make_finding(
        "GRD106",
        f"{len(names)} variable(s) had a gradient norm below {bound:g} on at least "
        f"{thresholds['vanish_fraction']:.0%} of their steps: {_short(names)}.",
        step, names)]


def check_clipping(records, thresholds: dict) -> list[Finding]:
    """GRD107: clipping active on nearly every step."""
    out = []
    for label, group in by_optimizer(records).items():
        ratios = [(r, r.clip_ratio) for r in group if _finite(r.clip_ratio)]
        if len(ratios) < thresholds["clip_min_steps"]:
            continue
        clipped = [(r, x) for r, x in ratios if x < thresholds["clip_active_ratio"]]
        frac = len(clipped) / len(ratios)
        if frac >= thresholds["clip_fraction"]:
            pre = statistics.median([r.global_norm for r, _ in clipped if _finite(r.global_norm)] or [math.nan])
            post = statistics.median([r.clipped_norm for r, _ in clipped if _finite(r.clipped_norm)] or [math.nan])
            out.append(make_finding(
                "GRD107",
                f"optimizer {label}: clipping was active on {frac:.0%} of {len(ratios)} steps "
                f"(median norm {pre:.3g} before, {post:.3g} after clipping); the clip acts as a "
                f"learning-rate cut.",
                clipped[0][0].step))
    return out


def check_replica_clipping(records) -> list[Finding]:
    """GRD109: under tf.distribute the applied (all-reduced) gradient exceeds the configured bound,
    because each replica clipped its own gradients before the all-reduce."""
    out = []
    for label, group in by_optimizer(records).items():
        over = []
        for r in group:
            if r.replica_norms is None or not r.clip_bound:
                continue
            tol = r.clip_bound * (1 + 1e-3) + 1e-12
            if r.clip_kind == "global_clipnorm":
                applied = r.clipped_norm
            else:
                applied = max((v for v in r.var_norms.values() if _finite(v)), default=None)
            if _finite(applied) and applied > tol:
                over.append((r, applied))
        if over:
            first, worst = over[0][0], max(a for _, a in over)
            out.append(make_finding(
                "GRD109",
                f"optimizer {label}: {first.clip_kind}={first.clip_bound:.4g} is applied per replica before "
                f"the all-reduce across {first.replicas_in_sync or len(first.replica_norms)} replicas; "
                f"the applied gradient norm reached "
                f"{worst:.4g} (over the bound on {len(over)} of {len(group)} steps).",
                first.step))
    return out
