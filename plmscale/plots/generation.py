"""Generation that is measured (plmscale.evaluate.generation): diversity, novelty and planted content of each
CLM run's samples against its size and its final validation loss, the natural held-out set as a horizontal
line (and the background, the chance level, dotted) (generation.png)."""

import matplotlib.pyplot as plt

from plmscale.plots.common import OBJECTIVE_COLORS, format_axis, save_figure

NATURAL_STYLE = {"color": "#2ca02c", "ls": "--", "lw": 1.2}
BACKGROUND_STYLE = {"color": "0.5", "ls": ":", "lw": 1.2}


def generation_panels(summary: dict) -> list:
    """(title, value of a set entry) per panel: diversity and novelty always, planted content on the demo."""
    panels = [
        ("diversity: clusters at 50% id / n", lambda e: e["diversity"]["clusters_per_sequence"]),
        ("novelty: median best identity to train", lambda e: e["novelty"]["median_best_identity"]),
        ("fraction >= 50% identity to train", lambda e: e["novelty"]["at_least_0.5"]),
    ]
    planted = summary.get("planted") or {}
    if planted.get("measured"):
        k = planted["min_motifs"]
        panels.append((f"planted: fraction with >= {k} motifs",
                       lambda e, k=k: e["planted"][f"with_at_least_{k}_motifs"]))
        panels.append(("planted: distinct motifs per sequence", lambda e: e["planted"]["motifs_per_sequence"]))
    return panels


def plot_generation(summary: dict, path):
    """One column per metric; top row against N (non-embedding parameters), bottom row against final valid
    loss; a point per run, the natural and background sets as horizontal lines. Returns the Figure."""
    panels = generation_panels(summary)
    models = [e for e in summary["sets"] if e["kind"] == "model"]
    baselines = {e["kind"]: e for e in summary["sets"] if e["kind"] in ("natural", "background")}
    fig, axes = plt.subplots(2, len(panels), figsize=(3.3 * len(panels), 6.4), squeeze=False)
    for column, (title, value) in enumerate(panels):
        for row, (x_of, x_label) in enumerate(((lambda e: e["run"]["n_params"], "non-embedding parameters N"),
                                               (lambda e: e["run"]["final_valid_loss"], "final validation loss"))):
            ax = axes[row][column]
            points = sorted((x_of(e), value(e), e["label"]) for e in models
                            if x_of(e) is not None and value(e) is not None)
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color=OBJECTIVE_COLORS["clm"],
                        label="CLM samples")
            for kind, style in (("natural", NATURAL_STYLE), ("background", BACKGROUND_STYLE)):
                if kind in baselines and value(baselines[kind]) is not None:
                    ax.axhline(value(baselines[kind]), **style,
                               label="natural held-out (test)" if kind == "natural" else "background residues")
            if row == 0:
                ax.set_xscale("log")
                format_axis(ax.xaxis, "params")
                ax.set_title(title, fontsize=9)
            ax.set_xlabel(x_label, fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7, loc="best")
    n = summary.get("n_samples")
    fig.suptitle(f"Samples of CLM runs ({n} each) against natural held-out sequences of the same lengths", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return fig
