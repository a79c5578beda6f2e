"""The closed loop (plmscale.scaling.closed_loop): each method's forecast loss with its interval against the
loss the trained run reached (closed_loop.png)."""

import matplotlib.pyplot as plt

from plmscale.scaling.fitfile import METHODS


def _by_budget(validation: dict, objective: str) -> list:
    """(label, record) of one objective by budget, the depths of a budget in label order (as `predict` lists them)."""
    records = (validation.get("objectives") or {}).get(objective, {})
    return sorted(records.items(), key=lambda item: (item[1]["flops"], item[0]))


def plot_closed_loop(validation: dict, path):
    """Forecast (95% interval) vs observed loss per objective, method and multiple; returns the Figure."""
    objectives = sorted(validation.get("objectives") or {})
    fig, axes = plt.subplots(1, max(1, len(objectives)), figsize=(5.5 * max(1, len(objectives)), 4.2),
                             squeeze=False)
    colours = {"isoflop": "tab:blue", "envelope": "tab:green", "parametric": "tab:orange", "farseer": "tab:purple",
               "data_constrained": "tab:brown"}
    for ax, objective in zip(axes[0], objectives or [None]):
        if objective is None:
            ax.text(0.5, 0.5, "no closed-loop runs", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        records = _by_budget(validation, objective)
        ticks, labels, labelled = [], [], set()

        def legend_label(name):
            if name in labelled:
                return None
            labelled.add(name)
            return name

        for position, (label, record) in enumerate(records):
            ticks.append(position)
            labels.append(f"{label}\nC={record['flops']:.2g}" + ("\nbest depth" if record.get("best_of_depths") else ""))
            if not record["trained"]:
                ax.text(position, 0.5, "not trained:\nno identified\nforecast", ha="center", va="center",
                        fontsize=7, transform=ax.get_xaxis_transform())
                continue
            ax.plot([position - 0.4, position + 0.4], [record["observed_loss"]] * 2, color="black", lw=2,
                    label=legend_label("observed"))
            missing = []
            # the three methods, and the selected law family where it is another (closed_loop.score_run)
            shown = list(METHODS) + [m for m in record["methods"] if m not in METHODS]
            offsets = (-0.2, 0.0, 0.2) if len(shown) == 3 else [-0.3 + 0.6 * i / (len(shown) - 1)
                                                                  for i in range(len(shown))]
            for offset, method in zip(offsets, shown):
                entry = record["methods"][method]
                if entry["loss"] is None:
                    missing.append(method)
                    continue
                ci = entry["loss_ci"]
                err = None if not ci else [[max(0.0, entry["loss"] - ci[0])], [max(0.0, ci[1] - entry["loss"])]]
                identified = entry["identified"]
                name = f"{method} (selected law)" if method == record.get("selected_law") else method
                ax.errorbar(position + offset, entry["loss"], yerr=err, fmt="o", color=colours[method],
                            markerfacecolor=colours[method] if identified else "none", capsize=3,
                            label=legend_label(name if identified else f"{name} (not identified)"))
                sized = " *" if method == record["forecast_method"] else ""
                ax.annotate(f"{entry['error_pct']:+.2f}%{sized}", (position + offset, entry["loss"]),
                            textcoords="offset points", xytext=(4, 3), fontsize=7, color=colours[method],
                            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
            if missing:
                ax.text(position, 0.02, "no loss forecast: " + ", ".join(missing), ha="center", va="bottom",
                        fontsize=7, transform=ax.get_xaxis_transform())
        ax.set_xticks(ticks, labels)
        ax.set_xlim(-0.6, len(records) - 0.4)
        ax.set_ylabel("final validation loss (nats)")
        ax.set_title(f"{objective.upper()}: forecast (95% interval) vs observed\n"
                     "(labels: observed vs forecast in %; * sized the run)", fontsize=9)
        if labelled:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return fig
