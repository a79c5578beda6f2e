"""Adaptive IsoFLOP rounds (plmscale.design): the study's runs on the IsoFLOP axes, coloured by the round that
added them, one panel per fitted objective, with a's interval after each round in the title (design.png)."""

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from plmscale.design.round_files import round_of
from plmscale.plots.common import OBJECTIVE_NAMES, format_axis, save_figure

ROUND_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _round_label(index):
    return "grid" if index == 0 else f"round {index}"


def _interval(summary):
    ci = summary.get("a_ci")
    verdict = "identified" if summary.get("identified") else "not identified"
    return f"a [{ci[0]:.2f}, {ci[1]:.2f}] {verdict}" if ci else f"no interval for a, {verdict}"


def _label_lifts(ends, losses, near_loss=0.05, near_decades=0.3, step=9):
    """Points to move each budget's label by, so that labels whose line ends meet (within near_loss of the
    losses' range and near_decades of N) stack instead of printing over each other: a label whose line ends
    lower moves down, one that ends higher moves up, a step per label it meets."""
    span = max(float(np.ptp(losses)), 1e-12)
    lifts, placed = [], []
    for _, n, loss in ends:
        lift = sum(step * (1 if loss >= other_loss else -1) for other_n, other_loss in placed
                   if abs(loss - other_loss) < near_loss * span and abs(np.log10(n / other_n)) < near_decades)
        lifts.append(lift)
        placed.append((n, loss))
    return lifts


def plot_design(design: dict, runs: pd.DataFrame, path):
    """Loss against N of every IsoFLOP run, one line per budget, markers and colours by round (the grid is
    round 0); returns the Figure."""
    objectives = sorted(design.get("final_fit") or {})
    fig, axes = plt.subplots(1, max(1, len(objectives)), figsize=(6.4 * max(1, len(objectives)), 4.6),
                             squeeze=False)
    budgets_all = pd.to_numeric(runs.get("budget"), errors="coerce") if "budget" in runs else None
    n_rounds = len(design.get("rounds") or [])
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(2, n_rounds + 1)))
    for ax, objective in zip(axes[0], objectives or [None]):
        if objective is None or budgets_all is None:
            ax.text(0.5, 0.5, "no IsoFLOP runs", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        table = runs[(runs["objective"] == objective) & budgets_all.notna()].copy()
        table["budget"] = budgets_all[table.index]
        table["round"] = [round_of(run_id) or 0 for run_id in table["run_id"]]
        ends = []
        for budget, group in table.groupby("budget", sort=True):
            means = group.groupby("n_params")["loss"].mean().sort_index()
            ax.plot(means.index, means.to_numpy(), color="0.75", lw=1, zorder=1)
            ends.append((budget, float(means.index[-1]), float(means.to_numpy()[-1])))
        for (budget, n, loss), lift in zip(ends, _label_lifts(ends, table["loss"])):
            ax.annotate(f"{budget:.3g}", (n, loss), fontsize=7, color="0.4", xytext=(3, lift),
                        textcoords="offset points")
        ax.margins(x=0.12)  # room for the labels at the lines' right ends
        for index in sorted(table["round"].unique()):
            shown = table[table["round"] == index]
            ax.scatter(shown["n_params"], shown["loss"], s=30, zorder=2, color=colours[index],
                       marker=ROUND_MARKERS[index % len(ROUND_MARKERS)],
                       label=f"{_round_label(index)} ({len(shown)} runs)")
        ax.set_xscale("log")
        format_axis(ax.xaxis, "params")
        ax.set_xlabel("non-embedding parameters N")
        ax.set_ylabel("final validation loss")
        steps = [f"grid: {_interval(design['rounds'][0]['fit_before'][objective])}"] if n_rounds else []
        steps.append(f"final: {_interval(design['final_fit'][objective])}")
        # The rounds are the study's; an objective's own panel says how many of them added its runs.
        added_in = int((table["round"].unique() > 0).sum())
        ax.set_title(f"{OBJECTIVE_NAMES.get(objective, objective)}: runs added in {added_in} of {n_rounds} "
                     f"round(s)\n" + "\n".join(steps), fontsize=9)
        # Not "upper right": the top budget's label sits at its line's right end.
        ax.legend(fontsize=7, loc="best")
    # The whole stop reason (it names each objective's width), wrapped to the figure's width.
    stop = textwrap.fill(f"stopped: {design.get('stop') or ''}", width=95 * len(axes[0]))
    fig.suptitle(f"adaptive rounds: {design.get('n_runs_added', 0)} runs added, "
                 f"{(design.get('added_flops') or 0):.3g} FLOPs over the grid's {(design.get('grid_flops') or 0):.3g}"
                 f"\n{stop}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, formats=("png",))
    return fig
