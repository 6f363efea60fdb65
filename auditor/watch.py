"""``auditor.watch()``: the audit session (context manager) and its per-step records.

TensorFlow is imported only when a watch is entered.
"""
from __future__ import annotations

import math
import sys
import threading
from collections import deque
from dataclasses import dataclass, field

from gradlint.runtime_checks import RUNTIME_BY_CODE

from auditor import findings as fnd
from auditor.findings import AuditError, Finding

_STREAMING = ("GRD101", "GRD103", "GRD104", "GRD105", "GRD108")


@dataclass
class StepRecord:
    """What one ``apply`` call did. ``step`` is the optimizer's raw iteration count before it."""

    step: int
    optimizer: str
    global_norm: float | None  # before any clipping (user or optimizer)
    clipped_norm: float | None  # after all clipping (None: unknown)
    clip_ratio: float | None  # clipped / global (None: no clipping configured or seen)
    var_norms: dict = field(default_factory=dict)  # path -> norm reaching apply (None for None grads)
    none_vars: list = field(default_factory=list)
    changed_vars: list | None = None  # None: not checked on this step
    nonfinite: list = field(default_factory=list)
    applied_norm: float | None = None  # norm of the gradients reaching apply (after user clipping)
    var_set: tuple = ()  # every variable passed to apply (paths)
    replica_norms: list | None = None  # tf.distribute: each replica's norm before clipping
    clip_bound: float | None = None  # tf.distribute: the configured global_clipnorm (or clipnorm)
    clip_kind: str | None = None  # "global_clipnorm" or "clipnorm" (with clip_bound)
    replicas_in_sync: int | None = None  # tf.distribute: all workers' replicas (replica_norms: this worker's)

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "optimizer": self.optimizer,
            "global_norm": _json_float(self.global_norm),
            "clipped_norm": _json_float(self.clipped_norm),
            "clip_ratio": _json_float(self.clip_ratio),
            "applied_norm": _json_float(self.applied_norm),
            "var_norms": {k: _json_float(v) for k, v in self.var_norms.items()},
            "none_vars": list(self.none_vars),
            "changed_vars": None if self.changed_vars is None else list(self.changed_vars),
            "nonfinite": list(self.nonfinite),
            **({} if self.replica_norms is None else {
                "replica_norms": [_json_float(x) for x in self.replica_norms],
                "clip_bound": _json_float(self.clip_bound), "clip_kind": self.clip_kind,
                "replicas_in_sync": self.replicas_in_sync}),
        }


def _json_float(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else str(x)  # "nan", "inf", "-inf"


def in_step_order(records) -> list[StepRecord]:
    """Records sorted by step, then optimizer (the order of audit.steps and of the sinks)."""
    return sorted(records, key=lambda r: (r.step, r.optimizer))


class Audit:
    """One watch: records, variable stats and findings. Use through ``auditor.watch()``."""

    def __init__(self, model=None, *, every=1, check_changes="auto", logdir=None, jsonl=None,
                 summary=True, raise_on=(), thresholds=None, history=10_000, histogram_every=100):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        if check_changes not in ("auto", "every", "off"):
            raise ValueError(f"check_changes must be 'auto', 'every' or 'off', got {check_changes!r}")
        raise_on = (raise_on,) if isinstance(raise_on, str) else tuple(raise_on)
        unknown = [c for c in raise_on if c not in RUNTIME_BY_CODE]
        if unknown:
            raise ValueError(f"raise_on: unknown runtime codes {unknown}; known: {sorted(RUNTIME_BY_CODE)}")
        self.model = model
        self.every = every
        self.check_changes = check_changes
        self.logdir = logdir
        self.jsonl = jsonl
        self.print_summary = summary
        self.raise_on = raise_on
        self.thresholds = fnd.merge_thresholds(thresholds)
        self.lost_records = 0
        self._thread = None
        self._active = False
        self._done = False
        self._probes: list = []
        if not isinstance(histogram_every, int) or histogram_every < 0:
            raise ValueError(f"histogram_every must be an int >= 0, got {histogram_every!r}")
        if history is not None and (not isinstance(history, int) or history < 1):
            raise ValueError(f"history must be a positive int or None, got {history!r}")
        self.history = history
        self.histogram_every = histogram_every
        self._records: deque = deque(maxlen=history)  # the last `history` records (all with None)
        self.recorded_count = 0  # every record ever ingested (also those that left the window)
        self._evicted: list = []  # records that left the window, not yet checked for findings
        self._past_findings: list[Finding] = []  # findings of earlier windows (history is not None)
        self._evicted_applied: set[str] = set()  # variables with a real gradient in earlier windows
        self._evicted_seen: set[str] = set()  # variables applied at all in earlier windows
        self._sinks: list = []
        self._findings: list[Finding] | None = None
        self._paths: dict[int, str] = {}
        self._path_owner: dict[str, int] = {}
        self._opt_labels: dict[int, str] = {}
        self._opt_refs: dict[int, object] = {}
        self._tape: dict[int, list] = {}  # id -> [variable, snapshot, none_count, real_count]
        self._changed: set[str] = set()
        self._checked_probes: set[int] = set()
        self._marks: list[dict] = []
        self._last_step: dict[str, int] = {}
        self._pending_error: AuditError | None = None
        self._raised_codes: set[str] = set()
        self._calls = 0
        self._drain_every = 1
        self._eager_pending: dict[int, int] = {}
        self._sink_batches: dict[int, list] = {}  # thread -> records of its drain of all probes
        self._replica_rows: dict[tuple, list] = {}  # (probe group, step) -> rows of the replicas so far
        self._lock = threading.RLock()

    # ---- context manager ------------------------------------------------------------------------
    def __enter__(self) -> "Audit":
        if self._active or self._done:
            raise RuntimeError("an Audit object can be entered only once; call auditor.watch() again")
        from auditor import hooks  # imports TensorFlow

        from auditor import sinks

        self._thread = hooks.current_thread_id()
        self._sinks = sinks.open_sinks(self)
        try:
            self._reset_train_function()
            hooks.register(self)
        except BaseException:
            self._close_sinks([])
            raise
        self._active = True
        return self

    def __exit__(self, exc_type, exc, tb):
        from auditor import hooks

        try:
            try:
                self._drain_all()
                # A step whose other replicas' rows were lost to a full ring cannot be rebuilt.
                self.lost_records += len(self._replica_rows)
                self._replica_rows.clear()
                self._compare_at_exit()
            finally:
                hooks.unregister(self)
                self._active = False
                self._done = True
                self._reset_train_function()
        except BaseException:
            self._close_sinks([])
            if exc_type is None:
                raise
            return False  # the original exception wins
        self._evaluate()
        from auditor import sinks

        self._close_sinks(self._findings)
        sinks.log_findings(self._findings)
        if self.print_summary:
            print(self.summary(), file=sys.stdout)
        if exc_type is None:
            self._raise_pending()
            self._raise_if_listed(self._findings, final=True)
        return False

    def _close_sinks(self, found) -> None:
        sinks, self._sinks = self._sinks, []
        for sink in sinks:
            sink.close(self, found)

    def settings(self) -> dict:
        return {
            "every": self.every,
            "check_changes": self.check_changes,
            "raise_on": list(self.raise_on),
            "thresholds": dict(self.thresholds),
            "history": self.history,
        }

    def _reset_train_function(self):
        """Retrace ``model.fit``'s step so the hook sees it (and again after exit, to drop its ops)."""
        if self.model is not None and hasattr(self.model, "train_function"):
            self.model.train_function = None

    def _owns(self, optimizer) -> bool:
        model_opt = getattr(self.model, "optimizer", None) if self.model is not None else None
        if model_opt is None:
            return False
        return optimizer is model_opt or optimizer is getattr(model_opt, "inner_optimizer", None)

    # ---- public API -------------------------------------------------------------------------------
    @property
    def steps(self) -> list[StepRecord]:
        """Per-step records, drained from the device first if the watch is still active."""
        self._drain_now()
        with self._lock:
            return in_step_order(self._records)

    @property
    def findings(self) -> list[Finding]:
        """Findings; complete after exit (during the watch: the streaming ones so far)."""
        if self._findings is None or self._active:
            self._drain_now()
            self._evaluate()
        return list(self._findings)

    @property
    def variables(self) -> dict[str, dict]:
        """{path: applied, none_count, changed, mean_norm, max_norm, last_norm}."""
        from auditor import report

        self._drain_now()
        return report.variable_stats(self)

    def mark_step(self) -> None:
        """Declare a training-step boundary (for loops whose steps the audit cannot infer)."""
        self._drain_now()
        self._marks.append(dict(self._last_step_after()))
        self._raise_pending()

    def summary(self) -> str:
        from auditor import report

        return report.summary(self)

    def to_dict(self) -> dict:
        from auditor import report

        return report.to_dict(self)

    # ---- hooks call these -------------------------------------------------------------------------
    def _on_trace(self, probe) -> None:
        """An apply site is being run or traced: static facts (None gradients)."""
        for var in probe.variables:  # applied: the tape's entry snapshot is no longer needed
            entry = self._tape.get(id(var))
            if entry is not None:
                entry[1] = None
        if (any(probe.none_mask) and "GRD101" in self.raise_on and "GRD101" not in self._raised_codes
                and self._pending_error is None):
            # Raised at the next host point (after this eager step, or after the tf.function call):
            # raising inside a trace would reach the user as autograph's StagingError.
            names = [self._path(v) for v, none in zip(probe.variables, probe.none_mask) if none]
            self._raised_codes.add("GRD101")
            self._pending_error = AuditError(fnd.make_finding(
                "GRD101", f"{len(names)} variable(s) received a None gradient: {', '.join(names)}.",
                None, names))

    def _observe_tape(self, pairs) -> None:
        import tensorflow as tf

        from auditor import graph_stats as gs

        with self._lock:
            for var, grad in pairs:
                entry = self._tape.get(id(var))
                if entry is None:
                    snap = None
                    if self.check_changes != "off" and not self._is_applied(var):
                        with tf.init_scope():
                            # A TF1 graph has no value to take here (it lives in a Session).
                            if tf.executing_eagerly():
                                snap = tf.identity(gs.read(var))
                    entry = self._tape[id(var)] = [var, snap, 0, 0]
                    self._path(var)
                entry[2 if grad is None else 3] += 1

    def _is_applied(self, var) -> bool:
        return any(any(v is var for v in p.variables) for p in self._probes)

    def _after_eager_apply(self, probe) -> None:
        from auditor import hooks

        pending = self._eager_pending.get(id(probe), 0) + 1
        self._eager_pending[id(probe)] = pending
        if self.raise_on or pending >= probe.ring.capacity // 2:
            hooks.drain_probe(probe)
            self._eager_pending[id(probe)] = 0
            self._raise_pending()

    def _after_function_call(self) -> None:
        self._calls += 1
        if self.raise_on or self._calls >= self._drain_every:
            before = self.recorded_count + self.lost_records
            self._drain_now()
            per_call = max(1, (self.recorded_count + self.lost_records - before) // max(self._calls, 1))
            capacity = min((p.ring.capacity for p in self._probes), default=64)
            self._drain_every = max(1, (capacity // 2) // per_call)
            self._calls = 0
            self._raise_pending()

    def _drain_now(self) -> None:
        if self._active:
            self._drain_all()

    def _drain_all(self) -> None:
        """Drain every probe of this watch; the sinks get the new records in step order."""
        from auditor import hooks

        me = threading.get_ident()
        self._sink_batches[me] = []
        try:
            for probe in list(self._probes):
                hooks.drain_probe(probe)
                self._eager_pending[id(probe)] = 0
        finally:
            batch = in_step_order(self._sink_batches.pop(me))
            with self._lock:
                for sink in self._sinks:
                    sink.records(batch)

    def _ingest(self, probe, rows, tags, lost) -> None:
        """Turn drained rows into StepRecords (called by hooks.drain_probe, in any thread)."""
        with self._lock:
            self._ingest_locked(probe, rows, tags, lost)

    def _ingest_locked(self, probe, rows, tags, lost) -> None:
        if lost:
            self.lost_records += int(lost)
        if len(rows) == 0:
            return
        opt = probe.optimizer_ref()
        label = self._opt_label(opt)
        paths = [self._path(v) for v in probe.variables]
        has_clip = probe.has_clipping()
        clip_unknown = probe.clipped_unknown()
        new = []
        if probe.replica is not None:
            for row, tag in zip(rows, tags):
                key = (probe.group, int(tag))
                parts = self._replica_rows.setdefault(key, [])
                parts.append((probe, row))
                if len(parts) >= probe.replica[1]:
                    del self._replica_rows[key]
                    new.append(self._replica_record(parts, int(tag), label, paths, has_clip))
            rows, tags = [], []
        for row, tag in zip(rows, tags):
            applied, pre, clipped, checked, norms, bad, changed = probe.split(row)
            if checked:
                self._checked_probes.add(id(probe))
            changed_paths = [p for p, c in zip(paths, changed) if c] if checked else None
            if changed_paths:
                self._changed.update(changed_paths)
            ratio = None
            if has_clip and not clip_unknown and pre > 0 and math.isfinite(pre):
                ratio = clipped / pre
            record = StepRecord(
                step=int(tag),
                optimizer=label,
                global_norm=pre,
                clipped_norm=None if clip_unknown else clipped,
                clip_ratio=ratio,
                var_norms={p: (None if none else float(n))
                           for p, n, none in zip(paths, norms, probe.none_mask)},
                none_vars=[p for p, none in zip(paths, probe.none_mask) if none],
                changed_vars=changed_paths,
                nonfinite=[p for p, b in zip(paths, bad) if b],
                applied_norm=applied,
                var_set=tuple(paths),
            )
            new.append(record)
        if self.every > 1:  # a nested watch with a smaller `every` makes the site record more often
            new = [r for r in new if r.step % self.every == 0]
        for record in new:
            self._last_step[label] = max(self._last_step.get(label, -1), record.step)
        for record in new:
            if self.history is not None and len(self._records) >= self.history:
                self._evicted.append(self._records.popleft())
            self._records.append(record)
        if self.history is not None and len(self._evicted) >= self.history:
            self._fold_evicted()
        self.recorded_count += len(new)
        batch = self._sink_batches.get(threading.get_ident())
        if batch is not None:
            batch.extend(new)  # sent sorted when the drain of all probes ends
        else:
            for sink in self._sinks:
                sink.records(new)
        if self.raise_on and self._pending_error is None:
            self._check_streaming()

    def _ingest_histograms(self, probe, rows, tags) -> None:
        """Hand drained gradient histograms to the sinks (called by hooks.drain_probe)."""
        if len(rows) == 0 or not self._sinks:
            return
        paths = [self._path(v) for v in probe.variables]
        for row, tag in zip(rows, tags):
            if not self.histogram_every or int(tag) % self.histogram_every:
                continue  # another watch on this site asked for more histograms
            for sink in self._sinks:
                sink.histograms(int(tag), zip(paths, probe.split_histograms(row)))

    def _replica_record(self, parts, step, label, paths, has_clip) -> StepRecord:
        """One optimizer step under tf.distribute, from every local replica's row."""
        parts = sorted(parts, key=lambda pr: pr[0].replica[0])
        probe = parts[0][0]
        split = [p.split(row) for p, row in parts]
        reduced_vars, reduced_total = probe.split_reduced(parts[0][1])
        checked = any(sp[3] for sp in split)
        if checked:
            for p, _ in parts:
                self._checked_probes.add(id(p))
        changed_paths = None
        if checked:
            changed_paths = [path for k, path in enumerate(paths) if any(sp[3] and sp[6][k] for sp in split)]
            self._changed.update(changed_paths)
        pre = split[0][1]
        if probe.has_clipping() and (probe.user_clip or not math.isfinite(pre)):
            pre = max(sp[1] for sp in split)  # user clipping per replica: the largest replica norm
        elif not probe.has_clipping():
            pre = reduced_total
        clipped = reduced_total
        ratio = clipped / pre if has_clip and pre > 0 and math.isfinite(pre) else None
        global_bound, per_var_bound = probe.clip_bounds()
        bound, kind = (global_bound, "global_clipnorm") if global_bound else (
            (per_var_bound, "clipnorm") if per_var_bound else (None, None))
        return StepRecord(
            step=step,
            optimizer=label,
            global_norm=pre,
            clipped_norm=clipped,
            clip_ratio=ratio,
            var_norms={p: (None if none else float(n))
                       for p, n, none in zip(paths, reduced_vars, probe.none_mask)},
            none_vars=[p for p, none in zip(paths, probe.none_mask) if none],
            changed_vars=changed_paths,
            nonfinite=[p for k, p in enumerate(paths) if any(sp[5][k] for sp in split)],
            applied_norm=reduced_total,
            var_set=tuple(paths),
            replica_norms=[sp[1] if probe.user_clip else sp[0] for sp in split],
            clip_bound=bound,
            clip_kind=kind,
            replicas_in_sync=probe.replica[3],
        )

    # ---- findings --------------------------------------------------------------------------------
    def _fold_evicted(self) -> None:
        """Records that left the ``history`` window are checked for findings in chunks of
        ``history`` first, so a long run keeps (say) a NaN at step 100 of 20,000."""
        chunk, self._evicted = in_step_order(self._evicted), []
        if chunk:
            found = fnd.check_none_gradients(chunk, {}, set())
            found += self._record_findings(chunk, set(), complete=True)
            self._past_findings += found
            for r in chunk:
                self._evicted_applied.update(p for p in r.var_set if p not in r.none_vars)
                self._evicted_seen.update(r.var_set)

    def _record_findings(self, records, skip_vanishing: set, complete: bool) -> list[Finding]:
        """The findings that follow from step records alone (apply patterns, NaN, norms, clipping);
        ``complete``: the records are final (vanishing and saturation need the whole span)."""
        out = fnd.check_apply_patterns(records, self._marks, self.thresholds)
        out += fnd.check_nonfinite(records)
        out += fnd.check_exploding(records, self.thresholds)
        if complete:
            out += fnd.check_vanishing(records, self.thresholds, skip_vanishing)
            out += fnd.check_clipping(records, self.thresholds)
        out += fnd.check_replica_clipping(records)
        return out

    def _check_streaming(self) -> None:
        codes = [c for c in self.raise_on if c in _STREAMING and c not in self._raised_codes]
        if not codes:
            return
        current = self._streaming_findings(codes)
        self._raise_if_listed(current, final=False)

    def _streaming_findings(self, codes) -> list[Finding]:
        out = []
        records = self._records
        if "GRD101" in codes:
            out += fnd.check_none_gradients(records, {}, set())
        if "GRD104" in codes:
            out += fnd.check_nonfinite(records)
        if "GRD105" in codes:
            out += fnd.check_exploding(records, self.thresholds)
        if "GRD103" in codes or "GRD108" in codes:
            out += fnd.check_apply_patterns(records, self._marks, self.thresholds)
        return out

    def _raise_if_listed(self, found, final: bool) -> None:
        for finding in found:
            if finding.code in self.raise_on and finding.code not in self._raised_codes:
                self._raised_codes.add(finding.code)
                error = AuditError(finding)
                if final:
                    raise error
                self._pending_error = error
                return

    def _raise_pending(self) -> None:
        error, self._pending_error = self._pending_error, None
        if error is not None:
            raise error

    def _evaluate(self) -> None:
        records = self.steps if self._active else in_step_order(self._records)
        if not self._active:
            self._fold_evicted()
        applied_real, applied_any = set(self._evicted_applied), set(self._evicted_seen)
        for r in records:
            applied_any.update(r.var_set)
            applied_real.update(p for p in r.var_set if p not in r.none_vars)
        tape_none = {self._paths[i]: e[2] for i, e in self._tape.items() if e[2] and not e[3]}
        out = fnd.check_none_gradients(records, tape_none, applied_real)
        none_flagged = set().union(*(f.variables for f in out)) if out else set()
        if not self._active and self.check_changes != "off":
            unchanged_applied = {
                p for p in applied_real if p not in self._changed and self._probe_checked(p)
            }
            unchanged_tape = {
                self._paths[i] for i, e in self._tape.items()
                if self._paths[i] not in applied_any and self._paths[i] not in self._changed
                and e[1] is not None
            }
            out += fnd.check_not_updated(unchanged_applied, unchanged_tape, none_flagged)
        not_updated = set().union(*(f.variables for f in out if f.code == "GRD102")) if out else set()
        skip = not_updated | none_flagged
        out += self._record_findings(records, skip, complete=not self._active)
        # Earlier windows first: per code and variables, the first occurrence is the one kept.
        seen, merged = set(), []
        for finding in self._past_findings + out:
            if finding.code == "GRD106" and set(finding.variables) <= skip and finding.variables:
                continue
            key = (finding.code, tuple(sorted(finding.variables or ())))
            if key not in seen:
                seen.add(key)
                merged.append(finding)
        out = merged
        out.sort(key=lambda f: (f.code, f.step if f.step is not None else -1))
        self._findings = out

    def _probe_checked(self, path: str) -> bool:
        for probe in self._probes:
            if id(probe) in self._checked_probes and any(self._path(v) == path for v in probe.variables):
                return True
        return False

    def _compare_at_exit(self) -> None:
        """Variables unchanged on every checked step: compare them with their last snapshot."""
        import tensorflow as tf

        from auditor import graph_stats as gs

        if self.check_changes == "off":
            return
        for probe in self._probes:
            if id(probe) not in self._checked_probes or probe.snapshots is None:
                continue
            paths = [self._path(v) for v in probe.variables]
            if all(p in self._changed for p in paths):
                continue
            for path, moved in zip(paths, probe.changed_since_snapshot()):
                if moved:
                    self._changed.add(path)
        for entry in self._tape.values():
            var, snap = entry[0], entry[1]
            path = self._path(var)
            if snap is not None and path not in self._changed:
                with tf.init_scope():
                    if bool(gs.differs(gs.read(var), snap).numpy()):
                        self._changed.add(path)
                entry[1] = None if path in self._changed else snap

    # ---- names -------------------------------------------------------------------------------------
    def _path(self, var) -> str:
        from auditor.probe import variable_path

        key = id(var)
        path = self._paths.get(key)
        if path is None:
            base = path = variable_path(var)
            k = 2
            while path in self._path_owner:
                path = f"{base}#{k}"
                k += 1
            self._paths[key] = path
            self._path_owner[path] = key
        return path

    def _opt_label(self, opt) -> str:
        if opt is None:
            return "<deleted optimizer>"
        key = id(opt)
        label = self._opt_labels.get(key)
        if label is None:
            base = label = str(getattr(opt, "name", type(opt).__name__))
            k = 2
            while label in self._opt_labels.values():
                label = f"{base}#{k}"
                k += 1
            self._opt_labels[key] = label
            self._opt_refs[key] = opt
        return label

    def _last_step_after(self) -> dict:
        """Per optimizer: the step number just after the last recorded apply."""
        return {label: step + 1 for label, step in self._last_step.items()}


def watch(model=None, *, every=1, check_changes="auto", logdir=None, jsonl=None, summary=True,
          raise_on=(), thresholds=None, history=10_000, histogram_every=100) -> Audit:
    """Audit the gradient applications of a training run: ``with auditor.watch() as audit:``.

    model: with a Keras model, its ``train_function`` is reset (so ``fit`` retraces with the
        hook) and its optimizer is audited from any thread.
    every: record every N-th optimizer step (per apply site).
    check_changes: "auto" (every step for the first steps, then periodically), "every", "off".
    logdir / jsonl: stream TensorBoard events / JSON lines as records are drained.
    summary: print ``audit.summary()`` at exit.
    raise_on: finding codes that raise ``AuditError`` as soon as they are seen.
    thresholds: overrides of ``auditor.findings.DEFAULT_THRESHOLDS``.
    history: step records kept on the host (the most recent; None keeps all). Findings and
        ``audit.steps`` see this window; the sinks see every record.
    histogram_every: with ``logdir``, a histogram of every variable's gradient values each
        ``histogram_every`` optimizer steps (0 turns them off).
    """
    return Audit(model, every=every, check_changes=check_changes, logdir=logdir, jsonl=jsonl,
                 summary=summary, raise_on=raise_on, thresholds=thresholds, history=history,
                 histogram_every=histogram_every)
