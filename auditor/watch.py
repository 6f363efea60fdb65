"""``auditor.watch()``: the audit session — its settings, its lifecycle and its public API.

A watch owns a recorder (device rows -> step records; ``recorder.py``), an evaluation (which
findings, over what; ``evaluation.py``) and its sinks (``sinks.py``). Entering it hooks the training
engines (``auditor.engines``, which imports TensorFlow); exiting drains, restores every patch,
computes the findings and hands them to the sinks.
"""
from __future__ import annotations

import sys

from auditor import sinks as sink_kinds
from auditor import summary as summaries
from auditor.evaluation import Evaluation
from auditor.findings import Finding
from auditor.records import StepRecord
from auditor.recorder import Recorder
from auditor.settings import WatchSettings, check_model

__all__ = ["Audit", "StepRecord", "watch"]


class Audit:
    """One watch: records, variable stats and findings. Use through ``auditor.watch()``."""

    def __init__(self, model=None, *, every=1, check_changes="auto", logdir=None, jsonl=None,
                 summary=True, raise_on=(), thresholds=None, history=10_000, histogram_every=100):
        self.config = WatchSettings.from_arguments(
            every=every, check_changes=check_changes, raise_on=raise_on, thresholds=thresholds,
            history=history, histogram_every=histogram_every, logdir=logdir)
        check_model(model)
        self.model = model
        self.histogram_every = histogram_every
        self.logdir = logdir
        self.jsonl = jsonl
        self.print_summary = summary
        self._evaluation = Evaluation(self.config.thresholds, self.config.raise_on,
                                      self.config.check_changes, self.config.history)
        self.recorder: Recorder | None = None  # from entry on (for tests and debugging)
        self._findings: list[Finding] | None = None
        self._active = False
        self._done = False
        self.errors: list[str] = []  # what failed inside the auditor at exit (logged, never raised)
        self.notes: list[str] = []  # what the watch could not see (e.g. a function traced before it)

    # ---- settings, as attributes ----------------------------------------------------------------
    every = property(lambda self: self.config.every)
    check_changes = property(lambda self: self.config.check_changes)
    raise_on = property(lambda self: self.config.raise_on)
    thresholds = property(lambda self: self.config.thresholds)
    history = property(lambda self: self.config.history)

    def settings(self) -> dict:
        """The settings as the run file and ``to_dict()`` list them."""
        return self.config.as_dict()

    # ---- context manager ------------------------------------------------------------------------
    def __enter__(self) -> "Audit":
        if self._active or self._done:
            raise RuntimeError("an Audit object can be entered only once; call auditor.watch() again")
        from auditor import engines  # imports TensorFlow

        sinks = sink_kinds.open_sinks(self.jsonl, self.logdir, self.config.as_dict())
        self.recorder = Recorder(self.config, self._evaluation, sinks, self.model, self.errors)
        try:
            self._reset_train_function()
            engines.attach(self.recorder)
        except BaseException:
            self._close_sinks([])
            raise
        self._active = True
        return self

    def __exit__(self, exc_type, exc, tb):
        """Drain, restore the patches, compute the findings, close the sinks. Nothing the auditor
        does here raises into your code (a failure is logged and kept in ``errors``); only a
        ``raise_on`` finding raises, after a normal exit of the block."""
        from auditor import engines

        try:
            self._guarded("draining the device buffers and comparing the variables", self.recorder.finish)
        finally:
            try:
                self._guarded("restoring the patched methods", engines.detach, self.recorder)
            finally:
                self._active = False
                self._done = True
                self._guarded("resetting model.train_function", self._reset_train_function)
        self._findings = self._guarded(
            "computing the findings", lambda: self._evaluation.findings(self.recorder.facts(), True)) or []
        if self.recorder.function_calls and not self.recorder.probes:
            self.notes.append(
                f"{self.recorder.function_calls} tf.function call(s) in the watch and no optimizer apply "
                f"recorded: a function traced before the watch has no hook (call it for the first time "
                f"inside the watch, or use watch(model) with model.fit)")
            sink_kinds.logger.warning("auditor: %s", self.notes[-1])
        unbuilt = [p for p in self.recorder.recording_probes if not p.histograms_built]
        if self.recorder.settings.histogram_every and unbuilt:
            self.notes.append(
                f"{len(unbuilt)} apply site(s) were traced or built in a watch without histograms (no logdir): "
                f"their gradients have no histograms here (call the tf.function, or build the TF1 train op, for "
                f"the first time inside a watch with a logdir; model.fit retraces in each watch)")
            sink_kinds.logger.warning("auditor: %s", self.notes[-1])
        self._close_sinks(self._findings)
        # Each finding is printed once: in the summary. The logger gets them when the program
        # configured logging (a handler), never through logging's last-resort stderr printer.
        if sink_kinds.logger.hasHandlers():
            self._guarded("logging the findings", sink_kinds.log_findings, self._findings)
        if self.print_summary:
            self._guarded("printing the summary", lambda: print(self.summary(), file=sys.stdout))
        if exc_type is None:
            self._evaluation.raise_final(self._findings)
        return False

    def _guarded(self, what: str, action, *args):
        """``action(*args)``; an ``Exception`` is logged with its traceback and kept in ``errors``."""
        try:
            return action(*args)
        except Exception as error:  # noqa: BLE001 - the auditor must not break the user's program
            message = f"{what}: {type(error).__name__}: {error}"
            self.errors.append(message)
            sink_kinds.logger.error("auditor: failed while %s", message, exc_info=True)
            return None

    def _close_sinks(self, found) -> None:
        sinks, self.recorder.sinks = self.recorder.sinks, []
        if sinks:
            table = self._guarded("building the variable table", self._variable_table) or {}
            for sink in sinks:
                self._guarded(f"closing the {type(sink).__name__}", sink.close, found, table,
                              self.recorder.lost_records, self._evaluation.recorded_count,
                              self.errors + [f"note: {n}" for n in self.notes])

    def _reset_train_function(self):
        """Retrace ``model.fit``'s step so the hook sees it (and again after exit, to drop its ops)."""
        if self.model is not None and hasattr(self.model, "train_function"):
            self.model.train_function = None

    def _drain_now(self) -> None:
        if self._active:
            self.recorder.drain()

    # ---- public API -------------------------------------------------------------------------------
    @property
    def steps(self) -> list[StepRecord]:
        """Per-step records (the last ``history``), drained from the device first if the watch is
        still active."""
        self._drain_now()
        if self.recorder is None:
            return []
        with self.recorder.lock:
            return self._evaluation.steps()

    @property
    def findings(self) -> list[Finding]:
        """Findings; complete after exit (during the watch: the streaming ones so far)."""
        if self._findings is None or self._active:
            self._drain_now()
            facts = self.recorder.facts() if self.recorder is not None else None
            if facts is None:
                return []
            self._findings = self._evaluation.findings(facts, final=not self._active)
        return list(self._findings)

    @property
    def variables(self) -> dict[str, dict]:
        """{path: applied, none_count, changed, mean_norm, max_norm, last_norm}."""
        self._drain_now()
        return self._variable_table()

    @property
    def lost_records(self) -> int:
        """Records overwritten in a device ring before they were drained."""
        return self.recorder.lost_records if self.recorder is not None else 0

    @property
    def recorded_count(self) -> int:
        """Every record of the run (also those that left the ``history`` window)."""
        return self._evaluation.recorded_count

    def mark_step(self) -> None:
        """Declare a training-step boundary (for loops whose steps the audit cannot infer)."""
        self._drain_now()
        self._evaluation.mark_step()
        if self.recorder is not None:
            self.recorder.raise_pending()

    def summary(self) -> str:
        return summaries.audit_summary(self._variable_table(), self.recorded_count, self.lost_records,
                                       self.check_changes, self.findings, self.errors, self.notes)

    def to_dict(self) -> dict:
        return summaries.audit_dict(self.steps, self._variable_table(), self.findings, self.lost_records,
                                    self._evaluation.marks, self.config.as_dict(), self.errors)

    def _variable_table(self) -> dict:
        if self.recorder is None:
            return {}
        with self.recorder.lock:
            return summaries.variable_table(self._evaluation.run_tally(), self.recorder.tape_paths(),
                                            self.recorder.changed, self.recorder.tape_none_counts())


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
    history: step records kept on the host (the most recent; None keeps all). Findings cover the
        whole run; ``audit.steps`` is this window; the sinks see every record.
    histogram_every: with ``logdir``, a histogram of every variable's gradient values each
        ``histogram_every`` optimizer steps (0 turns them off).
    """
    return Audit(model, every=every, check_changes=check_changes, logdir=logdir, jsonl=jsonl,
                 summary=summary, raise_on=raise_on, thresholds=thresholds, history=history,
                 histogram_every=histogram_every)
