"""Transfer between objectives: the loss a run gains by starting from the other objective's checkpoint."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from plmscale.plots.common import OBJECTIVE_COLORS, format_axis, save_figure, si_label, wrapped
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


def plot_transfer_sweep(summary: dict, path):
    """The transfer sweep (plmscale.scaling.transfer.transfer_sweep_summary): left, final MLM loss against the
    share of the budget spent on CLM first, one colour per size, with each size's parabola and its best share
    (a band: the 95% interval); right, effectively transferred tokens against CLM pre-training tokens (open
    triangles: lower bounds, the transfer run beyond the from-scratch curve), with the fitted law per size where it
    is identified (else the reason)."""
    runs = pd.DataFrame(summary["runs"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    sizes = sorted(runs["n_params"].unique()) if len(runs) else []
    palette = plt.get_cmap("viridis")
    color_of = {n: palette(0.85 * i / max(len(sizes) - 1, 1)) for i, n in enumerate(sizes)}
    models = runs.drop_duplicates("n_params").set_index("n_params")["model"] if len(runs) else {}
    by_model = summary["best_share"]["by_model"]
    top_share = max(summary["shares"]) if summary["shares"] else 1.0
    grid = np.linspace(0, top_share, 100)
    for n in sizes:
        model, color = models[n], color_of[n]
        mine = runs[runs["n_params"] == n].sort_values("share")
        left.plot(mine["share"], mine["loss"], "o", color=color, label=f"{model} (N={si_label(float(f'{n:.2g}'))})")
        entry = by_model.get(model)
        if entry and len(entry["values"]) >= 3:  # a parabola needs three shares
            c0, c1, c2 = entry["parabola"]
            left.plot(grid, c0 + c1 * grid + c2 * grid ** 2, "-", color=color, lw=1, alpha=0.8)
            if entry["interval"] and entry["identified"]:  # an unidentified best share draws no interval
                left.axvspan(*entry["interval"], color=color, alpha=0.12)
            left.axvline(entry["best_share"], color=color, ls="--" if entry["identified"] else ":", lw=1)
    left.set_xlabel("share of the budget spent on CLM pre-training")
    left.set_ylabel("final MLM validation loss (nats/token)")
    pooled = summary["best_share"].get("pooled")
    title = f"Loss at {summary['total_flops']:.3g} FLOPs per size"
    if pooled and pooled["interval"]:
        title += (f"; pooled best share {pooled['best_share']:.2f} [{pooled['interval'][0]:.2f}, "
                  f"{pooled['interval'][1]:.2f}]" + ("" if pooled["identified"] else ", not identified"))
    left.set_title(title, fontsize=10)
    left.grid(True, alpha=0.3)
    if sizes:
        left.legend(fontsize=8)
    law = summary["transfer_law"]
    measured = runs[runs["share"] > 0] if len(runs) else runs
    drawn = False
    for n in sizes:
        mine = measured[measured["n_params"] == n]
        value = mine[pd.to_numeric(mine.get("transferred_tokens"), errors="coerce") > 0]
        bound = mine[pd.to_numeric(mine.get("transferred_lower_bound"), errors="coerce") > 0]
        right.plot(value["pretrain_tokens"], value["transferred_tokens"], "o", color=color_of[n],
                   label=f"{models[n]}")
        right.plot(bound["pretrain_tokens"], bound["transferred_lower_bound"], "^", mfc="none", color=color_of[n],
                   label=f"{models[n]}: lower bound (beyond the scratch curve)" if len(bound) else None)
        if law.get("identified") and len(mine):  # an unidentified law draws nothing
            d_pre = np.geomspace(mine["pretrain_tokens"].min(), mine["pretrain_tokens"].max(), 50)
            size_term = n ** law["beta"] if law["beta"] is not None else 1.0
            right.plot(d_pre, law["k"] * d_pre ** law["alpha"] * size_term, "-", color=color_of[n], lw=1)
        drawn = drawn or len(value) or len(bound)
    right.set_xscale("log")
    right.set_yscale("log")
    format_axis(right.xaxis, "tokens")
    format_axis(right.yaxis, "tokens")
    right.set_xlabel("CLM pre-training tokens D_pre")
    right.set_ylabel("effectively transferred tokens D_T")
    if not law.get("identified"):
        right.set_title("D_T law not fitted" if "error" in law else "D_T law not identified", fontsize=10)
        why = law.get("error") or "; ".join(law.get("caveats", []))
        right.text(0.5, 0.05, wrapped(why, 70), ha="center", va="bottom", fontsize=7, transform=right.transAxes)
    else:
        beta = "" if law["beta"] is None else f" N^{law['beta']:.2f}"
        right.set_title(f"D_T = {law['k']:.3g} D_pre^{law['alpha']:.2f}{beta}", fontsize=10)
    right.grid(True, which="major", alpha=0.3)
    if drawn:
        right.legend(fontsize=7)
    save_figure(fig, path)
    return fig
