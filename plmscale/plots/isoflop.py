"""The IsoFLOP profiles: loss vs N per budget with the fitted parabolas and their optima (isoflop_<objective>)."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import colors

from plmscale.plots.allocation import counted_optima
from plmscale.plots.common import OBJECTIVE_NAMES, format_axis, power_of_ten, save_figure, wrapped
from plmscale.scaling.fitfile import parse_fit


def _scatter_ids(runs: pd.DataFrame, ids):
    return runs[runs["run_id"].astype(str).isin([str(i) for i in ids])]


# --------------------------------------------------------------------------------------------- the plots

def plot_isoflop(fit, runs: pd.DataFrame, objective: str, path):
    """Loss vs N for each budget, the fitted parabolas and their optima (dropped budgets drawn hollow; a kept
    budget the law does not count, e.g. its curvature within the runs' scatter, gets a hollow star)."""
    fit = parse_fit(fit)
    iso = fit.method(objective, "isoflop")
    uncounted = {optimum.budget for optimum, _ in counted_optima(fit, objective)[1]}
    fig, ax = plt.subplots(figsize=(7.5, 5))
    budgets = [o.budget for o in iso.optima]
    norm = colors.LogNorm(vmin=min(budgets), vmax=max(budgets)) if budgets else None
    cmap = plt.get_cmap("viridis")
    # An unidentified fit keeps its per-budget parabolas as a diagnostic (faded, dashed) but marks no optimum.
    judged_out = iso.identified is False
    for entry in iso.optima:
        color = cmap(0.92 * norm(entry.budget)) if norm else "k"
        points = _scatter_ids(runs, entry.run_ids).sort_values("n_params")
        ax.scatter(points["n_params"], points["loss"], s=22, color=color if entry.kept else "none",
                   edgecolor=color, zorder=3)
        if None not in (entry.curvature, entry.n_opt, entry.loss_opt) and len(points):
            x = np.linspace(np.log(points["n_params"].min()) - 0.15, np.log(points["n_params"].max()) + 0.15, 100)
            y = entry.loss_opt + entry.curvature * (x - np.log(entry.n_opt)) ** 2
            solid = entry.kept and not judged_out
            counted = entry.budget not in uncounted
            note = "" if not entry.kept else "" if counted else " (not counted)"
            ax.plot(np.exp(x), y, color=color, lw=1.4 if solid else 1.0, ls="-" if solid else "--",
                    alpha=1.0 if solid else 0.6,
                    label=f"{power_of_ten(entry.budget)} FLOPs" + (note if entry.kept else " (dropped)"))
            if solid:
                ax.scatter([entry.n_opt], [entry.loss_opt], marker="*", s=160, color=color if counted else "white",
                           edgecolor="k" if counted else color, linewidth=0.6 if counted else 1.4, zorder=4)
    ax.set_xscale("log")
    format_axis(ax.xaxis, "params")
    ax.set_xlabel("model size N (non-embedding parameters)")
    ax.set_ylabel("final validation loss (nats/token)")
    title = f"IsoFLOP profiles, {OBJECTIVE_NAMES.get(objective, objective)}"
    if iso.usable:
        title += f"\nN_opt ∝ C^{iso.law.a:.3f}" + (f"  [{iso.law.a_ci[0]:.3f}, {iso.law.a_ci[1]:.3f}]"
                                                    if iso.law.a_ci else "")
    else:
        title += "\n" + wrapped(f"no law: {iso.why_unusable}", 80)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    if iso.optima:
        ax.legend(fontsize=8, loc="upper right", title_fontsize=8,
                  title="fit not identified: no optimum marked" if judged_out else "★ = fitted optimum")
    save_figure(fig, path)
    return fig
