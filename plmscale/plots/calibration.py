"""The learning-rate calibration (plmscale.grid.calibration): the sweep and the refitted lr law (lr.png)."""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker

from plmscale.data.atomic import atomic_path


def plot_calibration(result: dict, path):
    """The lr sweep per size (best lr marked) and the lr law through the best lrs, refitted and the recipe's
    (result: lr.json as plmscale.grid.calibration.write_calibration returns it); returns the Figure."""
    recipe_lr_ref = result.get("recipe_lr_ref")
    fig, (sweep, law) = plt.subplots(1, 2, figsize=(10, 4))
    for row in result["anchors"]:
        order = np.argsort(row["lrs"])
        line, = sweep.plot(np.asarray(row["lrs"])[order], np.asarray(row["losses"])[order], "o-",
                           label=f"{row['model']} (N={row['n_params']:,})")
        sweep.axvline(row["best_lr"], color=line.get_color(), ls="--" if row["bracketed"] else ":")
    sweep.set(xscale="log", xlabel="peak lr", ylabel="final validation loss", title="lr sweep (dashed: best lr; dotted: at the edge)")
    sweep.legend(fontsize=8)
    sizes = np.array([r["n_params"] for r in result["anchors"]], dtype=float)
    for bracketed, marker, label in ((True, "ko", "best lr per size"), (False, "wo", "at the sweep's edge")):
        rows = [r for r in result["anchors"] if r["bracketed"] == bracketed]
        if rows:
            law.plot([r["n_params"] for r in rows], [r["best_lr"] for r in rows], marker, mec="k", label=label)
    grid = np.geomspace(sizes.min() / 2, sizes.max() * 2, 50)
    for lr_ref, label, style in ((result["lr_ref"], "refitted", "-"), (recipe_lr_ref, "recipe's", ":")):
        if lr_ref:
            law.plot(grid, lr_ref * (grid / result["n_ref"]) ** result["lr_exponent"], style,
                     label=f"{label}: lr_ref {lr_ref:.3g}")
    law.set(xscale="log", yscale="log", xlabel="non-embedding parameters N", ylabel="peak lr",
            title=f"lr = lr_ref·(N/{result['n_ref']:g})^{result['lr_exponent']:.3g}")
    law.legend(fontsize=8)
    for axis in (sweep.xaxis, law.xaxis, law.yaxis):
        axis.set_minor_formatter(ticker.NullFormatter())  # decade labels only: minor ones overlap
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return fig
