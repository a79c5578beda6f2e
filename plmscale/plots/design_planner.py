"""The planner (plmscale.design.planner): each candidate design's expected width of a's 95% interval against
what it costs to train (design_planner.png), the config's own grid and the chosen design marked."""

import math

import matplotlib.pyplot as plt

from plmscale.design.planner import repeats_past_limit
from plmscale.plots.common import format_axis, save_figure

SCHEDULE_MARKERS = {"cosine": "o", "wsd": "s"}
REPLICATE_COLOURS = {1: "tab:blue", 2: "tab:orange", 3: "tab:green"}


def plot_design_planner(plan: dict, path=None):
    """Expected a-width against cost, one point per design (colour: replicates, marker: schedule); designs
    most of whose simulated studies have no interval sit on the top edge, marked as such; designs whose runs
    repeat the train split past max_epochs are crossed out. Returns the Figure."""
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    finite = [row["a_width"] for row in plan["rows"] if math.isfinite(row["a_width"])]
    ceiling = 1.1 * max(finite, default=1.0)
    labelled = set()
    for row in plan["rows"]:
        width = row["a_width"] if math.isfinite(row["a_width"]) else ceiling
        key = (row["schedule"], row["replicates"])
        label = f"{row['schedule']}, {row['replicates']} run(s) per point"
        ax.scatter(row["flops"], width, marker=SCHEDULE_MARKERS.get(row["schedule"], "o"),
                   color=REPLICATE_COLOURS.get(row["replicates"], "tab:grey"), alpha=0.75, s=30,
                   label=label if key not in labelled else None, zorder=3)
        labelled.add(key)
    repeated = [row for row in plan["rows"] if repeats_past_limit(row, plan.get("max_epochs"))]
    if repeated:
        ax.scatter([row["flops"] for row in repeated],
                   [row["a_width"] if math.isfinite(row["a_width"]) else ceiling for row in repeated],
                   marker="x", s=70, color="black", linewidths=1.2, zorder=4,
                   label=f"repeats the train split > {plan['max_epochs']:g} times: not chosen")
    config_row = next((row for row in plan["rows"] if row["is_config"]), None)
    if config_row is not None and math.isfinite(config_row["a_width"]):
        ax.scatter(config_row["flops"], config_row["a_width"], s=160, facecolors="none", edgecolors="black",
                   linewidths=1.5, label="the config's grid", zorder=4)
    adaptive = (config_row or {}).get("adaptive")
    if adaptive and math.isfinite(adaptive["a_width"]):
        # where the config's adaptive study is expected to end: median, with the quartiles of width and FLOPs
        (w_low, w_high), (c_low, c_high) = adaptive["a_width_quartiles"], adaptive["flops_quartiles"]
        ax.errorbar(adaptive["flops"], adaptive["a_width"],
                    yerr=[[adaptive["a_width"] - w_low], [min(w_high, ceiling) - adaptive["a_width"]]],
                    xerr=[[adaptive["flops"] - c_low], [c_high - adaptive["flops"]]], fmt="D", color="black",
                    markerfacecolor="white", ms=8, capsize=3, zorder=4,
                    label=f"the config's adaptive study at its stop ({adaptive['simulations']} simulated)")
    if plan["chosen"] is not None:
        chosen = plan["rows"][plan["chosen"]]
        ax.scatter(chosen["flops"], chosen["a_width"], marker="*", s=220, color="gold", edgecolors="black",
                   label=f"chosen: {chosen['name']}", zorder=5)
    if plan["study_budget"] is not None:
        ax.axvline(plan["study_budget"], color="grey", ls="--", lw=1, label="study budget")
    if len(finite) < len(plan["rows"]):
        ax.axhline(ceiling, color="lightgrey", lw=0.8, zorder=1)
        ax.text(0.01, ceiling, " most studies without an interval", transform=ax.get_yaxis_transform(),
                va="bottom", fontsize=7, color="grey")
    ax.set_xscale("log")
    format_axis(ax.xaxis, "flops")
    ax.set_xlabel(f"cost of the design (FLOPs, {plan['flops_definition']})")
    ax.set_ylabel("expected width of a's 95% interval")
    ax.set_title(f"{plan['objective'].upper()} designs: {plan['simulations']} simulated studies each, "
                 f"noise {plan['noise']:.2%}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig
