"""The backtests of fit.json (plmscale.scaling.backtest): rollout forecasts against what was observed, and
the leave-one-budget-out spread (backtest)."""

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker

from plmscale.plots.common import (METHOD_STYLES, OBJECTIVE_COLORS, objectives_in, power_of_ten, save_figure,
                                   wrapped)
from plmscale.scaling.fitfile import parse_fit


BACKTESTED_METHODS = ("isoflop", "parametric")  # what backtest.backtest covers


def _backtest_slots(fit):
    """[(objective, method, MethodFit, backtest result or None, why nothing is drawn or None)], in plot order.
    An objective whose methods all fail for one reason (e.g. no IsoFLOP grid) gets one slot, method None."""
    slots = []
    for objective in objectives_in(fit):
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
    ax.text(x, 0.5, wrapped(text, 45), rotation=90, ha="center", va="center", fontsize=6.5, color="0.3",
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
                ax.text(x, 0.97, f"held out:\n{power_of_ten(rollout['held_out_budget'])}", ha="center", va="top",
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
                lobo_ax.text(x + offset, 0.97, f"at {power_of_ten(spread['flops'])}\nloss spread\n"
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
