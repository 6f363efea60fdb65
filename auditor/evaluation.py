"""When and over what the findings are computed for one watch: the ``history`` window of records,
the chunks that left it, the ``raise_on`` codes checked as records arrive, and the final merge.
What each finding means is ``findings.py``; this module only decides what it is applied to.
Pure Python."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from auditor import findings as fnd
from auditor.findings import AuditError, Finding
from auditor.records import in_step_order


def in_finding_order(findings) -> list[Finding]:
    """Findings in the order a run met them: by first step (a cause before its effects), then
    code; whole-run findings (no single step) last."""
    return sorted(findings, key=lambda f: (f.step is None, f.step if f.step is not None else 0, f.code))

# Codes that can be decided while the run goes on (the others need the whole run).
STREAMING = ("GRD101", "GRD103", "GRD104", "GRD105", "GRD108")


@dataclass
class TapeFact:
    """A variable whose gradient ``GradientTape.gradient`` returned inside the watch."""

    path: str
    none_count: int  # times the tape returned None for it
    real_count: int  # times it returned a gradient
    snapshotted: bool  # a snapshot is still held: it was never applied, so its change is checked


@dataclass
class RunFacts:
    """What the recorder knows besides the records: the tape, and which variables changed."""

    tape: list[TapeFact] = field(default_factory=list)
    changed: set = field(default_factory=set)  # paths seen changing
    checked: set = field(default_factory=set)  # paths of apply sites whose changes were checked
    optimizer_classes: dict = field(default_factory=dict)  # optimizer label -> its class name
    repeats: list = field(default_factory=list)  # (label, applies in one step, call sites, paths)
    never_applied: list = field(default_factory=list)  # watch(model): trainable, never given to apply
    discarded_clips: list = field(default_factory=list)  # (label, call sites, paths): clip result unused
    loss_scales: list = field(default_factory=list)  # (inner label, finite steps, overflow steps, scale now)


class StreamingCheck:
    """What the ``raise_on`` codes decidable during the run need, kept as records arrive: every
    record counted once (a ``RunTally``, each batch in step order), and the variable sets each
    optimizer applied. A check costs the new records, not the ``history`` window; the apply
    patterns (GRD103, GRD108) are looked for in the window only once a ``mark_step()`` or a
    second variable set of one optimizer makes them possible."""

    def __init__(self, thresholds: dict):
        self.tally = fnd.RunTally(thresholds)
        self.var_sets: dict[str, set] = {}  # optimizer -> the variable sets it applied

    def add(self, records) -> None:
        self.tally.add(records)
        for record in records:
            self.var_sets.setdefault(record.optimizer, set()).add(record.var_set)

    def patterns_possible(self, marks) -> bool:
        return bool(marks) or any(len(sets) > 1 for sets in self.var_sets.values())


class Evaluation:
    """The records of one watch and the findings that follow from them."""

    def __init__(self, thresholds: dict, raise_on: tuple, check_changes: str, history: int | None):
        self.thresholds = thresholds
        self.raise_on = raise_on
        self.check_changes = check_changes
        self.history = history
        self.window: deque = deque()  # the last `history` records (all with None)
        self.recorded_count = 0  # every record ever added (also those that left the window)
        self.marks: list[dict] = []
        self._evicted: list = []  # records that left the window, not yet counted
        self._tally = fnd.RunTally(thresholds)  # every record that left the window, counted once
        self._run_tally = None  # ((records, evicted), the tally of every record then)
        self._pattern_tail: list = []  # the last record per optimizer of the last chunk (apply patterns)
        self._past_findings: list[Finding] = []  # apply-pattern findings of earlier windows
        self._evicted_applied: set[str] = set()  # variables with a real gradient in earlier windows
        self._evicted_seen: set[str] = set()  # variables applied at all in earlier windows
        self._last_step: dict[str, int] = {}
        self._pending: AuditError | None = None
        self._raised: set[str] = set()
        self._stream = StreamingCheck(thresholds) if any(c in STREAMING for c in raise_on) else None
        self._ordered = None  # (records added, the window in step order then)

    # ---- records in -----------------------------------------------------------------------------
    def add(self, records) -> None:
        """New records (any order); checks the ``raise_on`` codes that can be decided now."""
        for record in records:
            if record.step > self._last_step.get(record.optimizer, -1):
                self._last_step[record.optimizer] = record.step
            if self.history is not None and len(self.window) >= self.history:
                self._evicted.append(self.window.popleft())
            self.window.append(record)
        if self.history is not None and len(self._evicted) >= self.history:
            self._fold_evicted()
        self.recorded_count += len(records)
        if self._stream is not None:
            self._stream.add(in_step_order(records))
            if self._pending is None:
                codes = [c for c in self.raise_on if c in STREAMING and c not in self._raised]
                if codes:
                    self._raise_if_listed(self._streaming_findings(codes), final=False)

    def steps(self) -> list:
        """The window in step order (a list of the caller's own)."""
        return list(self._in_order())

    def _in_order(self) -> list:
        """The window in step order, sorted once per change of the window (not to be changed)."""
        if self._ordered is None or self._ordered[0] != self.recorded_count:
            self._ordered = (self.recorded_count, in_step_order(self.window))
        return self._ordered[1]

    def mark_step(self) -> None:
        """A step boundary: per optimizer, the step just after the last recorded apply."""
        self.marks.append({label: step + 1 for label, step in self._last_step.items()})

    def none_at_trace(self, names: list[str]) -> None:
        """An apply site with None gradients was traced or run: GRD101 is known before any row."""
        if "GRD101" in self.raise_on and "GRD101" not in self._raised and self._pending is None:
            # Raised at the next host point (after this eager step, or after the tf.function call):
            # raising inside a trace would reach the user as autograph's StagingError.
            self._raised.add("GRD101")
            self._pending = AuditError(fnd.make_finding(
                "GRD101", f"{len(names)} variable(s) received a None gradient: {', '.join(names)}.",
                None, names))

    def take_pending(self) -> AuditError | None:
        """The ``raise_on`` error found so far (once)."""
        error, self._pending = self._pending, None
        return error

    # ---- findings -------------------------------------------------------------------------------
    def findings(self, facts: RunFacts, final: bool) -> list[Finding]:
        """Every finding of the run so far; ``final``: the run is over (the whole-run codes too).
        Counts, first steps and maxima cover every record of the run (``RunTally``)."""
        if final:
            self._fold_evicted()
        records = self._in_order()
        tally = self.run_tally()
        applied_real, applied_any = set(self._evicted_applied), set(self._evicted_seen)
        for r in records:
            applied_any.update(r.var_set)
            applied_real.update(p for p in r.var_set if p not in r.none_vars)
        tape_none = {t.path: t.none_count for t in facts.tape if t.none_count and not t.real_count}
        out = tally.none_findings()
        out += fnd.tape_none_finding(tape_none, applied_real, out)
        none_flagged = set().union(*(f.variables for f in out)) if out else set()
        if final and self.check_changes != "off":
            unchanged_applied = {p for p in applied_real if p not in facts.changed and p in facts.checked}
            unchanged_tape = {t.path for t in facts.tape
                              if t.path not in applied_any and t.path not in facts.changed and t.snapshotted}
            zero = {p for p in unchanged_applied if tally.all_zero(p)}
            out += fnd.check_not_updated(unchanged_applied, unchanged_tape, none_flagged, zero, tally.sites_for)
        if final and facts.never_applied:
            out += fnd.check_never_applied(facts.never_applied, none_flagged)
        not_updated = set().union(*(f.variables for f in out if f.code == "GRD102")) if out else set()
        skip = not_updated | none_flagged
        out += self._pattern_findings(records)
        out += fnd.repeated_apply_findings(facts.repeats, tally)
        out += fnd.discarded_clip_findings(facts.discarded_clips, tally)
        if final:
            out += fnd.overflow_findings(facts.loss_scales, self.thresholds, tally)
        out += tally.nonfinite_findings() + tally.exploding_findings() + tally.replica_findings()
        if final:
            out += tally.vanishing_findings(skip) + tally.clipping_findings(facts.optimizer_classes)
        # Earlier windows first: per code and variables, the first occurrence is the one kept.
        seen, merged = set(), []
        for finding in self._past_findings + out:
            key = (finding.code, tuple(sorted(finding.variables or ())))
            if key not in seen:
                seen.add(key)
                merged.append(finding)
        return in_finding_order(merged)

    def run_tally(self) -> fnd.RunTally:
        """Every record so far, counted (the variable table's source: exact over the whole run);
        kept until a record arrives, so the findings, the summary and the sinks at exit share one."""
        if self._run_tally is not None and self._run_tally[0] == (self.recorded_count, len(self._evicted)):
            return self._run_tally[1]
        tally = self._tally.copy()
        tally.add(self._in_order())
        self._run_tally = ((self.recorded_count, len(self._evicted)), tally)
        return tally

    def raise_final(self, found) -> None:
        """At a normal exit: the pending error, else the first listed finding not raised yet."""
        error = self.take_pending()
        if error is not None:
            raise error
        self._raise_if_listed(found, final=True)

    def _fold_evicted(self) -> None:
        """Records that left the ``history`` window are counted once (``RunTally``) and checked for
        apply patterns in chunks of ``history`` (each chunk led by the last record of the one
        before, so no set change falls between chunks); a long run keeps (say) a NaN at step 100 of
        20,000 with its exact count."""
        chunk, self._evicted = in_step_order(self._evicted), []
        if chunk:
            self._tally.add(chunk)
            self._past_findings += self._pattern_findings(chunk)
            last = {}
            for r in chunk:
                last[r.optimizer] = r
                self._evicted_applied.update(p for p in r.var_set if p not in r.none_vars)
                self._evicted_seen.update(r.var_set)
            self._pattern_tail = list(last.values())

    def _pattern_findings(self, records) -> list[Finding]:
        """GRD103 / GRD108 over ``records`` led by the last records of the chunk before them."""
        return fnd.check_apply_patterns(self._pattern_tail + list(records), self.marks, self.thresholds)

    def _streaming_findings(self, codes) -> list[Finding]:
        tally = self._stream.tally
        out = []
        if "GRD101" in codes:
            out += tally.none_findings()
        if "GRD104" in codes:
            out += tally.nonfinite_findings()
        if "GRD105" in codes:
            out += tally.exploding_findings()
        if ("GRD103" in codes or "GRD108" in codes) and self._stream.patterns_possible(self.marks):
            out += self._pattern_findings(self._in_order())
        return out

    def _raise_if_listed(self, found, final: bool) -> None:
        for finding in found:
            if finding.code in self.raise_on and finding.code not in self._raised:
                self._raised.add(finding.code)
                error = AuditError(finding)
                if final:
                    raise error
                self._pending = error
                return
