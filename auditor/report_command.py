"""``gradlint report RUN.jsonl [--plot out.png]``: the summary and findings of a recorded run.

Reads the run file (``auditor.runfile``) one line at a time; imports neither TensorFlow nor
Keras (matplotlib only for ``--plot``, see ``auditor.plot``).
"""
from __future__ import annotations

import math
import sys
from array import array
from dataclasses import dataclass, field

from auditor.records import StepRecord
from auditor.runfile import RunEnd, RunStart, read_run_file
from auditor.evaluation import Evaluation, RunFacts
from auditor.findings import Finding, merge_thresholds
from auditor.summary import format_findings, format_table


@dataclass
class RecordedRun:
    """What ``gradlint report`` keeps of a run file: per-optimizer series, per-variable series and
    totals, the findings (the step lines themselves are not kept)."""

    settings: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)  # optimizer -> {"step", "global", "clipped", "ratio"} arrays
    var_norms: dict = field(default_factory=dict)  # path -> (steps array, norms array)
    var_stats: dict = field(default_factory=dict)  # path -> VariableTotals
    var_optimizer: dict = field(default_factory=dict)  # path -> the optimizer that applies it
    var_ratios: dict = field(default_factory=dict)  # path -> (steps array, update ratios array): checked steps
    findings: list = field(default_factory=list)
    lost_records: int = 0
    records: int = 0
    finished: bool = False  # the end line was read
    errors: list = field(default_factory=list)  # what failed inside the auditor at exit

    def add(self, record: StepRecord) -> None:
        self.records += 1
        series = self.steps.setdefault(record.optimizer,
                                       {k: array("d") for k in ("step", "global", "clipped", "ratio")})
        series["step"].append(record.step)
        series["global"].append(_num(record.global_norm))
        series["clipped"].append(_num(record.clipped_norm))
        series["ratio"].append(_num(record.clip_ratio))
        for path, norm in record.var_norms.items():
            self.var_optimizer.setdefault(path, record.optimizer)
            totals = self.var_stats.setdefault(path, VariableTotals())
            if path in record.none_vars or norm is None:
                totals.none_count += 1
                continue
            totals.add(norm)
            steps, norms = self.var_norms.setdefault(path, (array("d"), array("d")))
            steps.append(record.step)
            norms.append(norm)
        for path, ratio in (record.update_ratios or {}).items():
            if ratio is None:
                continue
            self.var_stats.setdefault(path, VariableTotals()).add_ratio(ratio)
            steps, ratios = self.var_ratios.setdefault(path, (array("d"), array("d")))
            steps.append(record.step)
            ratios.append(ratio)


@dataclass
class VariableTotals:
    """One variable over a recorded run: applied steps, sum and maximum of its finite norms, last norm."""

    count: int = 0
    finite: int = 0
    total: float = 0.0
    high: float = -math.inf
    last: float = math.nan
    none_count: int = 0
    ratio_log: float = 0.0
    ratio_n: int = 0

    def add_ratio(self, ratio: float) -> None:
        if 0.0 < ratio < math.inf:
            self.ratio_log += math.log(ratio)
            self.ratio_n += 1

    def update_ratio(self) -> float | None:
        """The geometric mean of the update ratios (None: none measured)."""
        return math.exp(self.ratio_log / self.ratio_n) if self.ratio_n else None

    def add(self, norm: float) -> None:
        self.count += 1
        self.last = norm
        if math.isfinite(norm):
            self.finite += 1
            self.total += norm
            self.high = max(self.high, norm)

    def mean(self) -> float:
        """The mean of the finite norms (NaN when none was finite)."""
        return self.total / self.finite if self.finite else math.nan


def _num(x) -> float:
    return math.nan if x is None else float(x)


def read_run(path, warn=None) -> RecordedRun:
    """The run file at ``path``; a run without its end line (killed, or still running) gets its
    findings computed here from its step lines, with the thresholds it was watched with."""
    run = RecordedRun()
    evaluation = None
    for entry in read_run_file(path, warn):
        if isinstance(entry, StepRecord):
            run.add(entry)
            if evaluation is None:
                evaluation = _evaluation(run.settings)
            evaluation.add([entry])
        elif isinstance(entry, Finding):
            run.findings.append(entry)
        elif isinstance(entry, RunStart):
            run.settings = entry.settings
        elif isinstance(entry, RunEnd):
            run.lost_records = entry.lost_records
            run.finished = True
            run.errors = entry.errors
    if not run.finished and evaluation is not None:
        run.findings = evaluation.findings(RunFacts(), final=True)
    return run


def _evaluation(settings: dict) -> Evaluation:
    """The evaluation a watch with these settings ran (defaults for what the file lacks)."""
    try:
        thresholds = merge_thresholds(settings.get("thresholds"))
    except (TypeError, ValueError):
        thresholds = merge_thresholds(None)
    history = settings.get("history", 10_000)
    history = history if isinstance(history, int) and history > 0 else 10_000
    return Evaluation(thresholds, (), "off", history)


def summary(run: RecordedRun, source: str) -> str:
    lines = [f"{source}: {run.records} recorded step(s), {len(run.steps)} optimizer(s), "
             f"{len(run.var_stats)} variable(s)"]
    if not run.finished:
        lines.append("  the run did not finish (no end line: killed, or still running); the findings below "
                     "are computed from its step lines (GRD102 and the tape's GRD101 need the end of the run)")
    if run.lost_records:
        lines.append(f"  ({run.lost_records} step record(s) lost: ring buffer overflowed between drains)")
    for label, s in run.steps.items():
        finite = [g for g in s["global"] if math.isfinite(g)]
        ratios = [r for r in s["ratio"] if math.isfinite(r)]
        text = f"  optimizer {label}: steps {int(s['step'][0])}..{int(s['step'][-1])}"
        if finite:
            text += f", global norm median {_median(finite):.3g}, max {max(finite):.3g}"
        if len(finite) < len(s["global"]):
            text += f" (of the finite norms; {len(s['global']) - len(finite)} step(s) NaN/Inf or unknown)"
        if ratios:
            clipped = sum(1 for r in ratios if r < 0.999)
            text += f", clipped on {clipped}/{len(ratios)} steps"
        lines.append(text)
    header = ["variable", "optimizer", "applied", "none", "mean_norm", "max_norm", "last_norm", "update_ratio"]
    rows = [[path, run.var_optimizer.get(path, "-"), str(t.count), str(t.none_count),
             _fmt(t.mean() if t.count else None),
             _fmt(t.high if t.high > -math.inf else (math.nan if t.count else None)),
             _fmt(t.last if t.count else None), _fmt(t.update_ratio())]
            for path, t in sorted(run.var_stats.items())]
    lines.append("")
    lines += format_table(header, rows)
    lines.append("")
    lines += format_findings(run.findings)
    lines += [e if e.startswith("note: ") else f"auditor error (logged; training was not affected): {e}"
              for e in run.errors]
    return "\n".join(lines)


def _median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def _fmt(x) -> str:
    """``-`` for nothing recorded (None), ``nan`` for a NaN norm."""
    if x is None:
        return "-"
    return f"{x:.3g}"


def main(path: str, plot_path: str | None = None) -> int:
    """Exit status: 0 no findings, 1 findings, 2 an unreadable file, not an auditor run, or a plot
    that cannot be written (or matplotlib missing)."""
    def warn(message):
        print(f"gradlint report: warning: {message}", file=sys.stderr)

    try:
        run = read_run(path, warn)
    except (OSError, ValueError) as exc:
        print(f"gradlint report: error: {exc}", file=sys.stderr)
        return 2
    print(summary(run, path))
    if plot_path:
        try:
            from auditor.plot import save_plot
        except ImportError:
            print("gradlint report: error: --plot needs matplotlib (pip install 'tf-gradlint[plot]')", file=sys.stderr)
            return 2
        try:
            save_plot(run, plot_path, title=f"gradlint auditor: {path}")
        except (OSError, ValueError) as exc:
            print(f"gradlint report: error: cannot write the plot {plot_path}: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {plot_path}")
    return 1 if run.findings else 0
