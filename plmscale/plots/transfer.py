"""Transfer between objectives: the loss a run gains by starting from the other objective's checkpoint."""

import matplotlib.pyplot as plt
import pandas as pd

from plmscale.plots.common import OBJECTIVE_COLORS, format_axis, save_figure
from plmscale.scaling.table import transfer_partners


def transfer_pairs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per transfer run with a from-scratch partner (table.transfer_partners, as in fit.json's
    transfer analysis): n_params, loss gain (scratch − transfer), relative gain."""
    columns = ["run_id", "objective", "n_params", "gain", "relative_gain"]
    by_id = runs.set_index(runs["run_id"].astype(str))
    rows = []
    for run_id, partner_id in transfer_partners(runs).items():
        if partner_id is None:
            continue
        run, scratch_loss = by_id.loc[run_id], float(by_id.loc[partner_id, "loss"])
        rows.append({"run_id": run_id, "objective": run["objective"], "n_params": float(run["n_params"]),
                     "gain": scratch_loss - float(run["loss"]),
                     "relative_gain": (scratch_loss - float(run["loss"])) / scratch_loss})
    return pd.DataFrame(rows, columns=columns)


def plot_transfer(runs: pd.DataFrame, path, fit=None):
    """Loss gained by starting from the other objective's checkpoint, against model size."""
    pairs = transfer_pairs(runs)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = {"mlm": "CLM → MLM (MLM loss)", "clm": "MLM → CLM (CLM loss)"}
    for objective, group in pairs.groupby("objective") if len(pairs) else []:
        group = group.sort_values("n_params")
        ax.plot(group["n_params"], 100 * group["relative_gain"], "o-", color=OBJECTIVE_COLORS[objective],
                label=labels[objective])
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xscale("log")
    format_axis(ax.xaxis, "params")
    ax.set_xlabel("model size N (non-embedding parameters)")
    ax.set_ylabel("loss reduction vs from scratch (%)")
    ax.set_title("Transfer between objectives at equal fine-tuning compute")
    ax.grid(True, which="major", alpha=0.3)
    if len(pairs):
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no paired transfer runs", ha="center", va="center", transform=ax.transAxes)
    save_figure(fig, path)
    return fig
