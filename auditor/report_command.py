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
from auditor.findings import Finding
from auditor.summary import format_findings, format_table


@dataclass
class RecordedRun:
    """What ``gradlint report`` keeps of a run file: per-optimizer series, per-variable series and
    totals, the findings (the step lines themselves are not kept)."""

    settings: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)  # optimizer -> {"step", "global", "clipped", "ratio"} arrays
    var_norms: dict = field(default_factory=dict)  # path -> (steps array, norms array)
    var_stats: dict = field(default_factory=dict)  # path -> VariableTotals
    findings: list = field(default_factory=list)
    lost_records: int = 0
    records: int = 0

    def add(self, record: StepRecord) -> None:
        self.records += 1
        series = self.steps.setdefault(record.optimizer,
                                       {k: array("d") for k in ("step", "global", "clipped", "ratio")})
        series["step"].append(record.step)
        series["global"].append(_num(record.global_norm))
        series["clipped"].append(_num(record.clipped_norm))
        series["ratio"].append(_num(record.clip_ratio))
        for path, norm in record.var_norms.items():
            totals = self.var_stats.setdefault(path, VariableTotals())
            if path in record.none_vars or norm is None:
                totals.none_count += 1
                continue
            totals.add(norm)
            steps, norms = self.var_norms.setdefault(path, (array("d"), array("d")))
            steps.append(record.step)
            norms.append(norm)


@dataclass
class VariableTotals:
    """One variable over a recorded run: applied steps, sum and maximum of its finite norms, last norm."""

    count: int = 0
    total: float = 0.0
    high: float = -math.inf
    last: float = math.nan
    none_count: int = 0

    def add(self, norm: float) -> None:
        self.count += 1
        self.last = norm
        if math.isfinite(norm):
            self.total += norm
            self.high = max(self.high, norm)

    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


def _num(x) -> float:
    return math.nan if x is None else float(x)


def read_run(path) -> RecordedRun:
    run = RecordedRun()
    for entry in read_run_file(path):
        if isinstance(entry, StepRecord):
            run.add(entry)
        elif isinstance(entry, Finding):
            run.findings.append(entry)
        elif isinstance(entry, RunStart):
            run.settings = entry.settings
        elif isinstance(entry, RunEnd):
            run.lost_records = entry.lost_records
    return run


def summary(run: RecordedRun, source: str) -> str:
    lines = [f"{source}: {run.records} recorded step(s), {len(run.steps)} optimizer(s), "
             f"{len(run.var_stats)} variable(s)"]
    if run.lost_records:
        lines.append(f"  ({run.lost_records} step record(s) lost: ring buffer overflowed between drains)")
    for label, s in run.steps.items():
        finite = [g for g in s["global"] if math.isfinite(g)]
        ratios = [r for r in s["ratio"] if math.isfinite(r)]
        text = f"  optimizer {label}: steps {int(s['step'][0])}..{int(s['step'][-1])}"
        if finite:
            text += f", global norm median {_median(finite):.3g}, max {max(finite):.3g}"
        if ratios:
            clipped = sum(1 for r in ratios if r < 0.999)
            text += f", clipped on {clipped}/{len(ratios)} steps"
        lines.append(text)
    header = ["variable", "applied", "none", "mean_norm", "max_norm", "last_norm"]
    rows = [[path, str(t.count), str(t.none_count), _fmt(t.total / t.count if t.count else None),
             _fmt(t.high if t.high > -math.inf else None), _fmt(t.last)]
            for path, t in sorted(run.var_stats.items())]
    lines.append("")
    lines += format_table(header, rows)
    lines.append("")
    lines += format_findings(run.findings)
    return "\n".join(lines)


def _median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3g}"


def main(path: str, plot_path: str | None = None) -> int:
    """Exit status: 0 no findings, 1 findings, 2 an unreadable file (or matplotlib missing)."""
    try:
        run = read_run(path)
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
        save_plot(run, plot_path, title=f"gradlint auditor: {path}")
        print(f"wrote {plot_path}")
    return 1 if run.findings else 0
