"""``gradlint report RUN.jsonl [--plot out.png]``: summary and findings of a recorded audit.

Reads the JSON lines written by ``auditor.watch(jsonl=...)`` one at a time; imports neither
TensorFlow nor Keras (matplotlib only for ``--plot``, from the ``plot`` extra).
"""
from __future__ import annotations

import json
import math
import sys
from array import array
from dataclasses import dataclass, field

TOP_VARIABLES = 5


def _num(x):
    if x is None:
        return math.nan
    if isinstance(x, str):
        return float(x)  # "nan", "inf", "-inf"
    return float(x)


@dataclass
class Run:
    settings: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)  # optimizer -> {"step", "global", "clipped", "ratio"} arrays
    var_norms: dict = field(default_factory=dict)  # path -> (steps array, norms array)
    var_stats: dict = field(default_factory=dict)  # path -> [count, sum, max, last, none_count]
    findings: list = field(default_factory=list)
    lost_records: int = 0
    records: int = 0


def read_run(path) -> Run:
    run = Run()
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
            kind = obj.get("type")
            if kind == "run":
                run.settings = obj.get("settings", {})
            elif kind == "step":
                _add_step(run, obj)
            elif kind == "finding":
                run.findings.append(obj)
            elif kind == "end":
                run.lost_records = int(obj.get("lost_records", 0))
    return run


def _add_step(run: Run, obj: dict) -> None:
    run.records += 1
    series = run.steps.setdefault(obj.get("optimizer", "?"), {k: array("d") for k in ("step", "global", "clipped", "ratio")})
    step = int(obj["step"])
    series["step"].append(step)
    series["global"].append(_num(obj.get("global_norm")))
    series["clipped"].append(_num(obj.get("clipped_norm")))
    series["ratio"].append(_num(obj.get("clip_ratio")))
    none = set(obj.get("none_vars", ()))
    for path, norm in obj.get("var_norms", {}).items():
        stats = run.var_stats.setdefault(path, [0, 0.0, -math.inf, math.nan, 0])
        if path in none or norm is None:
            stats[4] += 1
            continue
        value = _num(norm)
        stats[0] += 1
        stats[3] = value
        if math.isfinite(value):
            stats[1] += value
            stats[2] = max(stats[2], value)
        steps, norms = run.var_norms.setdefault(path, (array("d"), array("d")))
        steps.append(step)
        norms.append(value)


def summary(run: Run, source: str) -> str:
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
    rows = [header]
    for path, (count, total, high, last, nones) in sorted(run.var_stats.items()):
        rows.append([path, str(count), str(nones), _fmt(total / count if count else None),
                     _fmt(high if high > -math.inf else None), _fmt(last)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines.append("")
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    if not run.findings:
        lines.append("no findings")
    for f in run.findings:
        where = f" (step {f['step']})" if f.get("step") is not None else ""
        lines.append(f"{f['code']} {f['name']}{where}: {f['message']}")
    return "\n".join(lines)


def _median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3g}"


def plot(run: Run, out: str, title: str) -> None:
    """Draw the run (see ``figure``) into the PNG file ``out``."""
    import matplotlib.pyplot as plt

    fig = figure(run, title)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def figure(run: Run, title: str):
    """Three panels sharing the step axis: global norm (log) before/after clipping, clip ratio,
    and the norms of the variables with the largest mean norm; findings as vertical markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True, constrained_layout=True)
    ax_norm, ax_ratio, ax_vars = axes
    for label, s in run.steps.items():
        steps = list(s["step"])
        ax_norm.plot(steps, _positive(s["global"]), label=f"{label}: global norm (before clipping)", lw=1.5)
        if any(math.isfinite(c) for c in s["clipped"]) and any(math.isfinite(r) for r in s["ratio"]):
            ax_norm.plot(steps, _positive(s["clipped"]), label=f"{label}: after clipping", lw=1.2, ls="--")
        ratios = list(s["ratio"])
        if any(math.isfinite(r) for r in ratios):
            ax_ratio.plot(steps, ratios, label=f"{label}", lw=1.5)
        nonfinite = [st for st, g in zip(steps, s["global"]) if not math.isfinite(g)]
        if nonfinite:
            ax_norm.scatter(nonfinite, [1.0] * len(nonfinite), marker="x", color="red", zorder=5,
                            label="non-finite norm")
    ax_norm.set_yscale("log")
    ax_norm.set_ylabel("gradient norm (log)")
    ax_norm.set_title(title, pad=14)
    ax_norm.legend(loc="lower left", fontsize=8)
    ax_norm.grid(True, which="major", alpha=0.3)

    ax_ratio.set_ylim(-0.05, 1.1)
    ax_ratio.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax_ratio.set_ylabel("clip ratio (after / before)")
    if ax_ratio.lines[1:]:
        ax_ratio.legend(loc="lower left", fontsize=8)
    else:
        ax_ratio.text(0.5, 0.5, "no clipping configured or seen", ha="center", va="center",
                      transform=ax_ratio.transAxes, color="grey")
    ax_ratio.grid(True, alpha=0.3)

    def mean(path):
        count, total = run.var_stats[path][0], run.var_stats[path][1]
        return total / count if count else 0.0

    top = sorted(run.var_norms, key=mean, reverse=True)[:TOP_VARIABLES]
    for path in top:
        steps, norms = run.var_norms[path]
        ax_vars.plot(list(steps), _positive(norms), label=path, lw=1.2)
    ax_vars.set_yscale("log")
    ax_vars.set_ylabel(f"top {len(top)} variables' norms (log)")
    ax_vars.set_xlabel("optimizer step")
    if top:
        ax_vars.legend(loc="upper left", fontsize=8)
    ax_vars.grid(True, alpha=0.3)

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, f in enumerate(run.findings):
        if f.get("step") is None:
            continue
        colour = colours[(i + 3) % len(colours)]
        for ax in axes:
            ax.axvline(f["step"], color=colour, lw=1.2, ls="-.", alpha=0.8)
        ax_norm.annotate(f["code"], xy=(f["step"], 1.0), xycoords=("data", "axes fraction"),
                         xytext=(2, 2 + 9 * (i % 3)), textcoords="offset points", fontsize=7, color=colour)
    if run.findings:
        listing = "\n".join(
            f"{f['code']} {f['name']}" + (f" (from step {f['step']})" if f.get("step") is not None else "")
            for f in run.findings)
        ax_norm.text(0.99, 0.97, "findings:\n" + listing, ha="right", va="top", transform=ax_norm.transAxes,
                     fontsize=8, color="darkred", bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "darkred"})
    else:
        ax_norm.text(0.99, 0.97, "no findings", ha="right", va="top", transform=ax_norm.transAxes,
                     fontsize=8, color="darkgreen")
    return fig


def _positive(values):
    return [v if math.isfinite(v) and v > 0 else math.nan for v in values]


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
            plot(run, plot_path, title=f"gradlint auditor: {path}")
        except ImportError:
            print("gradlint report: error: --plot needs matplotlib (pip install 'tf-gradlint[plot]')", file=sys.stderr)
            return 2
        print(f"wrote {plot_path}")
    return 1 if run.findings else 0
