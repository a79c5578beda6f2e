"""rule fit: runs.csv + curves.csv -> fit.json (every method, both objectives, bootstrap intervals,
identification verdicts, backtests)."""

import json
import logging
import os

# Before numpy loads: OpenBLAS threads on the fits' tiny matrices cost more than they give.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pandas as pd  # noqa: E402

from plmscale.logging_setup import log_to_file  # noqa: E402
from plmscale.scaling.cli_fit import rollout_summary, summary_table  # noqa: E402
from plmscale.scaling.fit import fit_all  # noqa: E402
from plmscale.scaling.fitfile import write_fit  # noqa: E402

log_to_file(snakemake.log[0])
runs = pd.read_csv(snakemake.input.runs, low_memory=False)
curves = pd.read_csv(snakemake.input.curves, low_memory=False)
fit = fit_all(runs, curves, bootstrap=snakemake.params.bootstrap, seed=snakemake.params.seed,
              min_points_per_budget=snakemake.params.min_points_per_budget,
              source=snakemake.input.runs, curves_source=snakemake.input.curves,
              predict_flops=json.loads(snakemake.params.predict_flops),
              identify_criteria=json.loads(snakemake.params.identify),
              drop_highest_loss=snakemake.params.drop_highest_loss, run_backtest=snakemake.params.backtest,
              isoflop_bootstrap=snakemake.params.isoflop_bootstrap, loss_column=snakemake.params.loss_column,
              grid_objectives=snakemake.params.grid_objectives)
write_fit(fit, snakemake.output[0])
logging.getLogger("plmscale.fit").info("\n%s\n%s", summary_table(fit), rollout_summary(fit))
