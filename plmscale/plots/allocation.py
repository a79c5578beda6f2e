"""The compute-optimal allocation N_opt(C), D_opt(C) of every identified method, with the optima the IsoFLOP
law rests on, the data's compute range and the predictions (optimal_allocation)."""

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import transforms
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D

from plmscale.arithmetic import FLOPS_PER_PARAM_TOKEN
from plmscale.plots.common import (COMPUTE_MARGIN, EXTRAPOLATION_STYLE, METHOD_STYLES, OBJECTIVE_COLORS,
                                   VALUE_MARGIN, fit_budgets, format_axis, not_shown_handle, not_shown_label,
                                   objectives_in, power_of_ten, save_figure, wrapped)
from plmscale.plots.parametric import parametric_allocation
from plmscale.scaling.fitfile import ParametricLaw, PowerLaws, parse_fit
from plmscale.scaling.published import notebook_n_opt
from plmscale.scaling.selected_law import differs_from_parametric, selected_law


def data_compute_range(fit, objective: str):
    """(lowest, highest) compute of the objective's IsoFLOP budgets (else the envelope's points), or None."""
    budgets = fit_budgets(fit, objective) or [p.flops for p in fit.method(objective, "envelope").points]
    return (min(budgets), max(budgets)) if budgets else None


def law_compute_range(fit, objective: str, method: str):
    """The compute span a method's law was fitted on: beyond it, the law extrapolates."""
    entry = fit.method(objective, method)
    if method == "isoflop":
        kept = [o.budget for o in entry.optima if o.kept]
        if kept:
            return min(kept), max(kept)
    if method == "envelope" and entry.points:
        return min(p.flops for p in entry.points), max(p.flops for p in entry.points)
    return data_compute_range(fit, objective)


def prediction_targets(fit, predictions=None) -> list:
    """Every compute budget a prediction is made for: the fit's settings.predict_flops and the marks."""
    targets = []
    for values in ((fit.data.get("settings") or {}).get("predict_flops") or {}).values():
        targets += [float(c) for c in values or []]
    for marks in (predictions or {}).values():
        targets += [float(c) for c, _ in marks.get("n", [])]
    return [c for c in targets if c > 0 and math.isfinite(c)]


def sane_compute_span(fit, predictions=None, default=(1e18, 1e23)):
    """The compute axis: the data's budgets and the prediction targets, COMPUTE_MARGIN either side."""
    points = prediction_targets(fit, predictions)
    for objective in objectives_in(fit):
        span = data_compute_range(fit, objective)
        points += list(span) if span else []
    if not points:
        return default
    return min(points) / COMPUTE_MARGIN, max(points) * COMPUTE_MARGIN


def _shade_data_range(ax, span, color, label=None):
    """The compute range the data cover, shaded: what lies outside it is extrapolation."""
    if span:
        ax.axvspan(span[0], span[1], color=color, alpha=0.07, lw=0, label=label)


def _plot_extrapolated(ax, c_grid, values, span, color, style, lw, label):
    """One law: the part inside its data's compute span as a line (labelled), the rest dashed and faded."""
    inside = (c_grid >= span[0] * (1 - 1e-9)) & (c_grid <= span[1] * (1 + 1e-9)) if span else np.ones_like(c_grid, bool)
    if inside.any():
        ax.plot(c_grid[inside], values[inside], ls=style, color=color, lw=lw, label=label)
    segments = []
    for part in (c_grid < span[0], c_grid > span[1]) if span else ():
        idx = np.flatnonzero(part)
        if len(idx) > 1 or (len(idx) == 1 and inside.any()):
            # join the dashed part to the solid one so the law reads as one curve
            idx = np.union1d(idx, [idx.max() + 1] if part[0] else [idx.min() - 1])
            idx = idx[(idx >= 0) & (idx < len(c_grid))]
            segments.append(np.column_stack([c_grid[idx], values[idx]]))
    if segments:
        ax.add_collection(LineCollection(segments, colors=[color], linewidths=lw, linestyles=EXTRAPOLATION_STYLE["ls"],
                                         alpha=EXTRAPOLATION_STYLE["alpha"]))


def _law_constants(law, what: str):
    """(k, exponent) of N_opt ('n') or D_opt ('d') = k·C^exponent for one method's law (None: no law)."""
    if isinstance(law, PowerLaws):
        return law.constants(what)
    if isinstance(law, ParametricLaw):
        constants = parametric_allocation(law)[0 if what == "n" else 1]
        return constants if np.all(np.isfinite(constants)) else None  # exponents near 0 overflow G
    return None


def _band(law: PowerLaws, what: str, c_grid: np.ndarray):
    """95% band of N_opt or D_opt over c_grid from the bootstrap draws of (k, exponent), if stored."""
    k_key, e_key = ("k_n", "a") if what == "n" else ("k_d", "b")
    ks, es = law.draws.get(k_key), law.draws.get(e_key)
    if ks is None or es is None or len(ks) <= 10:
        return None
    ok = np.isfinite(ks) & np.isfinite(es) & (ks > 0)
    if ok.sum() <= 10:
        return None
    values = np.log(ks[ok])[:, None] + es[ok][:, None] * np.log(c_grid)[None, :]
    low, high = np.percentile(values, [2.5, 97.5], axis=0)
    return np.exp(low), np.exp(high)


SELECTED_LAW_STYLE = (0, (4, 1, 1, 1, 1, 1))  # dash-dot-dot: a law family other than the three methods


def _plot_selected_law(ax, fit, objective: str, what: str, c_grid, color, span) -> list:
    """The compute-optimal N_opt(C) or D_opt(C) of the law family fit.json selected, where it is not the
    parametric law (which the methods draw): found numerically along the budgets, labelled with its local
    exponent. A selected law always passed its checks; one that cannot be evaluated draws nothing. Returns
    the values drawn (for the y axis)."""
    law = selected_law(fit, objective)
    if not law.usable:
        return []
    n_opt, d_opt = law.frontier(c_grid)
    values = n_opt if what == "n" else d_opt
    finite = np.isfinite(values) & (values > 0)
    if finite.sum() < 2:
        return []
    exponent = law.a if what == "n" else (None if law.a is None else 1 - law.a)
    local = " (local, at the top budget)" if law.family == "farseer" else ""  # Farseer's exponent changes with C
    shown = f": {'a' if what == 'n' else 'b'}={exponent:.3f}{local}" if exponent is not None else ""
    _plot_extrapolated(ax, c_grid[finite], values[finite], span, color, SELECTED_LAW_STYLE, 1.3,
                       f"{objective.upper()} {law.label}{shown}")
    return [values[finite].min(), values[finite].max()]


LEGEND_BELOW_AXIS_POINTS = 44  # tick labels (~14 pt) + x label (~14 pt) + padding


NOT_COUNTED = "not counted: "  # how identify names a bracketed budget the law does not rest on


def counted_optima(fit, objective: str):
    """([optima the IsoFLOP law rests on], [(optimum, why) of the bracketed ones it does not]).

    A budget whose parabola has its vertex inside the grid (kept) still does not count when identify finds its
    curvature within the runs' scatter: fit.json says so in the IsoFLOP verdict's notes or reasons as
    "budget <C> not counted: <why>". Without a usable IsoFLOP law no optimum counts, and none is returned.
    """
    entry = fit.method(objective, "isoflop")
    if not entry.usable:
        return [], []
    raw = (fit.data.get("objectives") or {}).get(objective, {}).get("isoflop") or {}
    verdicts = [str(line) for line in list(raw.get("notes") or []) + list(raw.get("reasons") or [])]
    counted, uncounted = [], []
    for optimum in entry.optima:
        if not optimum.kept or optimum.n_opt is None or optimum.d_opt is None:
            continue
        prefix = f"budget {optimum.budget:.3g} {NOT_COUNTED}"
        why = next((line[len(prefix):] for line in verdicts if line.startswith(prefix)), None)
        (counted.append(optimum) if why is None else uncounted.append((optimum, why)))
    return counted, uncounted


def _not_shown_entries(fit, objective: str, color) -> list:
    """(handle, label) for the methods of one objective that draw nothing; one entry for the objective when
    all of its methods fail for one reason (e.g. it is not in the IsoFLOP grid)."""
    reasons = {}
    for method, (style, name) in METHOD_STYLES.items():
        entry = fit.method(objective, method)
        if not entry.usable:
            reasons[method] = (style, not_shown_label(objective, method, entry), entry.why_unusable)
        elif _law_constants(entry.law, "n") is None:
            reasons[method] = (style, f"{objective.upper()} {name}: law overflows, not drawn", "overflow")
    whys = {why for *_, why in reasons.values()}
    if len(reasons) == len(METHOD_STYLES) > 1 and len(whys) == 1:
        label = not_shown_label(objective, "all methods", fit.method(objective, "isoflop"))
        return [(not_shown_handle(color, "-"), wrapped(label, 60))]
    return [(not_shown_handle(color, style), wrapped(label, 60)) for style, label, _ in reasons.values()]


def plot_optimal_allocation(fit, path, c_range=None, predictions=None):
    """N_opt(C) and D_opt(C) per objective: each identified method's law (dashed beyond its data), the
    IsoFLOP 95% band, the optima the IsoFLOP law rests on (bracketed optima it does not count hollow, with
    why), the data's compute range (shaded), the paper's fit (beside an objective with at least one usable
    law) and the predictions. Where fit.json selected a law family other than the parametric law (Farseer,
    data-constrained), its compute-optimal N and D are drawn too, labelled as the selected law.

    c_range: the compute axis; default: the data's budgets and the prediction targets (sane_compute_span).
    A method that is not identified draws nothing; its legend entry says why (one entry for an objective
    whose methods all fail for one reason).
    """
    fit = parse_fit(fit)
    c_range = c_range or sane_compute_span(fit, predictions)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), sharex=True)
    c_grid = np.logspace(math.log10(c_range[0]), math.log10(c_range[1]), 160)
    not_shown = []  # (axis, handle, label) for what is not drawn or not counted, said in the left panel
    drawn_values = {"n": [], "d": []}  # what the y axes must show
    bands = []  # the panels that show an IsoFLOP band
    for objective in objectives_in(fit):
        color = OBJECTIVE_COLORS[objective]
        data_span = data_compute_range(fit, objective)
        # The paper's line is a reference for the study's own laws: beside an objective with none it would read
        # as this study's result.
        with_reference = any(fit.method(objective, method).usable for method in METHOD_STYLES)
        not_shown += [(axes[0], handle, label) for handle, label in _not_shown_entries(fit, objective, color)]
        counted, uncounted = counted_optima(fit, objective)
        for optimum, why in uncounted:
            # whole: identify's sentence ends with what it means ("the minimum is within the runs' scatter")
            label = f"{objective.upper()} optimum at {power_of_ten(optimum.budget)} FLOPs (hollow) {NOT_COUNTED}{why}"
            not_shown.append((axes[0], Line2D([], [], ls="none", marker="o", mfc="none", mec=color, markersize=5),
                              wrapped(label, 60)))
        for ax, what in zip(axes, ("n", "d")):
            _shade_data_range(ax, data_span, color)
            for method, (style, name) in METHOD_STYLES.items():
                entry = fit.method(objective, method)
                constants = _law_constants(entry.law, what) if entry.usable else None
                if constants is None:
                    continue
                k, exponent = constants
                values = k * c_grid ** exponent
                _plot_extrapolated(ax, c_grid, values, law_compute_range(fit, objective, method), color, style,
                                   1.6 if method == "isoflop" else 1.1,
                                   f"{objective.upper()} {name}: {'a' if what == 'n' else 'b'}={exponent:.3f}")
                drawn_values[what] += [values.min(), values.max()]
                band = _band(entry.law, what, c_grid) if method == "isoflop" else None
                if band is not None:
                    ax.fill_between(c_grid, *band, color=color, alpha=0.15, lw=0)
                    bands.append(ax)
            if differs_from_parametric(fit, objective):
                drawn_values[what] += _plot_selected_law(ax, fit, objective, what, c_grid, color, data_span)
            for optima, style in ((counted, {"color": color}),
                                  ([o for o, _ in uncounted], {"facecolors": "none", "edgecolors": color})):
                if optima:
                    values = [o.n_opt if what == "n" else o.d_opt for o in optima]
                    ax.scatter([o.budget for o in optima], values, s=25, zorder=3, **style)
                    drawn_values[what] += values
            if with_reference:
                k_paper, a_paper = notebook_n_opt(objective)
                paper_n = k_paper * c_grid ** a_paper
                paper = paper_n if what == "n" else c_grid / (FLOPS_PER_PARAM_TOKEN * paper_n)
                ax.plot(c_grid, paper, ls="-", color="0.35" if objective == "clm" else "0.6", lw=0.8,
                        label=f"{objective.upper()} paper notebook: {'a' if what == 'n' else 'b'}="
                              f"{a_paper if what == 'n' else 1 - a_paper:.3f}")
            marks = (predictions or {}).get(objective)  # predictions_for_plot: {"n": [(C, N)], "d": [(C, D)]}
            for flops, value in marks[what] if marks else []:
                ax.scatter([flops], [value], marker="D", s=40, color=color, edgecolor="k", zorder=4)
                drawn_values[what].append(value)
    for ax, what in zip(axes, ("n", "d")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(*c_range)
        values = [v for v in drawn_values[what] if v > 0 and math.isfinite(v)]
        if values:
            ax.set_ylim(min(values) / VALUE_MARGIN, max(values) * VALUE_MARGIN)
        format_axis(ax.xaxis, "flops")
        format_axis(ax.yaxis, "params" if what == "n" else "tokens")
        ax.set_xlabel("training compute C (FLOPs, 6·N·D)")
        ax.set_ylabel("compute-optimal model size N_opt" if what == "n" else "compute-optimal tokens D_opt")
        ax.grid(True, which="major", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        extra = [(h, label) for owner, h, label in not_shown if owner is ax]
        handles += [h for h, _ in extra] + [plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.15)]
        labels += [label for _, label in extra] + ["compute range of the data (dashed beyond: extrapolation)"]
        # Sentences on why a method draws nothing would cover the optima: they go under the panel, a fixed
        # distance below the axis (in points, clear of tick labels and x label whatever the panel's height).
        below = ax.transAxes + transforms.ScaledTranslation(0, -LEGEND_BELOW_AXIS_POINTS / 72, fig.dpi_scale_trans)
        placement = ({"loc": "upper left", "bbox_to_anchor": (0.0, 0.0), "bbox_transform": below} if extra
                     else {"loc": "upper left"})
        ax.legend(handles, labels, fontsize=6.5, **placement)
    # The title promises the band only where one is drawn (none without IsoFLOP bootstrap draws).
    axes[0].set_title("Optimal model size" + (" (band: IsoFLOP 95% bootstrap)" if bands else ""))
    axes[1].set_title("Optimal training tokens")
    comparison = fit.data.get("comparison") or {}
    if comparison.get("available"):
        # both frontiers are on these axes: the sentence says what their difference is, with its interval
        fig.suptitle(wrapped("CLM vs MLM: " + comparison["sentence"], 150), fontsize=8, y=0.995)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
    else:
        fig.tight_layout()
    save_figure(fig, path)
    return fig
