"""The parametric law L(N, D) = E + A/N^α + B/D^β as contours over (N, D), with its efficient frontier
(parametric_<objective>); where fit.json selected another law family, that family's L(N, D) instead."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from plmscale.arithmetic import FLOPS_PER_PARAM_TOKEN
from plmscale.plots.common import (OBJECTIVE_NAMES, fit_budgets, format_axis, power_of_ten, save_figure,
                                   wrapped)
from plmscale.scaling.fitfile import ParametricLaw, parse_fit
from plmscale.scaling.parametric import allocation_laws
from plmscale.scaling.selected_law import differs_from_parametric, selected_law
from plmscale.scaling.table import main_study


def parametric_allocation(law: ParametricLaw):
    return allocation_laws(law.A, law.B, law.alpha, law.beta, FLOPS_PER_PARAM_TOKEN)


def plot_parametric(fit, objective: str, path, runs: pd.DataFrame | None = None, budgets=None):
    """Contours of the fitted L(N, D) = E + A/N^α + B/D^β, the efficient frontier and IsoFLOP lines; where
    fit.json selected another law family for the objective, the same figure of that family's law (its frontier
    found numerically), titled with its name."""
    fit = parse_fit(fit)
    selected = selected_law(fit, objective) if differs_from_parametric(fit, objective) else None
    selected = selected if selected is not None and selected.usable else None
    entry = fit.method(objective, "parametric")
    law = entry.law
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    if selected is None and not entry.usable:
        _parametric_not_shown(ax, fit, entry, objective, runs)
        save_figure(fig, path)
        return fig
    if runs is not None and len(runs):
        mine = main_study(runs[runs["objective"] == objective])
        n_lo, n_hi = mine["n_params"].min() / 3, mine["n_params"].max() * 10
        d_lo, d_hi = mine["tokens"].min() / 3, mine["tokens"].max() * 10
    else:
        mine, (n_lo, n_hi), (d_lo, d_hi) = None, (1e6, 1e11), (1e8, 1e13)
    n = np.logspace(math.log10(n_lo), math.log10(n_hi), 200)
    d = np.logspace(math.log10(d_lo), math.log10(d_hi), 200)
    N, D = np.meshgrid(n, d)
    L = selected.point_loss(N, D) if selected else law.E + law.A / N ** law.alpha + law.B / D ** law.beta
    levels = np.unique(np.round(np.quantile(L, np.linspace(0.02, 0.98, 14)), 3))
    contour = ax.contourf(N, D, L, levels=levels, cmap="viridis_r", alpha=0.85)
    ax.contour(N, D, L, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
    bar = fig.colorbar(contour, ax=ax)
    bar.set_label("predicted loss L(N, D)")
    c_frontier = FLOPS_PER_PARAM_TOKEN * N.min() * D.min(), FLOPS_PER_PARAM_TOKEN * N.max() * D.max()
    c = np.logspace(math.log10(c_frontier[0]), math.log10(c_frontier[1]), 300)
    if selected:
        frontier_n, frontier_d = selected.frontier(c)
        shown = f" (a={selected.a:.3f} at the top budget)" if selected.a is not None else ""
    else:
        (k_n, a), (k_d, b) = parametric_allocation(law)
        frontier_n, frontier_d, shown = k_n * c ** a, k_d * c ** b, f" (a={a:.3f})"
    ax.plot(frontier_n, frontier_d, color="w", lw=2.6)
    ax.plot(frontier_n, frontier_d, color="k", lw=1.0, label=f"efficient frontier{shown}")
    for budget in budgets if budgets is not None else fit_budgets(fit, objective):
        ax.plot(n, budget / (FLOPS_PER_PARAM_TOKEN * n), color="w", lw=0.8, ls="--")
        x = math.sqrt(n.min() * n.max())
        y = budget / (FLOPS_PER_PARAM_TOKEN * x)
        if d.min() < y < d.max():
            ax.annotate(power_of_ten(budget), (x, y), color="w", fontsize=7, ha="center", va="bottom")
    if mine is not None:
        ax.scatter(mine["n_params"], mine["tokens"], s=8, color="k", alpha=0.7, label="runs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(n.min(), n.max())
    ax.set_ylim(d.min(), d.max())
    format_axis(ax.xaxis, "params")
    format_axis(ax.yaxis, "tokens")
    ax.set_xlabel("model size N (non-embedding parameters)")
    ax.set_ylabel("training tokens D")
    if selected:
        ax.set_title(f"Selected law ({selected.family}), {OBJECTIVE_NAMES.get(objective, objective)}: the "
                     f"parametric law {'is not identified' if not entry.usable else 'forecast worse'}\n"
                     "(dashed: IsoFLOP lines C = 6·N·D)")
    else:
        ax.set_title(f"Parametric fit, {OBJECTIVE_NAMES.get(objective, objective)}: "
                     f"E={law.E:.3g}, α={law.alpha:.3g}, β={law.beta:.3g}\n(dashed: IsoFLOP lines C = 6·N·D)")
    ax.legend(fontsize=8, loc="lower left")
    save_figure(fig, path)
    return fig


def _parametric_not_shown(ax, fit, entry, objective, runs):
    """The runs and the reason, where an unfitted or unidentified parametric law would have been drawn."""
    mine = main_study(runs[runs["objective"] == objective]) if runs is not None and len(runs) else None
    if mine is not None and len(mine):
        ax.scatter(mine["n_params"], mine["tokens"], s=8, color="k", alpha=0.7, label="runs")
        ax.set_xscale("log")
        ax.set_yscale("log")
        format_axis(ax.xaxis, "params")
        format_axis(ax.yaxis, "tokens")
        ax.set_xlabel("model size N (non-embedding parameters)")
        ax.set_ylabel("training tokens D")
    ax.text(0.5, 0.5, wrapped(f"parametric fit {entry.why_unusable}", 55), ha="center", va="center",
            transform=ax.transAxes, fontsize=9, bbox={"facecolor": "w", "alpha": 0.85, "edgecolor": "0.6"})
    ax.set_title(f"Parametric fit, {OBJECTIVE_NAMES.get(objective, objective)}: no law drawn")
