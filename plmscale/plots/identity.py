"""Out-of-distribution loss: final loss vs N on the valid sequences of each identity-to-train bin
(loss_by_identity)."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import colors

from plmscale.plots.common import OBJECTIVE_NAMES, format_axis, power_of_ten, save_figure, wrapped
from plmscale.scaling.table import IDENTITY_LOSS_PREFIX, IDENTITY_SEQUENCES_PREFIX, identity_bins, main_study


TITLE = "Final validation loss by identity to the training set"


def _why_no_bins(bins: list, study: pd.DataFrame) -> str:
    """Why a runs table gives no per-bin loss to draw, and what gives one."""
    if not bins:
        return (f"runs.csv has no {IDENTITY_LOSS_PREFIX}<bin> column: the runs were trained without the identity "
                "table (data.identity.enabled: false) or imported. Set data.identity.enabled: true and rerun the "
                "workflow to evaluate every run on each bin (docs/ood.md).")
    if not len(study):
        return "runs.csv has no run of the main study (only the side runs of transfer experiments)."
    return (f"the {IDENTITY_LOSS_PREFIX}<bin> columns ({', '.join(bins)}) are empty for every run of the main "
            "study: the bins hold no evaluated valid sequences, or the runs predate the identity table "
            "(results/data/identity/summary.json counts each bin's sequences).")


def plot_loss_by_identity(runs: pd.DataFrame, path):
    """Final loss vs N on the valid sequences of each identity-to-train bin: one panel per bin (columns)
    and objective (rows), a line per IsoFLOP budget, other runs of the main study as grey markers."""
    bins = identity_bins(runs)
    study = (main_study(runs) if len(runs) else runs).reset_index(drop=True)
    objectives = [o for o in ("clm", "mlm") if bins and len(study) and
                  study.loc[study["objective"] == o, [f"{IDENTITY_LOSS_PREFIX}{b}" for b in bins]].notna().any().any()]
    if not objectives:
        # The plot rule declares this figure whatever the config: it states why it has nothing to show.
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.text(0.5, 0.5, wrapped(f"no identity bins: {_why_no_bins(bins, study)}", 60),
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        ax.set_title(TITLE, fontsize=11)
        save_figure(fig, path)
        return fig
    fig, axes = plt.subplots(len(objectives), len(bins), figsize=(3.2 * len(bins) + 0.6, 3.3 * len(objectives)),
                             sharex=True, sharey="row", squeeze=False)
    budgets = study["budget"].astype(float) if "budget" in study.columns else pd.Series(np.nan, index=study.index)
    finite = sorted(budgets.dropna().unique())
    norm = colors.LogNorm(vmin=min(finite), vmax=max(finite)) if finite else None
    cmap = plt.get_cmap("viridis")
    for row, objective in enumerate(objectives):
        mine = study[study["objective"] == objective]
        for col, label in enumerate(bins):
            ax = axes[row][col]
            column = f"{IDENTITY_LOSS_PREFIX}{label}"
            for budget in finite:
                group = mine[(budgets[mine.index] == budget).to_numpy() & mine[column].notna().to_numpy()]
                group = group.sort_values("n_params")
                if len(group):
                    ax.plot(group["n_params"], group[column], "o-", ms=4, lw=1.2, color=cmap(0.92 * norm(budget)),
                            label=f"{power_of_ten(budget)} FLOPs")
            others = mine[budgets[mine.index].isna().to_numpy() & mine[column].notna().to_numpy()]
            if len(others):
                ax.scatter(others["n_params"], others[column], marker="D", s=20, color="0.4", zorder=3,
                           label="other runs")
            n_seqs = _bin_sequences(runs, label)
            what = "no hit in training" if label == "no_hit" else f"identity {label}"
            ax.set_title(f"{OBJECTIVE_NAMES.get(objective, objective)}\n{what}"
                         + (f" · {n_seqs:,} valid seqs" if n_seqs is not None else ""), fontsize=9)
            ax.set_xscale("log")
            format_axis(ax.xaxis, "params")
            ax.grid(True, which="major", alpha=0.3)
            if col == 0:
                ax.set_ylabel("final loss on the bin (nats/token)")
            if row == len(objectives) - 1:
                ax.set_xlabel("model size N")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes.flat:  # the legend of the panel that holds the most runs
        more = ax.get_legend_handles_labels()
        if len(more[0]) > len(handles):
            handles, labels = more
    if handles:
        fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(len(handles), 6),
                   bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(TITLE, fontsize=11)
    fig.tight_layout(rect=(0, 0.05 if handles else 0, 1, 1))
    save_figure(fig, path)
    return fig


def _bin_sequences(runs: pd.DataFrame, label: str):
    """Valid sequences in an identity bin (the same for every run of a study), or None if not recorded."""
    column = f"{IDENTITY_SEQUENCES_PREFIX}{label}"
    if column not in runs.columns:
        return None
    values = pd.to_numeric(runs[column], errors="coerce").dropna()
    return int(values.max()) if len(values) else None
