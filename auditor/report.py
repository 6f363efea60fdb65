"""Summaries of an audit: per-variable statistics, the text table and ``to_dict()``."""
from __future__ import annotations

import math

from auditor.watch import in_step_order


def variable_stats(audit) -> dict[str, dict]:
    """{path: applied, none_count, changed, mean_norm, max_norm, last_norm} for every seen variable."""
    stats: dict[str, dict] = {}
    norms: dict[str, list[float]] = {}
    for record in in_step_order(audit._records):
        for path in record.var_set:
            entry = stats.setdefault(path, _empty())
            if path in record.none_vars:
                entry["none_count"] += 1
            else:
                entry["applied"] += 1
                value = record.var_norms.get(path)
                if value is not None:
                    norms.setdefault(path, []).append(value)
    for var_id, entry in audit._tape.items():
        path = audit._paths[var_id]
        stats.setdefault(path, _empty())
    for path, entry in stats.items():
        entry["changed"] = path in audit._changed
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


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def summary(audit) -> str:
    """One row per variable, then the findings."""
    stats = variable_stats(audit)
    steps = audit.recorded_count
    header = ["variable", "applied", "none", "changed", "mean_norm", "max_norm", "last_norm"]
    rows = [[path, s["applied"], s["none_count"], s["changed"] if audit.check_changes != "off" else None,
             s["mean_norm"], s["max_norm"], s["last_norm"]] for path, s in stats.items()]
    table = [header] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [f"gradlint auditor: {steps} recorded apply step(s), {len(stats)} variable(s)"]
    if audit.lost_records:
        lines.append(f"  ({audit.lost_records} step record(s) lost: ring buffer overflowed between drains)")
    for i, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    found = audit.findings
    lines.append("")
    if not found:
        lines.append("no findings")
    for f in found:
        where = f" (step {f.step})" if f.step is not None else ""
        lines.append(f"{f.code} {f.name}{where}: {f.message}")
    return "\n".join(lines)


def to_dict(audit, steps: bool = True) -> dict:
    """JSON-serialisable record of the audit (non-finite floats as "nan"/"inf" strings)."""
    from auditor.watch import _json_float

    stats = variable_stats(audit)
    return {
        "steps": [r.to_dict() for r in audit.steps] if steps else [],
        "variables": {p: {k: (_json_float(v) if isinstance(v, float) else v) for k, v in s.items()}
                      for p, s in stats.items()},
        "findings": [f.to_dict() for f in audit.findings],
        "lost_records": audit.lost_records,
        "marks": list(audit._marks),
        "settings": audit.settings(),
    }
