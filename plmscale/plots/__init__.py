"""Every figure of plmscale, one module per figure family. Each plot_* function draws one figure from what the
library computed (fit.json, the runs and curves tables, a study's summary), writes it next to `path` and
returns the matplotlib Figure, so tests can read what it shows (its lines, points, labels, titles).

This package sits at the top of the layers: it reads plmscale.scaling and plmscale.grid, and nothing below it
imports it (nor matplotlib). The scaling stage's figures are listed once, in registry.PLOTS; the figures of the
other rules (repetition, closed loop, lr calibration, cross-check) are drawn by their workflow scripts.
"""

import matplotlib

matplotlib.use("Agg")  # files only; no display on cluster nodes

# The figure functions, importable from the package whatever module draws them.
from plmscale.plots.allocation import plot_optimal_allocation  # noqa: E402
from plmscale.plots.backtest import plot_backtest  # noqa: E402
from plmscale.plots.calibration import plot_calibration  # noqa: E402
from plmscale.plots.closed_loop import plot_closed_loop  # noqa: E402
from plmscale.plots.cross_check import plot_cross_check, write_cross_check  # noqa: E402
from plmscale.plots.frontier import plot_loss_frontier, plot_training_curves  # noqa: E402
from plmscale.plots.generation import plot_generation  # noqa: E402
from plmscale.plots.identity import plot_loss_by_identity  # noqa: E402
from plmscale.plots.isoflop import plot_isoflop  # noqa: E402
from plmscale.plots.parametric import plot_parametric  # noqa: E402
from plmscale.plots.registry import PLOT_NAMES, PLOTS, plot_all, predictions_for_plot  # noqa: E402
from plmscale.plots.repetition import plot_repetition  # noqa: E402
from plmscale.plots.transfer import plot_transfer  # noqa: E402

__all__ = ["PLOT_NAMES", "PLOTS", "plot_all", "predictions_for_plot", "plot_backtest", "plot_calibration",
           "plot_closed_loop", "plot_cross_check", "write_cross_check", "plot_loss_frontier",
           "plot_training_curves", "plot_loss_by_identity", "plot_isoflop", "plot_optimal_allocation",
           "plot_parametric", "plot_repetition", "plot_transfer", "plot_generation"]
