"""What a finished (or running) audit says: the per-variable table, the text summary and the
JSON-ready dictionary of ``Audit.to_dict()``. Pure Python, from records and facts handed in."""
from __future__ import annotations

import math

from auditor.records import json_float


def variable_table(tally, other_paths, changed, tape_none=None) -> dict[str, dict]:
    """{path: optimizer, applied, none_count, changed, mean_norm, max_norm, last_norm, update_ratio}
    for every variable of ``tally`` (a ``findings.RunTally`` of every record of the run) and of
    ``other_paths`` (variables seen only by the tape); ``changed``: the paths seen changing;
    ``tape_none``: {path: times GradientTape.gradient returned None for it} (a None the user
    dropped before ``apply`` still counts). ``mean_norm`` / ``max_norm`` are over finite norms (NaN
    when no norm was finite); ``update_ratio`` is the geometric mean of ||w_after - w_before|| /
    ||w_before|| over the steps whose changes were checked."""
    stats: dict[str, dict] = {}
    for path, v in tally.variables.items():
        entry = stats[path] = _empty()
        entry.update(optimizer=v.optimizer, applied=v.applied, none_count=v.none_count, last_norm=v.last)
        if v.finite:
            entry["mean_norm"] = v.total / v.finite
            entry["max_norm"] = v.maximum
        elif v.applied:
            entry["mean_norm"] = entry["max_norm"] = math.nan
        if v.ratio_n:
            entry["update_ratio"] = math.exp(v.ratio_log / v.ratio_n)
    for path in other_paths:
        stats.setdefault(path, _empty())
    for path, count in (tape_none or {}).items():
        entry = stats.setdefault(path, _empty())
        entry["none_count"] = max(entry["none_count"], count)
    for path, entry in stats.items():
        entry["changed"] = path in changed
    return dict(sorted(stats.items()))


def _empty() -> dict:
    return {"optimizer": None, "applied": 0, "none_count": 0, "changed": False,
            "mean_norm": None, "max_norm": None, "last_norm": None, "update_ratio": None}


def fmt(x) -> str:
    """A table cell: ``-`` for None, yes/no for booleans, 3 significant digits for floats."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def format_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Text lines: the first column left-aligned, the others right-aligned, a rule under the header."""
    table = [header] + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for i, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def finding_line(f) -> str:
    """``GRD104 non-finite-gradient (step 5) at train.py:42: ...``; a whole-run finding has no step."""
    when = f" (step {f.step})" if f.step is not None else " (whole run)"
    where = f" at {', '.join(f.sites)}" if f.sites else ""
    return f"{f.code} {f.name}{when}{where}: {f.message}"


def format_findings(findings) -> list[str]:
    if not findings:
        return ["no findings"]
    return [finding_line(f) for f in findings]


def audit_summary(stats: dict, recorded: int, lost: int, check_changes: str, findings, errors=(), notes=()) -> str:
    """One row per variable, then the findings (and what failed inside the auditor at exit)."""
    header = ["variable", "optimizer", "applied", "none", "changed", "mean_norm", "max_norm", "last_norm",
              "update_ratio"]
    rows = [[fmt(c) for c in (path, s["optimizer"], s["applied"], s["none_count"],
                              s["changed"] if check_changes != "off" else None,
                              s["mean_norm"], s["max_norm"], s["last_norm"], s["update_ratio"])]
            for path, s in stats.items()]
    lines = [f"gradlint auditor: {recorded} recorded apply step(s), {len(stats)} variable(s)"]
    if lost:
        lines.append(f"  ({lost} step record(s) lost: ring buffer overflowed between drains)")
    lines += format_table(header, rows)
    lines.append("")
    lines += format_findings(findings)
    lines += [f"auditor error (logged; training was not affected): {e}" for e in errors]
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def audit_dict(steps, stats: dict, findings, lost: int, marks, settings: dict, errors=()) -> dict:
    """JSON-serialisable record of an audit (non-finite floats as "nan"/"inf" strings)."""
    return {
        "steps": [r.to_dict() for r in steps],
        "variables": {p: {k: (json_float(v) if isinstance(v, float) else v) for k, v in s.items()}
                      for p, s in stats.items()},
        "findings": [f.to_dict() for f in findings],
        "lost_records": lost,
        "marks": list(marks),
        "settings": settings,
        "errors": list(errors),
    }
