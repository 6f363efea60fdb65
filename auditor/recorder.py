"""Rows of a watch's apply sites -> ``StepRecord``s, handed to the evaluation and the sinks.

The recorder is how a watch takes part in the registry: engines and the registry call its public
methods (``site_traced``, ``tape_observed``, the host points ``after_eager_apply`` and
``after_function_call``, ``ingest``). It names variables and optimizers, joins the rows of
``tf.distribute`` replicas into one record per step, applies ``every``, keeps what changed, and
decides when to drain the device. It imports no TensorFlow: probes and tape snapshots do the ops.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

from auditor import registry
from auditor.evaluation import RunFacts, TapeFact
from auditor.records import StepRecord, in_step_order, leave_to_refcounting

logger = logging.getLogger("auditor")


def variable_path(variable) -> str:
    """The variable's Keras path, or its TF name."""
    path = getattr(variable, "path", None)
    return path if isinstance(path, str) and path else getattr(variable, "name", repr(variable))


class Names:
    """Stable names within one watch: variables by path (``#2``, ``#3`` for distinct variables
    with one path), optimizers by what they train (``optimizer_label``; ``#2`` ... likewise)."""

    def __init__(self):
        self._paths: dict[int, str] = {}
        self._path_owner: dict[str, int] = {}
        self._labels: dict[int, str] = {}
        self._optimizers: dict[int, object] = {}  # keeps labelled optimizers alive: ids stay unique

    def path(self, var) -> str:
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

    def optimizer_classes(self) -> dict[str, str]:
        """Optimizer label -> class name (the inner optimizer's for a loss-scale wrapper)."""
        return {label: type(self._optimizers[key]).__name__ for key, label in self._labels.items()
                if key in self._optimizers}

    def label(self, optimizer, paths=()) -> str:
        """The optimizer's label, made from the variable paths of its first apply."""
        if optimizer is None:
            return "<deleted optimizer>"
        key = id(optimizer)
        label = self._labels.get(key)
        if label is None:
            base = label = optimizer_label(optimizer, paths)
            k = 2
            while label in self._labels.values():
                label = f"{base}#{k}"
                k += 1
            self._labels[key] = label
            self._optimizers[key] = optimizer
        return label


def optimizer_label(optimizer, paths) -> str:
    """``<what it trains>/<optimizer>``: the model or top-level layer owning the variables (the
    first component of their paths, Keras' ``_1``, ``_2`` numbering dropped) and the optimizer's
    class name, or the name you gave it. Stable across runs in one process (Keras numbers
    ``adam``, ``adam_1`` ... and ``sequential``, ``sequential_1`` ...), and a GAN's two optimizers
    read ``generator/Adam`` and ``critic/Adam``."""
    kind = type(optimizer).__name__
    name = getattr(optimizer, "name", None)
    if isinstance(name, str) and name and not _numbered(name, kind):
        kind = name
    owners = sorted({_numbered_base(p.split("/", 1)[0].split(":", 1)[0]) for p in paths if "/" in p})
    if not owners or len(owners) > 2:  # variables of no common model or layer (TF1 globals ...)
        return kind
    return f"{'+'.join(owners)}/{kind}"


def _numbered_base(name: str) -> str:
    """``sequential_3`` -> ``sequential``."""
    head, _, tail = name.rpartition("_")
    return head if head and tail.isdigit() else name


def _numbered(name: str, kind: str) -> bool:
    """Whether ``name`` is the library's default name for class ``kind`` (``adam``, ``adam_2``,
    ``GradientDescent`` for ``GradientDescentOptimizer``)."""
    plain = _numbered_base(name).replace("_", "").lower()
    kind = kind.lower()
    return plain in (kind, kind.removesuffix("optimizer"))


@dataclass
class TapeEntry:
    """A variable seen by ``GradientTape.gradient`` inside the watch."""

    variable: object
    snapshot: object  # its value when first seen (has ``differs()``), while its change is checked
    none_count: int = 0
    real_count: int = 0


class Recorder:
    """One watch's records: from drained rows to ``StepRecord``s, in step order to the sinks."""

    def __init__(self, settings, evaluation, sinks, model=None, errors=None):
        self.settings = settings
        self.evaluation = evaluation
        self.sinks = sinks
        self.errors = errors if errors is not None else []  # sink failures (logged, never raised)
        self.model = model
        self.thread = registry.thread_id()
        self.probes: list = []  # probes this watch subscribes to (the registry adds them)
        self.names = Names()
        self.lost_records = 0
        self.ingested = 0
        self.changed: set[str] = set()
        self.tape: dict[int, TapeEntry] = {}
        self.lock = threading.RLock()
        self._checked_probes: set[int] = set()
        self.recording_probes: set = set()  # the probes whose rows reached this watch
        self._eager_pending: dict[int, int] = {}
        self._calls = 0
        self.function_calls = 0  # top-level tf.function calls made in the watch
        self._drain_every = 1
        self._batches: dict[int, list] = {}  # thread -> records of its drain of all probes
        self._replica_rows: dict[tuple, list] = {}  # (probe group, step) -> rows of the replicas so far
        self._unsettled: list = []  # tape snapshots of variables that had no value yet (first trace)
        self._repeats: dict[int, tuple] = {}  # id(optimizer) -> (optimizer, applies in one step, sites, paths)
        self._discarded: dict[int, tuple] = {}  # id(optimizer) -> (optimizer, paths, probe): clip result unused
        self._loss_scales: dict[int, tuple] = {}  # id -> (LossScaleOptimizer, read, counts at first sight)

    def owns(self, optimizer) -> bool:
        """Whether ``optimizer`` is the watched model's (then it is audited from any thread)."""
        model_opt = getattr(self.model, "optimizer", None) if self.model is not None else None
        if model_opt is None:
            return False
        return optimizer is model_opt or optimizer is getattr(model_opt, "inner_optimizer", None)

    # ---- engine events --------------------------------------------------------------------------
    def site_traced(self, probe) -> None:
        """An apply site is being run or traced: its variables are applied (no tape snapshot
        needed) and its None gradients are known now."""
        for var in probe.variables:
            entry = self.tape.get(id(var))
            if entry is not None:
                entry.snapshot = None
        if any(probe.none_mask):
            self.evaluation.none_at_trace(
                [self.names.path(v) for v, none in zip(probe.variables, probe.none_mask) if none])

    def loss_scale_seen(self, optimizer, read) -> None:
        """A ``LossScaleOptimizer``'s branch ran or was traced: ``read()`` gives, on the host, its
        (finite steps, overflow steps, loss scale) so far; the counts at first sight are the baseline."""
        with self.lock:
            if id(optimizer) not in self._loss_scales:
                self._loss_scales[id(optimizer)] = (optimizer, read, read())

    def clip_discarded(self, optimizer, probe) -> None:
        """``optimizer`` was given the very gradients a clip of yours took, not its result."""
        with self.lock:
            paths = [self.names.path(v) for v in probe.variables]
            self._discarded.setdefault(id(optimizer), (optimizer, paths, probe))

    def repeated_apply(self, optimizer, applies) -> None:
        """``optimizer`` was applied ``len(applies)`` times in one step (``[(probe, call site)]``)."""
        with self.lock:
            known = self._repeats.get(id(optimizer))
            if known is not None and known[1] >= len(applies):
                return
            sites = list(dict.fromkeys(w for _, w in applies if w))
            paths = sorted({self.names.path(v) for p, _ in applies for v in p.variables})
            self._repeats[id(optimizer)] = (optimizer, len(applies), sites, paths)

    def tape_observed(self, pairs, take_snapshot) -> None:
        """``(variable, gradient or None)`` pairs from ``tape.gradient``; ``take_snapshot(var)``
        copies a variable's value (or returns None where it cannot)."""
        with self.lock:
            for var, grad in pairs:
                entry = self.tape.get(id(var))
                if entry is None:
                    snap = None
                    if self.settings.check_changes != "off" and not self._applied(var):
                        snap = take_snapshot(var)
                        if snap is not None and not snap.settle():
                            self._unsettled.append(snap)
                    entry = self.tape[id(var)] = TapeEntry(var, snap)
                    self.names.path(var)
                if grad is None:
                    entry.none_count += 1
                else:
                    entry.real_count += 1

    def _applied(self, var) -> bool:
        return any(any(v is var for v in p.variables) for p in self.probes)

    def after_eager_apply(self, probe) -> None:
        """Host point after an eager apply: drain when the ring is half full (or always with
        ``raise_on``), then raise a pending ``AuditError``."""
        pending = self._eager_pending.get(id(probe), 0) + 1
        self._eager_pending[id(probe)] = pending
        if self.settings.raise_on or pending >= probe.capacity // 2:
            registry.drain(probe)
            self._eager_pending[id(probe)] = 0
            self.raise_pending()

    def after_function_call(self) -> None:
        """Host point after a top-level ``tf.function`` call: take the tape snapshots a first trace
        could not take, drain about every half ring of records (adapting to the records per call),
        then raise a pending ``AuditError``."""
        if self._unsettled:
            with self.lock:
                self._unsettled = [snap for snap in self._unsettled if not snap.settle()]
        self._calls += 1
        self.function_calls += 1
        if self.settings.raise_on or self._calls >= self._drain_every:
            before = self.ingested + self.lost_records
            self.drain()
            per_call = max(1, (self.ingested + self.lost_records - before) // max(self._calls, 1))
            capacity = min((p.capacity for p in self.probes), default=64)
            self._drain_every = max(1, (capacity // 2) // per_call)
            self._calls = 0
            self.raise_pending()

    def raise_pending(self) -> None:
        """Raise the ``AuditError`` found so far, if any (at a host point of the user's thread)."""
        error = self.evaluation.take_pending()
        if error is not None:
            raise error

    # ---- rows in ----------------------------------------------------------------------------------
    def drain(self) -> None:
        """Drain every probe of this watch; the sinks get the new records in step order."""
        me = threading.get_ident()
        self._batches[me] = []
        try:
            for probe in list(self.probes):
                registry.drain(probe)
                self._eager_pending[id(probe)] = 0
        finally:
            batch = in_step_order(self._batches.pop(me))
            with self.lock:
                self._to_sinks("records", batch)

    def ingest(self, probe, rows, lost: int) -> None:
        """Decoded rows of ``probe`` (``probe.SiteRows``) and the rows it lost (called by the
        registry, in any thread)."""
        with self.lock:
            if lost:
                self.lost_records += int(lost)
            if not len(rows):
                return
            self.recording_probes.add(probe)
            paths = [self.names.path(v) for v in probe.variables]
            label = self.names.label(probe.optimizer_ref(), paths)
            if probe.replica is not None:
                new = self._replica_records(probe, rows, label, paths)
            else:
                new = self._records(probe, rows, label, paths)
            every = self.settings.every
            if every > 1:  # a nested watch with a smaller `every` makes the site record more often
                new = [r for r in new if r.step % every == 0]
            leave_to_refcounting(new)
            self.ingested += len(new)
            self.evaluation.add(new)
            batch = self._batches.get(threading.get_ident())
            if batch is not None:
                batch.extend(new)  # sent sorted when the drain of all probes ends
            else:
                self._to_sinks("records", new)

    def ingest_histograms(self, probe, histograms) -> None:
        """``[(step, per-variable histogram or None)]`` drained from ``probe``: to the sinks."""
        every = self.settings.histogram_every
        if not self.sinks or not every:
            return
        paths = [self.names.path(v) for v in probe.variables]
        nested = probe.wanted_histograms() != every  # another watch on this site asked for more
        for step, per_variable in histograms:
            if nested and step % every:
                continue
            self._to_sinks("histograms", step, list(zip(paths, per_variable)))

    def _to_sinks(self, method: str, *args) -> None:
        """Hand data to every sink; a sink that fails (a full disk ...) is logged, kept in
        ``errors`` and dropped: training goes on and the other sinks keep writing."""
        for sink in list(self.sinks):
            try:
                getattr(sink, method)(*args)
            except Exception as error:  # noqa: BLE001 - the auditor must not break the user's program
                message = f"writing to the {type(sink).__name__}: {type(error).__name__}: {error}"
                self.errors.append(message)
                logger.error("auditor: failed while %s (this output stops here)", message, exc_info=True)
                self.sinks.remove(sink)

    def _records(self, probe, rows, label, paths) -> list[StepRecord]:
        clip_unknown = probe.clipped_unknown()
        has_clip = probe.has_clipping() and not clip_unknown
        none_mask = probe.none_mask
        none_vars = [p for p, none in zip(paths, none_mask) if none]
        var_set, sites = tuple(paths), probe.call_sites
        out = []
        columns = zip(rows.tags, rows.pre, rows.clipped, rows.checked, rows.applied, rows.norms, rows.nonfinite_count)
        for k, (step, pre, clipped, checked, applied, norms, nonfinite_count) in enumerate(columns):
            changed = ratios = None
            if checked:
                self._checked_probes.add(id(probe))
                changed = [p for p, c in zip(paths, rows.changed[k].tolist()) if c]
                self.changed.update(changed)
                ratios = {p: r for p, r, none in zip(paths, rows.ratios[k].tolist(), none_mask) if not none}
            ratio = clipped / pre if has_clip and pre > 0 and math.isfinite(pre) else None
            if none_vars:
                var_norms = {p: (None if none else x) for p, x, none in zip(paths, norms, none_mask)}
            else:
                var_norms = dict(zip(paths, norms))
            nonfinite = [p for p, b in zip(paths, rows.nonfinite[k].tolist()) if b] if nonfinite_count else []
            # Positional, in StepRecord's field order (a keyword call costs twice as much a row):
            # step, optimizer, global_norm, clipped_norm, clip_ratio, var_norms, none_vars,
            # changed_vars, nonfinite, applied_norm, var_set, replica_norms, clip_bound, clip_kind,
            # replicas_in_sync, sites, update_ratios.
            out.append(StepRecord(step, label, pre, None if clip_unknown else clipped, ratio, var_norms,
                                  none_vars[:], changed, nonfinite, applied, var_set, None, None, None, None,
                                  sites, ratios))
        return out

    def _replica_records(self, probe, rows, label, paths) -> list[StepRecord]:
        """Replica rows wait until every local replica's row of their step is there."""
        out = []
        for k, step in enumerate(rows.tags):
            key = (probe.group, step)
            parts = self._replica_rows.setdefault(key, [])
            parts.append((probe, rows.row(k)))
            if len(parts) >= probe.replica[1]:
                del self._replica_rows[key]
                out.append(self._replica_record(parts, step, label, paths))
        return out

    def _replica_record(self, parts, step, label, paths) -> StepRecord:
        """One optimizer step under tf.distribute, from every local replica's row."""
        parts = sorted(parts, key=lambda pr: pr[0].replica[0])
        probe = parts[0][0]
        rows = [row for _, row in parts]
        first = rows[0]
        checked = any(r.checked for r in rows)
        changed = ratios = None
        if checked:
            for p, _ in parts:
                self._checked_probes.add(id(p))
            changed = [path for k, path in enumerate(paths) if any(r.checked and r.changed[k] for r in rows)]
            self.changed.update(changed)
            row = next(r for r in rows if r.checked)  # mirrored variables: every replica's ratio is the same
            ratios = {p: x for p, x, none in zip(paths, row.ratios, probe.none_mask) if not none}
        has_clip = probe.has_clipping()
        if has_clip and not probe.user_clip:  # the norm of the summed gradients before clipping
            pre = first.reduced_pre
            if not math.isfinite(pre):
                pre = max(r.reduced_pre for r in rows)
        elif has_clip:  # user clipping per replica: the largest replica norm before its clip
            pre = max(r.pre for r in rows)
        else:
            pre = first.reduced_total
        clipped = first.reduced_total
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
            var_norms={p: (None if none else n) for p, n, none in zip(paths, first.reduced_norms, probe.none_mask)},
            none_vars=[p for p, none in zip(paths, probe.none_mask) if none],
            changed_vars=changed,
            nonfinite=[p for k, p in enumerate(paths) if any(r.nonfinite[k] for r in rows)],
            applied_norm=first.reduced_total,
            var_set=tuple(paths),
            replica_norms=[r.pre if probe.user_clip else r.applied for r in rows],
            clip_bound=bound,
            clip_kind=kind,
            replicas_in_sync=probe.replica[3],
            sites=probe.call_sites,
            update_ratios=ratios,
        )

    # ---- the end -----------------------------------------------------------------------------------
    def finish(self) -> None:
        """At exit: drain, count replica steps left incomplete as lost, and compare the variables
        not yet seen changing with their last snapshot."""
        self.drain()
        # A step whose other replicas' rows were lost to a full ring cannot be rebuilt.
        self.lost_records += len(self._replica_rows)
        self._replica_rows.clear()
        if self.settings.check_changes == "off":
            return
        for probe in self.probes:
            if id(probe) not in self._checked_probes or probe.snapshots is None:
                continue
            paths = [self.names.path(v) for v in probe.variables]
            if all(p in self.changed for p in paths):
                continue
            for path, moved in zip(paths, probe.changed_since_snapshot()):
                if moved:
                    self.changed.add(path)
        for entry in self.tape.values():
            path = self.names.path(entry.variable)
            if entry.snapshot is not None and path not in self.changed:
                if entry.snapshot.differs():
                    self.changed.add(path)
                    entry.snapshot = None

    def facts(self) -> RunFacts:
        """What the evaluation needs besides the records."""
        checked = {self.names.path(v) for p in self.probes if id(p) in self._checked_probes for v in p.variables}
        tape = [TapeFact(self.names.path(e.variable), e.none_count, e.real_count, e.snapshot is not None)
                for e in self.tape.values()]
        repeats = [(self.names.label(opt, paths), count, sites, paths)
                   for opt, count, sites, paths in self._repeats.values()]
        never_applied = self.model_variables_never_applied()
        discarded = [(self.names.label(opt, paths), list(probe.call_sites), paths)
                     for opt, paths, probe in self._discarded.values()]
        loss_scales = []
        for opt, read, start in self._loss_scales.values():
            finite, overflow, scale = read()
            inner = getattr(opt, "inner_optimizer", opt)
            loss_scales.append((self.names.label(inner), finite - start[0], overflow - start[1], scale))
        return RunFacts(tape=tape, changed=set(self.changed), checked=checked, loss_scales=loss_scales,
                        optimizer_classes=self.names.optimizer_classes(), repeats=repeats,
                        never_applied=never_applied, discarded_clips=discarded)

    def model_variables_never_applied(self) -> list[str]:
        """With ``watch(model)``: the model's trainable variables (now) that no apply of the watch
        was given while its optimizer applied others (e.g. ``layer.trainable = True`` after
        ``compile``: Keras keeps training the variables it compiled with)."""
        model_opt = getattr(self.model, "optimizer", None) if self.model is not None else None
        mine = [p for p in self.probes if p.optimizer_ref() is not None and self.owns(p.optimizer_ref())]
        if model_opt is None or not mine or not self.ingested:
            return []
        try:
            trainable = list(self.model.trainable_variables)
        except Exception:  # noqa: BLE001 - a model that cannot list them now: nothing to say
            return []
        applied = {id(v) for p in self.probes for v in p.variables}
        return sorted(self.names.path(v) for v in trainable if id(v) not in applied)

    def tape_none_counts(self) -> dict[str, int]:
        """{path: times GradientTape.gradient returned None for it}."""
        return {self.names.path(e.variable): e.none_count for e in self.tape.values() if e.none_count}

    def tape_paths(self) -> list[str]:
        return [self.names.path(e.variable) for e in self.tape.values()]
