"""How far the answer moves between cost models (issue 28, docs/costs.md): per objective, the allocation exponent
a and the forecast optimum N_opt of each law family under each FLOPs definition, with intervals, as fit.json
stores them (allocation_by_cost_model, allocation_by_family, envelope.by_cost_model). Nothing is recomputed."""

import math

import matplotlib.pyplot as plt

from plmscale.arithmetic import FLOPS_DEFINITIONS
from plmscale.plots.common import OBJECTIVE_NAMES, objectives_in, save_figure, wrapped
from plmscale.scaling.fitfile import parse_fit

FAMILY_MARKERS = {"parametric": "o", "farseer": "s"}
ENVELOPE_MARKER = "D"
BUDGET_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")


def stored_allocations(objective_entry: dict) -> dict:
    """{family: {cost model: rows} or {"skipped": why}} of one objective of fit.json: the parametric law's
    allocation_by_cost_model and every other family's in allocation_by_family."""
    out = {}
    if "allocation_by_cost_model" in objective_entry:
        out["parametric"] = objective_entry["allocation_by_cost_model"]
    out.update(objective_entry.get("allocation_by_family") or {})
    return out


def _errorbar(ax, x, value, ci, **style):
    if value is None or not math.isfinite(value):
        return
    yerr = None if not ci else [[max(value - ci[0], 0)], [max(ci[1] - value, 0)]]
    ax.errorbar([x], [value], yerr=yerr, capsize=3, linestyle="none", **style)


def _ratio_label(ax, x, allocation, reference):
    """N_opt against the 6nd optimum at the same budget, written beside the point (how far it moved)."""
    n_opt, base = allocation.get("n_opt"), (reference[0].get("n_opt") if reference else None)
    if n_opt and base and allocation is not reference[0]:
        ax.annotate(f"×{n_opt / base:.2f}", (x, n_opt), xytext=(6, 0), textcoords="offset points", fontsize=6.5,
                    va="center")


def _note(ax, text):
    ax.text(0.5, 0.5, wrapped(text, 60), ha="center", va="center", fontsize=7, color="0.3", transform=ax.transAxes)


def plot_cost_models(fit, path):
    """Left: the exponent a per cost model (each family's local allocation exponent at each fit.predict_flops
    budget, and the envelope refitted per cost model); right: N_opt per cost model at each budget. Error bars
    are the stored 95% bootstrap intervals; the IsoFLOP law sits at its own definition only (not relabelled)."""
    fit = parse_fit(fit)
    objectives = objectives_in(fit) or ["clm"]
    fig, axes = plt.subplots(len(objectives), 2, figsize=(11, 3.6 * len(objectives)), squeeze=False)
    models = list(FLOPS_DEFINITIONS)
    for row, objective in enumerate(objectives):
        entry = (fit.data.get("objectives") or {}).get(objective) or {}
        ax_a, ax_n = axes[row]
        allocations = stored_allocations(entry)
        drawn = False
        families = [f for f, by_model in allocations.items() if "skipped" not in by_model]
        offsets = {f: 0.12 * (i - (len(families) - 1) / 2) for i, f in enumerate(families)}
        for family in families:
            by_model = allocations[family]
            for model_index, model in enumerate(models):
                for budget_index, allocation in enumerate(by_model.get(model) or []):
                    color = BUDGET_COLORS[budget_index % len(BUDGET_COLORS)]
                    x = model_index + offsets[family] + 0.04 * budget_index
                    label = f"{family}, C = {allocation['flops']:.3g}" if model_index == 0 else None
                    style = {"marker": FAMILY_MARKERS.get(family, "^"), "color": color}
                    _errorbar(ax_a, x, allocation.get("a"), allocation.get("a_ci"), label=label, **style)
                    _errorbar(ax_n, x, allocation.get("n_opt"), allocation.get("n_opt_ci"), label=label, **style)
                    _ratio_label(ax_n, x, allocation, (by_model.get(models[0]) or [])[budget_index:budget_index + 1])
                    drawn = True
        # the trust rule holds here too: a method judged unidentified draws nothing, its reason is named
        unjudged = {m: entry.get(m) or {} for m in ("envelope", "isoflop")}
        hidden = {m: f"{m} not identified: {(e.get('reasons') or ['no reason recorded'])[0]}"
                  for m, e in unjudged.items() if e.get("identified") is False}
        envelope = {} if "envelope" in hidden else (unjudged["envelope"].get("by_cost_model") or {})
        for model_index, model in enumerate(models):
            law = envelope.get(model) or {}
            if "a" in law:
                _errorbar(ax_a, model_index + 0.3, law["a"], law.get("a_ci"), marker=ENVELOPE_MARKER, color="0.35",
                          label="envelope (curves recounted)" if model_index == 0 else None)
                drawn = True
        isoflop = {} if "isoflop" in hidden else unjudged["isoflop"]
        if isoflop.get("flops_definition") in models and isoflop.get("a") is not None:
            _errorbar(ax_a, models.index(isoflop["flops_definition"]) - 0.3, isoflop["a"], isoflop.get("a_ci"),
                      marker="*", markersize=10, color="k", label="IsoFLOP (its own count only)")
            drawn = True
        skipped = [f"{f}: {by_model['skipped']}" for f, by_model in allocations.items() if "skipped" in by_model]
        skipped += list(hidden.values())
        if not drawn:
            _note(ax_a, "; ".join(skipped) or "no allocation under the cost models in fit.json")
            _note(ax_n, "nothing to draw")
        for ax in (ax_a, ax_n):
            ax.set_xticks(range(len(models)), models)
            ax.set_xlim(-0.6, len(models) - 0.4)
            ax.set_xlabel("cost model the budget is counted in")
        ax_a.set_ylabel("exponent a (N_opt ∝ C^a)")
        ax_n.set_ylabel("N_opt (non-embedding parameters)")
        if any(ax_n.get_lines()):
            ax_n.set_yscale("log")
        ax_a.set_title(f"{OBJECTIVE_NAMES.get(objective, objective)}: allocation exponent", fontsize=9)
        ax_n.set_title(f"{OBJECTIVE_NAMES.get(objective, objective)}: forecast optimum", fontsize=9)
        if drawn:
            ax_a.legend(fontsize=6.5, loc="best")
        if skipped and drawn:
            ax_n.text(0.0, -0.22, wrapped("not drawn: " + "; ".join(skipped), 110), fontsize=6, color="0.3",
                      transform=ax_n.transAxes, va="top")
    fig.tight_layout()
    save_figure(fig, path)
    return fig
