"""The study so far (`plmscale status`): loss against N per IsoFLOP budget for the runs that are done,
the budget's planned sizes still to come marked along the bottom."""

import math

import matplotlib.pyplot as plt
from matplotlib import colors, ticker

from plmscale.plots.common import OBJECTIVE_NAMES, format_axis, power_of_ten, save_figure, si_label


def plot_study_progress(statuses, path):
    """One panel per objective with IsoFLOP runs; returns the Figure. statuses: plmscale.grid.status.RunStatus."""
    grid = [s for s in statuses if s.budget is not None]
    objectives = sorted({s.objective for s in grid})
    fig, axes = plt.subplots(1, max(len(objectives), 1), figsize=(6.5 * max(len(objectives), 1), 4.5), squeeze=False)
    budgets = sorted({s.budget for s in grid})
    norm = colors.LogNorm(vmin=min(budgets), vmax=max(budgets) * 1.0001) if budgets else None
    cmap = plt.get_cmap("viridis")
    for ax, objective in zip(axes[0], objectives):
        for budget in budgets:
            runs = sorted((s for s in grid if s.objective == objective and s.budget == budget), key=lambda s: s.n_params)
            if not runs:
                continue
            color = cmap(0.92 * norm(budget))
            done = [s for s in runs if s.state == "done" and s.loss is not None]
            label = f"{power_of_ten(budget)} FLOPs ({len(done)}/{len(runs)} done)"
            ax.plot([s.n_params for s in done], [s.loss for s in done], "o-", color=color, ms=5, label=label)
            todo = [s.n_params for s in runs if s.state != "done"]
            if todo:  # not trained yet: a tick at the bottom of the axis, where the point will come
                ax.plot(todo, [0.02] * len(todo), "^", color=color, mfc="none", ms=7,
                        transform=ax.get_xaxis_transform(), clip_on=False)
        ax.set_xscale("log")
        format_axis(ax.xaxis, "params")
        low, high = ax.get_xlim()
        if math.log10(high / low) < 2:  # a grid within two decades: label 2x, 3x and 5x ticks too
            ax.xaxis.set_minor_locator(ticker.LogLocator(base=10, subs=(2, 3, 5), numticks=12))
            ax.xaxis.set_minor_formatter(ticker.FuncFormatter(si_label))
        ax.set_xlabel("non-embedding parameters N")
        ax.set_ylabel("final validation loss (nats)")
        ax.set_title(f"{OBJECTIVE_NAMES.get(objective, objective)}: IsoFLOP runs so far (open triangles: to come)",
                     fontsize=10)
        ax.legend(fontsize=8)
    save_figure(fig, path, formats=("png",))
    return fig
