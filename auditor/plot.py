"""The plot of a recorded run (``gradlint report --plot``): norms, clip ratio, top variables and
the findings over the optimizer step. Needs matplotlib (the ``plot`` extra)."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TOP_VARIABLES = 5


def save_plot(run, out: str, title: str) -> None:
    """Draw ``run`` (a ``report_command.RecordedRun``, see ``figure``) into the PNG file ``out``."""
    fig = figure(run, title)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def figure(run, title: str):
    """Three panels sharing the step axis: global norm (log) before/after clipping, clip ratio,
    and the norms of the variables with the largest mean norm; findings as vertical markers."""
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

    top = sorted(run.var_norms, key=lambda path: run.var_stats[path].mean(), reverse=True)[:TOP_VARIABLES]
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
        if f.step is None:
            continue
        colour = colours[(i + 3) % len(colours)]
        for ax in axes:
            ax.axvline(f.step, color=colour, lw=1.2, ls="-.", alpha=0.8)
        ax_norm.annotate(f.code, xy=(f.step, 1.0), xycoords=("data", "axes fraction"),
                         xytext=(2, 2 + 9 * (i % 3)), textcoords="offset points", fontsize=7, color=colour)
    if run.findings:
        listing = "\n".join(f"{f.code} {f.name}" + (f" (from step {f.step})" if f.step is not None else "")
                            for f in run.findings)
        ax_norm.text(0.99, 0.97, "findings:\n" + listing, ha="right", va="top", transform=ax_norm.transAxes,
                     fontsize=8, color="darkred", bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "darkred"})
    else:
        ax_norm.text(0.99, 0.97, "no findings", ha="right", va="top", transform=ax_norm.transAxes,
                     fontsize=8, color="darkgreen")
    return fig


def _positive(values):
    return [v if math.isfinite(v) and v > 0 else math.nan for v in values]
