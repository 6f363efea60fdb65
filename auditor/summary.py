"""What a finished (or running) audit says: the per-variable table, the text summary and the
JSON-ready dictionary of ``Audit.to_dict()``. Pure Python, from records and facts handed in."""
from __future__ import annotations

import math

from auditor.records import in_step_order, json_float


def variable_table(records, other_paths, changed) -> dict[str, dict]:
    """{path: applied, none_count, changed, mean_norm, max_norm, last_norm} for every variable of
    ``records`` and of ``other_paths`` (variables seen only by the tape); ``changed``: the paths
    seen changing."""
    stats: dict[str, dict] = {}
    norms: dict[str, list[float]] = {}
    for record in in_step_order(records):
        for path in record.var_set:
            entry = stats.setdefault(path, _empty())
            if path in record.none_vars:
                entry["none_count"] += 1
            else:
                entry["applied"] += 1
                value = record.var_norms.get(path)
                if value is not None:
                    norms.setdefault(path, []).append(value)
    for path in other_paths:
        stats.setdefault(path, _empty())
    for path, entry in stats.items():
        entry["changed"] = path in changed
        values = [v for v in norms.get(path, []) if math.isfinite(v)]
        if values:
            entry["mean_norm"] = sum(values) / len(values)
            entry["max_norm"] = max(values)
        last = norms.get(path)
        if last:
            entry["last_norm"] = last[-1]
    return dict(sorted(stats.items()))


def _empty() -> dict:
    return {"applied": 0, "none_count": 0, "changed": False,
            "mean_norm": None, "max_norm": None, "last_norm": None}


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


def format_findings(findings) -> list[str]:
    if not findings:
        return ["no findings"]
    return [f"{f.code} {f.name}{f' (step {f.step})' if f.step is not None else ''}: {f.message}" for f in findings]


def audit_summary(stats: dict, recorded: int, lost: int, check_changes: str, findings, errors=()) -> str:
    """One row per variable, then the findings (and what failed inside the auditor at exit)."""
    header = ["variable", "applied", "none", "changed", "mean_norm", "max_norm", "last_norm"]
    rows = [[fmt(c) for c in (path, s["applied"], s["none_count"], s["changed"] if check_changes != "off" else None,
                              s["mean_norm"], s["max_norm"], s["last_norm"])] for path, s in stats.items()]
    lines = [f"gradlint auditor: {recorded} recorded apply step(s), {len(stats)} variable(s)"]
    if lost:
        lines.append(f"  ({lost} step record(s) lost: ring buffer overflowed between drains)")
    lines += format_table(header, rows)
    lines.append("")
    lines += format_findings(findings)
    lines += [f"auditor error (logged; training was not affected): {e}" for e in errors]
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
