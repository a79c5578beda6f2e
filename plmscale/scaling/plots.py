"""Figures of a scaling study. Each function draws one figure from the fit (a FitFile from
fitfile.read_fit, or a fit.json dict that is validated the same way) and/or the runs/curves tables,
writes it as PNG + SVG + PDF next to `path`, and returns the matplotlib Figure (tests count its axes and
lines). PLOTS, the registry at the end, names every figure with its caption.

Axes in FLOPs, parameters and tokens get SI tick labels (10M, 1B, 100B); FLOPs read as powers of ten.
"""

import logging
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import colors, ticker, transforms  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from plmscale.arithmetic import FLOPS_PER_PARAM_TOKEN  # noqa: E402
from plmscale.scaling.fitfile import FitFile, ParametricLaw, PowerLaws, parse_fit  # noqa: E402
from plmscale.scaling.parametric import allocation_laws  # noqa: E402
from plmscale.scaling.published import notebook_n_opt  # noqa: E402
from plmscale.scaling.table import (IDENTITY_LOSS_PREFIX, IDENTITY_SEQUENCES_PREFIX,  # noqa: E402
                                    identity_bins, main_study, transfer_partners)

log = logging.getLogger(__name__)

OBJECTIVE_NAMES = {"clm": "CLM (causal)", "mlm": "MLM (masked)"}
OBJECTIVE_COLORS = {"clm": "#1f77b4", "mlm": "#d62728"}
METHOD_STYLES = {"isoflop": ("-", "IsoFLOP"), "envelope": (":", "envelope"), "parametric": ("-.", "parametric")}
# How far the compute axis reaches beyond the data and the prediction targets (factor each side), and the
# size/token axes beyond what is drawn: enough to read the trend, never decades of empty extrapolation.
COMPUTE_MARGIN = 3.0
VALUE_MARGIN = 3.0
EXTRAPOLATION_STYLE = {"ls": "--", "alpha": 0.55}  # a law beyond the compute range of its data
LABEL_CHARS = 140  # a reason in a legend is cut here; fit.json and `plmscale fit` have it whole


# ------------------------------------------------------------------------------------------------ helpers

def si_label(value: float, _pos=None) -> str:
    """10_000_000 -> '10M', 2.5e9 -> '2.5B' (parameters and tokens)."""
    if value <= 0 or not math.isfinite(value):
        return ""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _power_of_ten(value: float, _pos=None) -> str:
    if value <= 0:
        return ""
    exponent = math.log10(value)
    if abs(exponent - round(exponent)) < 1e-6:
        return f"$10^{{{int(round(exponent))}}}$"
    mantissa = value / 10 ** math.floor(exponent)
    return f"${mantissa:.2g}\\times10^{{{int(math.floor(exponent))}}}$"


def format_axis(axis, quantity: str) -> None:
    """Log scale with readable labels: quantity is 'flops', 'params', 'tokens' or 'loss'."""
    if quantity == "loss":
        axis.set_major_formatter(ticker.FormatStrFormatter("%.2f"))
        axis.set_minor_formatter(ticker.FormatStrFormatter("%.2f"))
        return
    axis.set_major_locator(ticker.LogLocator(base=10, numticks=12))
    axis.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(2, 10), numticks=12))
    axis.set_minor_formatter(ticker.NullFormatter())
    axis.set_major_formatter(ticker.FuncFormatter(_power_of_ten if quantity == "flops" else si_label))


FORMATS = ("png", "svg", "pdf")  # PNG for people, SVG/PDF for papers
DPI = 130


def save_figure(fig, path, formats=None) -> list:
    """Write fig as path (its suffix) plus the other formats beside it; returns the written paths."""
    formats = FORMATS if formats is None else formats
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in dict.fromkeys([path.suffix.lstrip(".") or "png", *formats]):
        target = path.with_suffix(f".{fmt}")
        # Fixed metadata so reruns give identical SVG/PDF bytes.
        metadata = {"Date": None} if fmt in ("svg", "pdf") else None
        if fmt == "pdf":
            metadata = {"CreationDate": None, "ModDate": None}
        fig.savefig(target, dpi=DPI, bbox_inches="tight", metadata=metadata)
        written.append(target)
    return written


def _objectives(fit):
    return [o for o in ("clm", "mlm") if o in fit.objectives]


def _wrapped(text: str, width: int = 70) -> str:
    return textwrap.fill(text, width, break_long_words=False)


def not_shown_label(objective: str, method: str, entry) -> str:
    """'CLM parametric: not identified: <first reason>', for a legend entry or a note in place of a law."""
    name = METHOD_STYLES.get(method, (None, method))[1]
    why = entry.why_unusable
    return f"{objective.upper()} {name}: {why if len(why) <= LABEL_CHARS else why[:LABEL_CHARS - 1] + '…'}"


def _not_shown_handle(color, style):
    """A legend entry for a law that is not drawn: a greyed, crossed-out sample of its style."""
    return Line2D([], [], color=color, ls=style, alpha=0.35, marker="x", markersize=5)


def data_compute_range(fit, objective: str):
    """(lowest, highest) compute of the objective's IsoFLOP budgets (else the envelope's points), or None."""
    budgets = _fit_budgets(fit, objective) or [p.flops for p in fit.method(objective, "envelope").points]
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
    for objective in _objectives(fit):
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
        constants = _parametric_allocation(law)[0 if what == "n" else 1]
        return constants if np.all(np.isfinite(constants)) else None  # exponents near 0 overflow G
    return None


def _parametric_allocation(law: ParametricLaw):
    return allocation_laws(law.A, law.B, law.alpha, law.beta, FLOPS_PER_PARAM_TOKEN)


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


def _scatter_ids(runs: pd.DataFrame, ids):
    return runs[runs["run_id"].astype(str).isin([str(i) for i in ids])]


# --------------------------------------------------------------------------------------------- the plots

def plot_isoflop(fit, runs: pd.DataFrame, objective: str, path):
    """Loss vs N for each budget, the fitted parabolas and their optima (dropped budgets drawn hollow)."""
    iso = parse_fit(fit).method(objective, "isoflop")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    budgets = [o.budget for o in iso.optima]
    norm = colors.LogNorm(vmin=min(budgets), vmax=max(budgets)) if budgets else None
    cmap = plt.get_cmap("viridis")
    # An unidentified fit keeps its per-budget parabolas as a diagnostic (faded, dashed) but marks no optimum.
    judged_out = iso.identified is False
    for entry in iso.optima:
        color = cmap(0.92 * norm(entry.budget)) if norm else "k"
        points = _scatter_ids(runs, entry.run_ids).sort_values("n_params")
        ax.scatter(points["n_params"], points["loss"], s=22, color=color if entry.kept else "none",
                   edgecolor=color, zorder=3)
        if None not in (entry.curvature, entry.n_opt, entry.loss_opt) and len(points):
            x = np.linspace(np.log(points["n_params"].min()) - 0.15, np.log(points["n_params"].max()) + 0.15, 100)
            y = entry.loss_opt + entry.curvature * (x - np.log(entry.n_opt)) ** 2
            solid = entry.kept and not judged_out
            ax.plot(np.exp(x), y, color=color, lw=1.4 if solid else 1.0, ls="-" if solid else "--",
                    alpha=1.0 if solid else 0.6,
                    label=f"{_power_of_ten(entry.budget)} FLOPs" + ("" if entry.kept else " (dropped)"))
            if solid:
                ax.scatter([entry.n_opt], [entry.loss_opt], marker="*", s=160, color=color,
                           edgecolor="k", linewidth=0.6, zorder=4)
    ax.set_xscale("log")
    format_axis(ax.xaxis, "params")
    ax.set_xlabel("model size N (non-embedding parameters)")
    ax.set_ylabel("final validation loss (nats/token)")
    title = f"IsoFLOP profiles, {OBJECTIVE_NAMES.get(objective, objective)}"
    if iso.usable:
        title += f"\nN_opt ∝ C^{iso.law.a:.3f}" + (f"  [{iso.law.a_ci[0]:.3f}, {iso.law.a_ci[1]:.3f}]"
                                                    if iso.law.a_ci else "")
    else:
        title += "\n" + _wrapped(f"no law: {iso.why_unusable}", 80)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    if iso.optima:
        ax.legend(fontsize=8, loc="upper right", title_fontsize=8,
                  title="fit not identified: no optimum marked" if judged_out else "★ = fitted optimum")
    save_figure(fig, path)
    return fig


LEGEND_BELOW_AXIS_POINTS = 44  # tick labels (~14 pt) + x label (~14 pt) + padding


def plot_optimal_allocation(fit, path, c_range=None, predictions=None):
    """N_opt(C) and D_opt(C) per objective: each identified method's law (dashed beyond its data), the
    IsoFLOP 95% band, the optima, the data's compute range (shaded), the paper's fit (beside an objective
    with at least one usable law) and the predictions.

    c_range: the compute axis; default: the data's budgets and the prediction targets (sane_compute_span).
    A method that is not identified draws nothing; its legend entry says why.
    """
    fit = parse_fit(fit)
    c_range = c_range or sane_compute_span(fit, predictions)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), sharex=True)
    c_grid = np.logspace(math.log10(c_range[0]), math.log10(c_range[1]), 160)
    not_shown = []  # (handle, label) per objective × method that draws nothing
    drawn_values = {"n": [], "d": []}  # what the y axes must show
    for objective in _objectives(fit):
        color = OBJECTIVE_COLORS[objective]
        data_span = data_compute_range(fit, objective)
        # The paper's line is a reference for the study's own laws: beside an objective with none it would read
        # as this study's result.
        with_reference = any(fit.method(objective, method).usable for method in METHOD_STYLES)
        for ax, what in zip(axes, ("n", "d")):
            _shade_data_range(ax, data_span, color)
            for method, (style, name) in METHOD_STYLES.items():
                entry = fit.method(objective, method)
                constants = _law_constants(entry.law, what) if entry.usable else None
                if constants is None:
                    if what == "n":  # said once, in the left panel's legend
                        label = (not_shown_label(objective, method, entry) if not entry.usable else
                                 f"{objective.upper()} {name}: law overflows, not drawn")
                        not_shown.append((ax, _not_shown_handle(color, style), _wrapped(label, 60)))
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
            kept = [o for o in fit.method(objective, "isoflop").optima
                    if o.kept and o.n_opt is not None and o.d_opt is not None]
            if kept:
                optima = [o.n_opt if what == "n" else o.d_opt for o in kept]
                ax.scatter([o.budget for o in kept], optima, color=color, s=25, zorder=3)
                drawn_values[what] += optima
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
    axes[0].set_title("Optimal model size (band: IsoFLOP 95% bootstrap)")
    axes[1].set_title("Optimal training tokens")
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def _loss_vs_flops_axes(ax, xlabel: str, title: str) -> None:
    """Log-log loss against FLOPs, with readable ticks: the frame of the frontier and curve plots."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    format_axis(ax.xaxis, "flops")
    format_axis(ax.yaxis, "loss")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)

def plot_loss_frontier(fit, path, curves: pd.DataFrame | None = None):
    """The envelope L(C): lowest loss reached at each compute, with its power-law fit, per objective."""
    fit = parse_fit(fit)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    handles = []
    for objective in _objectives(fit):
        color = OBJECTIVE_COLORS[objective]
        env = fit.method(objective, "envelope")
        points = env.points
        if curves is not None and len(curves):
            mine = main_study(curves[curves["objective"] == objective])
            ax.scatter(mine["flops"], mine["loss"], s=2, color=color, alpha=0.08, rasterized=True)
        if points:
            ax.plot([p.flops for p in points], [p.loss for p in points], "o", ms=4, color=color,
                    label=f"{objective.upper()} envelope points")
            if env.usable and env.law.has_loss_law:  # drawn over its own points only: no extrapolation
                c = np.logspace(math.log10(min(p.flops for p in points)), math.log10(max(p.flops for p in points)),
                                100)
                ax.plot(c, env.law.loss(c), color=color, lw=1.5,
                        label=f"{objective.upper()} L(C) ∝ C^{env.law.s:.4f}")
        if not env.usable:
            handles.append((_not_shown_handle(color, "-"), _wrapped(not_shown_label(objective, "envelope", env), 60)))
    _loss_vs_flops_axes(ax, "training compute C (FLOPs)", "Loss frontier: lower envelope of all training curves")
    shown, labels = ax.get_legend_handles_labels()
    ax.legend(shown + [h for h, _ in handles], labels + [label for _, label in handles], fontsize=7)
    save_figure(fig, path)
    return fig


def plot_training_curves(curves: pd.DataFrame, objective: str, path):
    """Every from-scratch training curve of one objective, loss vs FLOPs, coloured by model size."""
    mine = main_study(curves[curves["objective"] == objective])
    fig, ax = plt.subplots(figsize=(7.5, 5))
    if len(mine):
        sizes = mine["n_params"].astype(float)
        norm = colors.LogNorm(vmin=sizes.min(), vmax=max(sizes.max(), sizes.min() * 1.01))
        cmap = plt.get_cmap("plasma")
        for _run_id, run in mine.groupby("run_id", sort=False):
            run = run.sort_values("flops")
            run = run[run["flops"] > 0]
            ax.plot(run["flops"], run["loss"], color=cmap(0.9 * norm(run["n_params"].iloc[0])), lw=0.8, alpha=0.8)
        mappable = plt.cm.ScalarMappable(norm=norm, cmap=colors.ListedColormap(cmap(np.linspace(0, 0.9, 256))))
        bar = fig.colorbar(mappable, ax=ax)
        bar.set_label("model size N (non-embedding parameters)")
        bar.ax.yaxis.set_major_formatter(ticker.FuncFormatter(si_label))
        bar.ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        low, high = np.percentile(mine["loss"], [0.5, 99.5])
        ax.set_ylim(low * 0.98, high * 1.02)
    _loss_vs_flops_axes(ax, "training compute so far (FLOPs)",
                        f"Training curves, {OBJECTIVE_NAMES.get(objective, objective)} ({mine['run_id'].nunique()} runs)")
    save_figure(fig, path)
    return fig


def plot_parametric(fit, objective: str, path, runs: pd.DataFrame | None = None, budgets=None):
    """Contours of the fitted L(N, D) = E + A/N^α + B/D^β, the efficient frontier and IsoFLOP lines."""
    fit = parse_fit(fit)
    entry = fit.method(objective, "parametric")
    law = entry.law
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    if not entry.usable:
        _parametric_not_shown(ax, fit, entry, objective, runs)
        save_figure(fig, path)
        return fig
    E, A, B, alpha, beta = law.E, law.A, law.B, law.alpha, law.beta
    if runs is not None and len(runs):
        mine = main_study(runs[runs["objective"] == objective])
        n_lo, n_hi = mine["n_params"].min() / 3, mine["n_params"].max() * 10
        d_lo, d_hi = mine["tokens"].min() / 3, mine["tokens"].max() * 10
    else:
        mine, (n_lo, n_hi), (d_lo, d_hi) = None, (1e6, 1e11), (1e8, 1e13)
    n = np.logspace(math.log10(n_lo), math.log10(n_hi), 200)
    d = np.logspace(math.log10(d_lo), math.log10(d_hi), 200)
    N, D = np.meshgrid(n, d)
    L = E + A / N ** alpha + B / D ** beta
    levels = np.unique(np.round(np.quantile(L, np.linspace(0.02, 0.98, 14)), 3))
    contour = ax.contourf(N, D, L, levels=levels, cmap="viridis_r", alpha=0.85)
    ax.contour(N, D, L, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
    bar = fig.colorbar(contour, ax=ax)
    bar.set_label("predicted loss L(N, D)")
    (k_n, a), (k_d, b) = _parametric_allocation(law)
    c_frontier = FLOPS_PER_PARAM_TOKEN * N.min() * D.min(), FLOPS_PER_PARAM_TOKEN * N.max() * D.max()
    c = np.logspace(math.log10(c_frontier[0]), math.log10(c_frontier[1]), 300)
    ax.plot(k_n * c ** a, k_d * c ** b, color="w", lw=2.6)
    ax.plot(k_n * c ** a, k_d * c ** b, color="k", lw=1.0, label=f"efficient frontier (a={a:.3f})")
    for budget in budgets if budgets is not None else _fit_budgets(fit, objective):
        ax.plot(n, budget / (FLOPS_PER_PARAM_TOKEN * n), color="w", lw=0.8, ls="--")
        x = math.sqrt(n.min() * n.max())
        y = budget / (FLOPS_PER_PARAM_TOKEN * x)
        if d.min() < y < d.max():
            ax.annotate(_power_of_ten(budget), (x, y), color="w", fontsize=7, ha="center", va="bottom")
    if mine is not None:
        ax.scatter(mine["n_params"], mine["tokens"], s=8, color="k", alpha=0.7, label="runs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(n.min(), n.max())
    ax.set_ylim(d.min(), d.max())
    format_axis(ax.xaxis, "params")
    format_axis(ax.yaxis, "tokens")
    ax.set_xlabel("model size N (non-embedding parameters)")
    ax.set_ylabel("training tokens D")
    ax.set_title(f"Parametric fit, {OBJECTIVE_NAMES.get(objective, objective)}: "
                 f"E={E:.3g}, α={alpha:.3g}, β={beta:.3g}\n(dashed: IsoFLOP lines C = 6·N·D)")
    ax.legend(fontsize=8, loc="lower left")
    save_figure(fig, path)
    return fig


def _parametric_not_shown(ax, fit, entry, objective, runs):
    """The runs and the reason, where an unfitted or unidentified parametric law would have been drawn."""
    mine = main_study(runs[runs["objective"] == objective]) if runs is not None and len(runs) else None
    if mine is not None and len(mine):
        ax.scatter(mine["n_params"], mine["tokens"], s=8, color="k", alpha=0.7, label="runs")
        ax.set_xscale("log")
        ax.set_yscale("log")
        format_axis(ax.xaxis, "params")
        format_axis(ax.yaxis, "tokens")
        ax.set_xlabel("model size N (non-embedding parameters)")
        ax.set_ylabel("training tokens D")
    ax.text(0.5, 0.5, _wrapped(f"parametric fit {entry.why_unusable}", 55), ha="center", va="center",
            transform=ax.transAxes, fontsize=9, bbox={"facecolor": "w", "alpha": 0.85, "edgecolor": "0.6"})
    ax.set_title(f"Parametric fit, {OBJECTIVE_NAMES.get(objective, objective)}: no law drawn")


def _fit_budgets(fit, objective):
    return [o.budget for o in fit.method(objective, "isoflop").optima]


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


def plot_loss_by_identity(runs: pd.DataFrame, path):
    """Final loss vs N on the valid sequences of each identity-to-train bin: one panel per bin (columns)
    and objective (rows), a line per IsoFLOP budget, other runs of the main study as grey markers."""
    bins = identity_bins(runs)
    study = (main_study(runs) if len(runs) else runs).reset_index(drop=True)
    objectives = [o for o in ("clm", "mlm") if bins and len(study) and
                  study.loc[study["objective"] == o, [f"{IDENTITY_LOSS_PREFIX}{b}" for b in bins]].notna().any().any()]
    if not objectives:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.text(0.5, 0.5, _wrapped("no per-identity losses: the runs were trained without the identity table "
                                   "(data.identity.enabled, results/data/identity/valid.tsv)", 60),
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        save_figure(fig, path)
        return fig
    fig, axes = plt.subplots(len(objectives), len(bins), figsize=(3.2 * len(bins) + 0.6, 3.3 * len(objectives)),
                             sharex=True, sharey="row", squeeze=False)
    budgets = study["budget"].astype(float) if "budget" in study.columns else pd.Series(np.nan, index=study.index)
    finite = sorted(budgets.dropna().unique())
    norm = colors.LogNorm(vmin=min(finite), vmax=max(finite)) if finite else None
    cmap = plt.get_cmap("viridis")
    for row, objective in enumerate(objectives):
        mine = study[study["objective"] == objective]
        for col, label in enumerate(bins):
            ax = axes[row][col]
            column = f"{IDENTITY_LOSS_PREFIX}{label}"
            for budget in finite:
                group = mine[(budgets[mine.index] == budget).to_numpy() & mine[column].notna().to_numpy()]
                group = group.sort_values("n_params")
                if len(group):
                    ax.plot(group["n_params"], group[column], "o-", ms=4, lw=1.2, color=cmap(0.92 * norm(budget)),
                            label=f"{_power_of_ten(budget)} FLOPs")
            others = mine[budgets[mine.index].isna().to_numpy() & mine[column].notna().to_numpy()]
            if len(others):
                ax.scatter(others["n_params"], others[column], marker="D", s=20, color="0.4", zorder=3,
                           label="other runs")
            n_seqs = _bin_sequences(runs, label)
            what = "no hit in training" if label == "no_hit" else f"identity {label}"
            ax.set_title(f"{OBJECTIVE_NAMES.get(objective, objective)}\n{what}"
                         + (f" · {n_seqs:,} valid seqs" if n_seqs is not None else ""), fontsize=9)
            ax.set_xscale("log")
            format_axis(ax.xaxis, "params")
            ax.grid(True, which="major", alpha=0.3)
            if col == 0:
                ax.set_ylabel("final loss on the bin (nats/token)")
            if row == len(objectives) - 1:
                ax.set_xlabel("model size N")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes.flat:  # the legend of the panel that holds the most runs
        more = ax.get_legend_handles_labels()
        if len(more[0]) > len(handles):
            handles, labels = more
    if handles:
        fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(len(handles), 6),
                   bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Final validation loss by identity to the training set", fontsize=11)
    fig.tight_layout(rect=(0, 0.05 if handles else 0, 1, 1))
    save_figure(fig, path)
    return fig


def _bin_sequences(runs: pd.DataFrame, label: str):
    """Valid sequences in an identity bin (the same for every run of a study), or None if not recorded."""
    column = f"{IDENTITY_SEQUENCES_PREFIX}{label}"
    if column not in runs.columns:
        return None
    values = pd.to_numeric(runs[column], errors="coerce").dropna()
    return int(values.max()) if len(values) else None


BACKTESTED_METHODS = ("isoflop", "parametric")  # what backtest.backtest covers


def _backtest_slots(fit):
    """[(objective, method, MethodFit, backtest result or None, why nothing is drawn or None)], in plot order.
    An objective whose methods all fail for one reason (e.g. no IsoFLOP grid) gets one slot, method None."""
    slots = []
    for objective in _objectives(fit):
        results = ((fit.data.get("objectives") or {}).get(objective) or {}).get("backtest")
        own = []
        for method in BACKTESTED_METHODS:
            entry = fit.method(objective, method)
            result = (results or {}).get(method)
            why = None
            if not entry.usable:
                why = entry.why_unusable
            elif not isinstance(result, dict):
                why = "no backtest in fit.json (rerun `plmscale fit`)"
            elif "skipped" in result:
                why = result["skipped"]
            own.append((objective, method, entry, None if why else result, why))
        reasons = {why for *_, why in own}
        shared = len(own) > 1 and len(reasons) == 1 and None not in reasons
        slots.extend([(objective, None, None, None, reasons.pop())] if shared else own)
    return slots


def _slot_note(ax, x, text):
    ax.text(x, 0.5, _wrapped(text, 45), rotation=90, ha="center", va="center", fontsize=6.5, color="0.3",
            transform=ax.get_xaxis_transform())


def _relative(ci, observed, scale):
    """An interval relative to an observed value: percent (scale 'pct') or ratio (scale 'ratio')."""
    if not ci or not observed:
        return None
    return [100 * (c / observed - 1) for c in ci] if scale == "pct" else [c / observed for c in ci]


def _point_with_interval(ax, x, y, ci, **style):
    """A marker with its interval as an error bar (no bar without an interval)."""
    if y is None or not math.isfinite(y):
        return
    yerr = None if ci is None else [[max(y - ci[0], 0)], [max(ci[1] - y, 0)]]
    ax.errorbar([x], [y], yerr=yerr, fmt=style.pop("fmt", "o"), capsize=3, **style)


def plot_backtest(fit, path):
    """Backtests of the identified fits: rollout (fit below the top budget, forecast it) as forecast vs
    observed with intervals, for the loss and N_opt; and the leave-one-budget-out spread of N_opt at
    each prediction target. Methods that are not identified show their reason, never a value."""
    fit = parse_fit(fit)
    slots = _backtest_slots(fit)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    loss_ax, n_ax, lobo_ax = axes
    for x, (objective, method, _entry, result, why) in enumerate(slots):
        color = OBJECTIVE_COLORS[objective]
        rollout = (result or {}).get("rollout") or {}
        if why or "error" in rollout:
            for ax in (loss_ax, n_ax):
                _slot_note(ax, x, why or f"no rollout: {rollout['error']}")
        else:
            observed, forecast = rollout["observed"], rollout["forecast"]
            _point_with_interval(loss_ax, x - 0.12, 0.0, _relative(observed.get("loss_ci"), observed["loss"], "pct"),
                                 color="k", fmt="s", ms=5)
            _point_with_interval(loss_ax, x + 0.12, rollout["loss_error_pct"],
                                 _relative(forecast.get("loss_ci"), observed["loss"], "pct"), color=color, ms=6)
            _point_with_interval(n_ax, x - 0.12, 1.0, _relative(observed.get("n_opt_ci"), observed["n_opt"], "ratio"),
                                 color="k", fmt="s", ms=5)
            _point_with_interval(n_ax, x + 0.12, rollout["n_opt_ratio"],
                                 _relative(forecast.get("n_opt_ci"), observed["n_opt"], "ratio"), color=color, ms=6)
            for ax in (loss_ax, n_ax):
                ax.text(x, 0.97, f"held out:\n{_power_of_ten(rollout['held_out_budget'])}", ha="center", va="top",
                        fontsize=7, color="0.3", transform=ax.get_xaxis_transform())
        lobo = (result or {}).get("leave_one_budget_out") or {}
        sensitivity = lobo.get("sensitivity") or []
        if why or "error" in lobo or not sensitivity:
            _slot_note(lobo_ax, x, why or (f"no leave-one-out: {lobo['error']}" if "error" in lobo
                                            else "no fit.predict_flops targets"))
            continue
        offsets = np.linspace(-0.2, 0.2, len(sensitivity)) if len(sensitivity) > 1 else [0.0]
        for offset, spread, full in zip(offsets, sensitivity, lobo.get("full") or []):
            if full.get("n_opt") and spread.get("n_opt_min") and spread.get("n_opt_max"):
                low, high = spread["n_opt_min"] / full["n_opt"], spread["n_opt_max"] / full["n_opt"]
                lobo_ax.vlines(x + offset, low, high, color=color, lw=2.5, alpha=0.7)
                lobo_ax.plot([x + offset], [1.0], "D", color=color, ms=5, markeredgecolor="k")
                lobo_ax.text(x + offset, 0.97, f"at {_power_of_ten(spread['flops'])}\nloss spread\n"
                             f"{spread.get('loss_spread_pct') or 0:.1f}%", ha="center", va="top", fontsize=6.5,
                             color="0.3", transform=lobo_ax.get_xaxis_transform())
    ticks = [f"{objective.upper()}\n{METHOD_STYLES[method][1] if method else 'all methods'}"
             for objective, method, *_ in slots]
    for ax in axes:
        ax.set_xticks(range(len(slots)), ticks)
        ax.set_xlim(-0.6, len(slots) - 0.4)
        ax.grid(True, axis="y", alpha=0.3)
    loss_ax.axhline(0, color="0.5", lw=0.8)
    loss_ax.set_ylabel("compute-optimal loss at the held-out budget,\n% relative to the observed optimum")
    loss_ax.set_title("Rollout: loss (■ observed, ● forecast; 95% intervals)", fontsize=10)
    n_ax.axhline(1, color="0.5", lw=0.8)
    n_ax.set_yscale("log")
    n_ax.set_ylabel("N_opt at the held-out budget / observed N_opt")
    n_ax.set_title("Rollout: model size (■ observed, ● forecast)", fontsize=10)
    lobo_ax.axhline(1, color="0.5", lw=0.8)
    lobo_ax.set_yscale("log")
    lobo_ax.set_ylabel("N_opt forecast leaving one budget out / all budgets")
    lobo_ax.set_title("Leave-one-budget-out at each prediction target", fontsize=10)
    for ax in (n_ax, lobo_ax):
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.yaxis.set_minor_locator(ticker.LogLocator(base=10, subs=(2, 5), numticks=12))
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
        low, high = ax.get_ylim()
        ax.set_ylim(min(low, 0.5), max(high, 2.0) * 1.6)  # room for the labels at the top
    low, high = loss_ax.get_ylim()
    loss_ax.set_ylim(low, high + 0.25 * (high - low))
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def plot_repetition(runs: pd.DataFrame, curves: pd.DataFrame, summary: dict, path):
    """The repetition study (plmscale.scaling.repetition): validation loss against tokens of the repeated
    restricted source (dashed, epochs marked where D = k·U) and of the mixture (solid), one panel per
    objective, with R* and its status in the panel's title."""
    objectives = sorted(runs["objective"].unique()) if len(runs) else ["clm"]
    fig, axes = plt.subplots(1, len(objectives), figsize=(6.5 * len(objectives), 4.8), squeeze=False)
    sizes = sorted(runs["n_params"].unique()) if len(runs) else []
    palette = plt.get_cmap("viridis")
    color_of = {n: palette(0.85 * i / max(len(sizes) - 1, 1)) for i, n in enumerate(sizes)}
    for ax, objective in zip(axes[0], objectives):
        mine = runs[runs["objective"] == objective].sort_values(["kind", "unique_tokens", "tokens"])
        for run in mine.itertuples():
            curve = curves[curves["run_id"] == run.run_id].sort_values("tokens")
            curve = curve[curve["tokens"] > 0]
            repeated = run.kind == "rep"
            label = (f"{run.model}: {run.source}, U={si_label(float(f'{run.unique_tokens:.2g}'))} tokens" if repeated
                     else f"{run.model}: mixture")
            color = color_of[run.n_params]
            style = {"ls": "--" if repeated else "-", "lw": 1.2, "alpha": 0.9}
            if len(curve):
                ax.plot(curve["tokens"], curve["loss"], color=color, label=label, **style)
            ax.plot([run.tokens], [run.loss], marker="o" if repeated else "s", color=color, ms=5,
                    label=None if len(curve) else label, ls="none")
            if repeated and len(curve) > 1:
                epochs = 2.0 ** np.arange(0, 12)
                marks = epochs * run.unique_tokens
                marks = marks[(marks >= curve["tokens"].min()) & (marks <= curve["tokens"].max())]
                losses = np.interp(np.log(marks), np.log(curve["tokens"]), curve["loss"])
                ax.plot(marks, losses, "v", color=color, ms=5)
                for mark, loss in zip(marks, losses):
                    ax.annotate(f"{mark / run.unique_tokens:g} ep", (mark, loss), textcoords="offset points",
                                xytext=(0, 6), ha="center", fontsize=7, color=color)
        ax.set_xscale("log")
        format_axis(ax.xaxis, "tokens")
        # Budgets often span less than a decade: label the 2x, 3x and 5x minor ticks too.
        ax.xaxis.set_minor_formatter(ticker.FuncFormatter(
            lambda value, pos: si_label(value) if f"{value:.0e}"[0] in "235" else ""))
        ax.set_xlabel("tokens processed D")
        ax.set_ylabel("validation loss (nats/token, the mixture's valid split)")
        entry = summary.get("objectives", {}).get(objective, {})
        if entry.get("r_star") is not None:
            low, high = entry["interval"]
            verdict = {"identified": f"R* = {entry['r_star']:.3g} [{low:.3g}, {high:.3g}]",
                       "bounded_below": f"R* > {min(low, entry['profile_interval'][0]):.3g} (bounded below only)",
                       "bounded_above": f"R* < {max(high, entry['profile_interval'][1]):.3g}"}[entry["status"]]
        else:
            verdict = "R* not fitted"
        ax.set_title(f"{OBJECTIVE_NAMES.get(objective, objective)}: repeated vs mixture\n{verdict}", fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
        if len(mine):
            ax.legend(fontsize=7)
    save_figure(fig, path)
    return fig


# ------------------------------------------------------------------------------------------------ driver

@dataclass(frozen=True)
class PlotInputs:
    """What the figures are drawn from: the fit, the runs and curves tables, the predictions to mark."""
    fit: FitFile
    runs: pd.DataFrame
    curves: pd.DataFrame
    predictions: dict | None = None


@dataclass(frozen=True)
class Plot:
    """One figure: how to draw it (inputs, path) -> Figure, and its caption in the report (report/*.rst)."""
    draw: Callable[[PlotInputs, Path], object]
    caption: str
    subcategory: str


def _per_objective(prefix, draw, caption, subcategory):
    """One figure per objective, named <prefix>_clm and <prefix>_mlm."""
    return {f"{prefix}_{objective}": Plot(partial(draw, objective=objective), caption, subcategory)
            for objective in ("clm", "mlm")}


# name -> figure: the single list of the scaling stage's figures. The workflow's plot rule takes its
# outputs (and their report captions) from here; plot_all draws exactly these.
PLOTS = {
    **_per_objective("isoflop", lambda i, path, objective: plot_isoflop(i.fit, i.runs, objective, path),
                     "isoflop.rst", "IsoFLOP profiles"),
    "optimal_allocation": Plot(lambda i, path: plot_optimal_allocation(i.fit, path, predictions=i.predictions),
                               "optimal_allocation.rst", "Compute-optimal allocation"),
    "loss_frontier": Plot(lambda i, path: plot_loss_frontier(i.fit, path, curves=i.curves),
                          "loss_frontier.rst", "Loss frontier"),
    **_per_objective("curves", lambda i, path, objective: plot_training_curves(i.curves, objective, path),
                     "training_curves.rst", "Training curves"),
    **_per_objective("parametric", lambda i, path, objective: plot_parametric(i.fit, objective, path, runs=i.runs),
                     "parametric.rst", "Parametric fit"),
    "transfer": Plot(lambda i, path: plot_transfer(i.runs, path, fit=i.fit), "transfer.rst", "Transfer"),
    "backtest": Plot(lambda i, path: plot_backtest(i.fit, path), "backtest.rst", "Backtest"),
    "loss_by_identity": Plot(lambda i, path: plot_loss_by_identity(i.runs, path), "loss_by_identity.rst",
                             "Loss by identity to training"),
}
PLOT_NAMES = list(PLOTS)


def plot_all(fit, runs: pd.DataFrame, curves: pd.DataFrame | None, out_dir, predictions=None) -> dict:
    """Every figure of PLOTS into out_dir as <name>.png/.svg/.pdf; returns {name: png path}."""
    out_dir = Path(out_dir)
    curves = curves if curves is not None else pd.DataFrame(columns=["run_id", "objective", "n_params", "flops",
                                                                     "tokens", "loss"])
    inputs = PlotInputs(parse_fit(fit), runs, curves, predictions)
    written = {}
    for name, plot in PLOTS.items():
        written[name] = out_dir / f"{name}.png"
        plt.close(plot.draw(inputs, written[name]))
    return written


def predictions_for_plot(predictions: dict | None) -> dict:
    """predictions.json ({objective: [predict() results]}) -> {objective: {"n": [(C, N)], "d": [(C, D)]}},
    the IsoFLOP predictions that have both a size and a token count."""
    out = {}
    for objective, entries in (predictions or {}).items():
        for entry in entries:
            iso = entry["methods"]["isoflop"]
            if iso["n_opt"] is not None and iso["d_opt"] is not None:
                slot = out.setdefault(objective, {"n": [], "d": []})
                slot["n"].append((entry["flops"], iso["n_opt"]))
                slot["d"].append((entry["flops"], iso["d_opt"]))
    return out
