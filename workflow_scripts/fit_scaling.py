"""rule fit: runs.csv + curves.csv -> fit.json (every method, both objectives, bootstrap intervals,
identification verdicts, backtests, allocations under each FLOPs definition; the measured cost law is
rule measured_cost's; with fit.curve_law, the loss-curve law on each own run's curve.csv)."""

import json
import logging
import os

# Before numpy loads: OpenBLAS threads on the fits' tiny matrices cost more than they give.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# The processes that share the fit's objectives and refits (scaling/fit_workers.py): the cores Snakemake gave it.
os.environ.setdefault("PLMSCALE_FIT_WORKERS", str(snakemake.threads))

import pandas as pd  # noqa: E402

from plmscale.logging_setup import log_to_file  # noqa: E402
from plmscale.scaling.allocation import with_cost_allocations  # noqa: E402
from plmscale.scaling.compare import comparison_lines  # noqa: E402
from plmscale.scaling.curve_law import curve_law_entry  # noqa: E402
from plmscale.scaling.fit import fit_all  # noqa: E402
from plmscale.scaling.fitfile import write_fit  # noqa: E402
from plmscale.scaling.settings import FitSettings  # noqa: E402
from plmscale.scaling.summary import rollout_summary, summary_table  # noqa: E402

log_to_file(snakemake.log[0])
settings = FitSettings.from_fit_section(json.loads(snakemake.params.fit), snakemake.params.grid_objectives)
runs = pd.read_csv(snakemake.input.runs, low_memory=False)
curves = pd.read_csv(snakemake.input.curves, low_memory=False)
fit = fit_all(runs, curves, settings, source=snakemake.input.runs, curves_source=snakemake.input.curves)
fit = with_cost_allocations(fit, **json.loads(snakemake.params.cost_shapes))  # N_opt per FLOPs definition
run_curves = getattr(snakemake.input, "run_curves", None)  # an adaptive round's fit (rules/design.smk) has none
if settings.curve_law and run_curves is not None:
    fit["curve_law"] = curve_law_entry(run_curves, runs, runs_source=snakemake.input.runs)
write_fit(fit, snakemake.output[0])
logging.getLogger("plmscale.fit").info("\n%s\n%s\n%s", summary_table(fit), rollout_summary(fit),
                                       "\n".join(comparison_lines(fit.get("comparison"))))
