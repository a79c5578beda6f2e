"""Loss against compute: the lower envelope of all training curves with its law (loss_frontier) and every
training curve of one objective (curves_<objective>)."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import colors, ticker

from plmscale.plots.common import (OBJECTIVE_COLORS, OBJECTIVE_NAMES, format_axis, not_shown_handle,
                                   not_shown_label, objectives_in, save_figure, si_label, wrapped)
from plmscale.scaling.fitfile import parse_fit
from plmscale.scaling.table import main_study


def _loss_vs_flops_axes(ax, xlabel: str, title: str) -> None:
    """Log-log loss against FLOPs, with readable ticks: the frame of the frontier and curve plots."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    format_axis(ax.xaxis, "flops")
    format_axis(ax.yaxis, "loss")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)

def plot_loss_frontier(fit, path, curves: pd.DataFrame | None = None):
    """The envelope L(C): lowest loss reached at each compute, with its power-law fit, per objective."""
    fit = parse_fit(fit)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    handles = []
    for objective in objectives_in(fit):
        color = OBJECTIVE_COLORS[objective]
        env = fit.method(objective, "envelope")
        points = env.points
        if curves is not None and len(curves):
            mine = main_study(curves[curves["objective"] == objective])
            ax.scatter(mine["flops"], mine["loss"], s=2, color=color, alpha=0.08, rasterized=True)
        if points:
            ax.plot([p.flops for p in points], [p.loss for p in points], "o", ms=4, color=color,
                    label=f"{objective.upper()} envelope points")
            if env.usable and env.law.has_loss_law:  # drawn over its own points only: no extrapolation
                c = np.logspace(math.log10(min(p.flops for p in points)), math.log10(max(p.flops for p in points)),
                                100)
                ax.plot(c, env.law.loss(c), color=color, lw=1.5,
                        label=f"{objective.upper()} L(C) ∝ C^{env.law.s:.4f}")
        if not env.usable:
            handles.append((not_shown_handle(color, "-"), wrapped(not_shown_label(objective, "envelope", env), 60)))
    _loss_vs_flops_axes(ax, "training compute C (FLOPs)", "Loss frontier: lower envelope of all training curves")
    shown, labels = ax.get_legend_handles_labels()
    ax.legend(shown + [h for h, _ in handles], labels + [label for _, label in handles], fontsize=7)
    save_figure(fig, path)
    return fig


def plot_training_curves(curves: pd.DataFrame, objective: str, path):
    """Every from-scratch training curve of one objective, loss vs FLOPs, coloured by model size."""
    mine = main_study(curves[curves["objective"] == objective])
    fig, ax = plt.subplots(figsize=(7.5, 5))
    if len(mine):
        sizes = mine["n_params"].astype(float)
        norm = colors.LogNorm(vmin=sizes.min(), vmax=max(sizes.max(), sizes.min() * 1.01))
        cmap = plt.get_cmap("plasma")
        for _run_id, run in mine.groupby("run_id", sort=False):
            run = run.sort_values("flops")
            run = run[run["flops"] > 0]
            ax.plot(run["flops"], run["loss"], color=cmap(0.9 * norm(run["n_params"].iloc[0])), lw=0.8, alpha=0.8)
        mappable = plt.cm.ScalarMappable(norm=norm, cmap=colors.ListedColormap(cmap(np.linspace(0, 0.9, 256))))
        bar = fig.colorbar(mappable, ax=ax)
        bar.set_label("model size N (non-embedding parameters)")
        bar.ax.yaxis.set_major_formatter(ticker.FuncFormatter(si_label))
        bar.ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        low, high = np.percentile(mine["loss"], [0.5, 99.5])
        ax.set_ylim(low * 0.98, high * 1.02)
    _loss_vs_flops_axes(ax, "training compute so far (FLOPs)",
                        f"Training curves, {OBJECTIVE_NAMES.get(objective, objective)} ({mine['run_id'].nunique()} runs)")
    save_figure(fig, path)
    return fig
