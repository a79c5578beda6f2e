"""The repetition study (plmscale.scaling.repetition): loss curves of a repeated source against the
mixture, with R* from the study's summary (repetition.png)."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import ticker

from plmscale.plots.common import OBJECTIVE_NAMES, format_axis, save_figure, si_label


def r_star_verdict(entry: dict) -> str:
    """R* as one objective's entry of the summary states it: the estimate with its interval, or the one bound
    the summary carries (r_star_bound, the bound its reason quotes: never recomputed here)."""
    status = entry.get("status") or "not_fitted"
    if entry.get("r_star") is None:
        return f"R* {status.replace('_', ' ')}"
    if status == "identified":
        low, high = entry["interval"]
        return f"R* = {entry['r_star']:.3g} [{low:.3g}, {high:.3g}]"
    bound = entry.get("r_star_bound")
    if not bound:
        return f"R* {status.replace('_', ' ')} (no r_star_bound in the summary: rerun the repetition rule)"
    if bound["side"] == "below":
        return f"R* > {bound['value']:.3g} (bounded below only)"
    return f"R* < {bound['value']:.3g}"


def plot_repetition(runs: pd.DataFrame, curves: pd.DataFrame, summary: dict, path):
    """The repetition study (plmscale.scaling.repetition): validation loss against tokens of the repeated
    restricted source (dashed, epochs marked where D = k·U) and of the mixture (solid), one panel per
    objective, with R* and its status in the panel's title."""
    objectives = sorted(runs["objective"].unique()) if len(runs) else ["clm"]
    fig, axes = plt.subplots(1, len(objectives), figsize=(6.5 * len(objectives), 4.8), squeeze=False)
    sizes = sorted(runs["n_params"].unique()) if len(runs) else []
    palette = plt.get_cmap("viridis")
    color_of = {n: palette(0.85 * i / max(len(sizes) - 1, 1)) for i, n in enumerate(sizes)}
    for ax, objective in zip(axes[0], objectives):
        mine = runs[runs["objective"] == objective].sort_values(["kind", "unique_tokens", "tokens"])
        for run in mine.itertuples():
            curve = curves[curves["run_id"] == run.run_id].sort_values("tokens")
            curve = curve[curve["tokens"] > 0]
            repeated = run.kind == "rep"
            label = (f"{run.model}: {run.source}, U={si_label(float(f'{run.unique_tokens:.2g}'))} tokens" if repeated
                     else f"{run.model}: mixture")
            color = color_of[run.n_params]
            style = {"ls": "--" if repeated else "-", "lw": 1.2, "alpha": 0.9}
            if len(curve):
                ax.plot(curve["tokens"], curve["loss"], color=color, label=label, **style)
            ax.plot([run.tokens], [run.loss], marker="o" if repeated else "s", color=color, ms=5,
                    label=None if len(curve) else label, ls="none")
            if repeated and len(curve) > 1:
                epochs = 2.0 ** np.arange(0, 12)
                marks = epochs * run.unique_tokens
                marks = marks[(marks >= curve["tokens"].min()) & (marks <= curve["tokens"].max())]
                losses = np.interp(np.log(marks), np.log(curve["tokens"]), curve["loss"])
                ax.plot(marks, losses, "v", color=color, ms=5)
                for mark, loss in zip(marks, losses):
                    ax.annotate(f"{mark / run.unique_tokens:g} ep", (mark, loss), textcoords="offset points",
                                xytext=(0, 6), ha="center", fontsize=7, color=color)
        ax.set_xscale("log")
        format_axis(ax.xaxis, "tokens")
        # Budgets often span less than a decade: label the 2x, 3x and 5x minor ticks too.
        ax.xaxis.set_minor_formatter(ticker.FuncFormatter(
            lambda value, pos: si_label(value) if f"{value:.0e}"[0] in "235" else ""))
        ax.set_xlabel("tokens processed D")
        ax.set_ylabel("validation loss (nats/token, the mixture's valid split)")
        verdict = r_star_verdict(summary.get("objectives", {}).get(objective, {}))
        ax.set_title(f"{OBJECTIVE_NAMES.get(objective, objective)}: repeated vs mixture\n{verdict}", fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
        if len(mine):
            ax.legend(fontsize=7)
    save_figure(fig, path)
    return fig
