"""Two fits of one study side by side (plmscale.scaling.cross_check): both grids' IsoFLOP profiles on one
figure (cross_check.png)."""

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from plmscale.scaling.cross_check import write_all


def plot_cross_check(result: dict, path):
    """IsoFLOP profiles (final loss vs N per budget) of both grids; the second dashed, vertices marked
    (filled where the budget's optimum is bracketed, open where it is not). result: cross_check.compare's;
    returns the Figure."""
    label_a, label_b = result["labels"]
    objectives = [o for o, e in result["objectives"].items() if e["points"]]
    fig, axes = plt.subplots(1, max(1, len(objectives)), figsize=(6 * max(1, len(objectives)), 4.2), squeeze=False)
    for ax, objective in zip(axes[0], objectives):
        points = pd.DataFrame(result["objectives"][objective]["points"])
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (budget, group) in enumerate(points.groupby("budget")):
            group = group.sort_values("n_params")
            color = colors[i % len(colors)]
            ax.plot(group["n_params"], group[label_a], "o-", color=color, label=f"{budget:.2g} {label_a}")
            ax.plot(group["n_params"], group[label_b], "s--", color=color, mfc="none", label=f"{budget:.2g} {label_b}")
            for label, marker in ((label_a, "v"), (label_b, "^")):
                row = next((r for r in result["objectives"][objective]["budgets"] if r["budget"] == budget), None)
                opt = (row or {}).get(label) or {}
                if opt.get("n_opt") and opt.get("loss_opt"):
                    # Open: the parabola's minimum is not inside the grid, so it is no optimum to compare.
                    ax.plot([opt["n_opt"]], [opt["loss_opt"]], marker, color=color, ms=9,
                            mfc=color if opt.get("bracketed") else "none", gid=f"vertex {label} {budget:g}")
        ax.set_xscale("log")
        ax.set_xlabel("non-embedding parameters N")
        ax.set_ylabel("final validation loss (nats/token)")
        ax.set_title(f"{objective.upper()} IsoFLOP profiles: {label_a} (solid) vs {label_b} (dashed)")
        ax.plot([], [], "v", color="gray", mfc="none", label="open vertex: not bracketed")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def write_cross_check(fits: dict, out) -> dict:
    """cross_check.{json,md,png} in `out` for fits (label -> (fit.json dict, runs)): the tables, then the figure
    drawn from them; returns the comparison. What `plmscale cross-check` and the workflow's rule write."""
    result = write_all(fits, out)
    plot_cross_check(result, Path(out) / "cross_check.png")
    return result
