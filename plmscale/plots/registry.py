"""PLOTS, the single list of the scaling stage's figures (the plot rule's outputs and report captions come
from it), and plot_all, which draws exactly these from fit.json, runs.csv, curves.csv and the predictions."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from plmscale.plots.allocation import plot_optimal_allocation
from plmscale.plots.backtest import plot_backtest
from plmscale.plots.cost_models import plot_cost_models
from plmscale.plots.design import plot_design
from plmscale.plots.frontier import plot_loss_frontier, plot_training_curves
from plmscale.plots.generation import plot_generation
from plmscale.plots.identity import plot_loss_by_identity
from plmscale.plots.isoflop import plot_isoflop
from plmscale.plots.parametric import plot_parametric
from plmscale.plots.transfer import plot_transfer
from plmscale.scaling.fitfile import FitFile, parse_fit


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
    "cost_models": Plot(lambda i, path: plot_cost_models(i.fit, path), "cost_models.rst", "Cost models"),
}
PLOT_NAMES = list(PLOTS)
# The adaptive rounds' figure (rules/design.smk draws it from design.json and the runs table, plots/design.py).
DESIGN_FIGURE = Plot(lambda design, runs, path: plot_design(design, runs, path), "design.rst", "Adaptive rounds")
# Generation that is measured (rules/generation.smk draws it from generation.json, plots/generation.py).
GENERATION_FIGURE = Plot(lambda summary, path: plot_generation(summary, path), "generation.rst", "Generation")


def plot_all(fit, runs: pd.DataFrame, curves: pd.DataFrame | None, out_dir, predictions=None) -> dict:
    """Every figure of PLOTS into out_dir as <name>.png/.svg/.pdf; returns {name: Figure} (closed: written,
    and still readable for what it shows)."""
    out_dir = Path(out_dir)
    curves = curves if curves is not None else pd.DataFrame(columns=["run_id", "objective", "n_params", "flops",
                                                                     "tokens", "loss"])
    inputs = PlotInputs(parse_fit(fit), runs, curves, predictions)
    figures = {}
    for name, plot in PLOTS.items():
        figures[name] = plot.draw(inputs, out_dir / f"{name}.png")
        plt.close(figures[name])
    return figures


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
