"""The plot of a recorded run (``gradlint report --plot``): norms, clip ratio, top variables and
the findings over the optimizer step. Needs matplotlib (the ``plot`` extra)."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

TOP_VARIABLES = 5


def save_plot(run, out: str, title: str) -> None:
    """Draw ``run`` (a ``report_command.RecordedRun``, see ``figure``) into the PNG file ``out``."""
    fig = figure(run, title)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def figure(run, title: str):
    """Four panels sharing the step axis: global norm (log) before/after clipping, clip ratio,
    the norms of the variables with the largest mean norm, and their update ratios
    ||w_after - w_before|| / ||w_before|| on checked steps; findings as vertical markers."""
    fig, axes = plt.subplots(4, 1, figsize=(10, 11.5), sharex=True, constrained_layout=True)
    ax_norm, ax_ratio, ax_vars, ax_update = axes
    for label, s in run.steps.items():
        steps = list(s["step"])
        ax_norm.plot(steps, _positive(s["global"]), label=f"{label}: global norm (before clipping)", lw=1.5)
        if any(math.isfinite(c) for c in s["clipped"]) and any(math.isfinite(r) for r in s["ratio"]):
            ax_norm.plot(steps, _positive(s["clipped"]), label=f"{label}: after clipping", lw=1.2, ls="--")
        ratios = list(s["ratio"])
        if any(math.isfinite(r) for r in ratios):
            ax_ratio.plot(steps, ratios, label=f"{label}", lw=1.5)
        nonfinite = [st for st, g in zip(steps, s["global"]) if not math.isfinite(g)]
        if nonfinite:  # at the top edge of the panel (axes coordinates): no norm value is implied
            ax_norm.scatter(nonfinite, [0.97] * len(nonfinite), marker="x", color="red", zorder=5, clip_on=False,
                            transform=ax_norm.get_xaxis_transform(), label=f"{label}: NaN/Inf norm (top edge)")
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

    top = top_variables(run)
    for path in top:
        steps, norms = run.var_norms[path]
        ax_vars.plot(list(steps), _positive(norms), label=path, lw=1.2)
    ax_vars.set_yscale("log")
    ax_vars.set_ylabel(f"top {len(top)} variables' norms (log)")
    if top:
        ax_vars.legend(loc="upper left", fontsize=8)
    ax_vars.grid(True, alpha=0.3)

    drawn = [path for path in top if path in run.var_ratios]
    for path in drawn:
        steps, ratios = run.var_ratios[path]
        ax_update.plot(list(steps), _positive(ratios), label=path, lw=1.2, marker=".", ms=3)
    if drawn:
        ax_update.set_yscale("log")
        ax_update.axhline(1e-3, color="grey", lw=0.8, ls=":")  # the usual healthy scale
    else:
        ax_update.text(0.5, 0.5, "no update ratio (changes not checked)", ha="center", va="center",
                       transform=ax_update.transAxes, color="grey")
    ax_update.set_ylabel("update ratio |dw|/|w| (log)")
    ax_update.set_xlabel("optimizer step")
    ax_update.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_update.grid(True, alpha=0.3)

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, f in enumerate(run.findings):
        if f.step is None:
            continue
        colour = colours[(i + 3) % len(colours)]
        for ax in axes:
            ax.axvline(f.step, color=colour, lw=1.2, ls="-.", alpha=0.8)
        ax_norm.annotate(f.code, xy=(f.step, 1.0), xycoords=("data", "axes fraction"),
                         xytext=(2, 2 + 9 * (i % 3)), textcoords="offset points", fontsize=7, color=colour)
    # The findings are listed under the panels (never over a curve).
    if run.findings:
        listing = "findings: " + "; ".join(
            f"{f.code} {f.name}" + (f" (from step {f.step})" if f.step is not None else " (whole run)")
            for f in run.findings)
        fig.supxlabel(listing, fontsize=8, color="darkred", wrap=True)
    else:
        fig.supxlabel("no findings", fontsize=8, color="darkgreen")
    return fig


def top_variables(run) -> list[str]:
    """The variables with the largest mean norm, ``TOP_VARIABLES`` in all, shared out among the
    optimizers (each optimizer's largest first), so a second model's variables are drawn too."""
    by_optimizer: dict[str, list[str]] = {}
    for path in run.var_norms:
        by_optimizer.setdefault(run.var_optimizer.get(path, ""), []).append(path)
    ranked = [sorted(paths, key=lambda p: _mean(run, p), reverse=True) for paths in by_optimizer.values()]
    top = []
    for rank in range(max((len(r) for r in ranked), default=0)):
        top += [r[rank] for r in ranked if rank < len(r)]
    return top[:TOP_VARIABLES]


def _mean(run, path) -> float:
    mean = run.var_stats[path].mean()
    return mean if math.isfinite(mean) else -math.inf


def _positive(values):
    return [v if math.isfinite(v) and v > 0 else math.nan for v in values]
