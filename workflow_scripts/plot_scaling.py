"""rule plot: fit.json + tables (+ predictions) -> results/scaling/<figure>.png/.svg/.pdf."""

import json
from pathlib import Path

import pandas as pd

from plmscale.logging_setup import log_to_file
from plmscale.plots import plot_all, predictions_for_plot
from plmscale.scaling.fitfile import read_fit

log_to_file(snakemake.log[0])
with open(snakemake.input.predictions) as handle:
    predictions = json.load(handle)
plot_all(read_fit(snakemake.input.fit), pd.read_csv(snakemake.input.runs, low_memory=False),
         pd.read_csv(snakemake.input.curves, low_memory=False), Path(snakemake.output[0]).parent,
         predictions=predictions_for_plot(predictions))
