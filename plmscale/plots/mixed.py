"""Mixed CLM+MLM runs against each objective alone at equal compute (plmscale.scaling.mixed): mixed.png."""

import matplotlib.pyplot as plt

from plmscale.plots.common import OBJECTIVE_COLORS, OBJECTIVE_NAMES, save_figure, si_label

MIXED_COLOR = "#7b3fa0"


def plot_mixed(result: dict, path):
    """One panel per objective evaluated (CLM, MLM validation loss): at each size and token target, every
    seed of the single-objective runs (circles) and of the mixed runs (triangles), their means (bars), and
    mixed minus single with its verdict above them. Returns the Figure."""
    comparisons = result["comparisons"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), squeeze=False)
    labels = [f"{c['model']} ({si_label(round(c['n_params'], -2))} params)\n"
              + (f"{c['budget']:.3g} FLOPs" if c["budget"] else f"{si_label(c['target_tokens'])} tokens")
              for c in comparisons]
    for ax, objective in zip(axes[0], ("clm", "mlm")):
        for x, c in enumerate(comparisons):
            entry = c["objectives"][objective]
            if not entry["compared"]:
                ax.annotate("no single-objective run", (x, 0.5), xycoords=("data", "axes fraction"), ha="center",
                            fontsize=8, color="gray")
                continue
            for offset, side, color, marker, name in ((-0.12, entry["single"], OBJECTIVE_COLORS[objective], "o",
                                                        f"{objective.upper()} only"),
                                                       (0.12, entry["mixed"], MIXED_COLOR, "^", "mixed")):
                ax.plot([x + offset] * len(side["losses"]), side["losses"], marker, color=color, ms=6, alpha=0.8,
                        ls="none", label=name if x == 0 else None)
                ax.plot([x + offset - 0.07, x + offset + 0.07], [side["mean"]] * 2, color=color, lw=2)
            top = max(entry["single"]["losses"] + entry["mixed"]["losses"])
            ax.annotate(f"{entry['difference']:+.3f}\n{entry['verdict']}", (x, top), textcoords="offset points",
                        xytext=(0, 8), ha="center", fontsize=8)
        ax.set_xticks(range(len(comparisons)), labels, fontsize=8)
        ax.set_xlim(-0.6, len(comparisons) - 0.4)
        ax.margins(y=0.25)
        ax.set_ylabel(f"{objective.upper()} validation loss (nats/token)")
        fractions = sorted({f for c in comparisons for f in c["mlm_fraction"]})
        ax.set_title(f"{OBJECTIVE_NAMES[objective]} loss: mixed ({', '.join(f'{f:g}' for f in fractions)} of steps "
                     f"MLM) vs {objective.upper()} only", fontsize=10)
        ax.grid(True, axis="y", alpha=0.25)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Mixed CLM+MLM training vs one objective at equal compute (mixed minus single; seeds as points)",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig
