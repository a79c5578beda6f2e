"""Snakemake entry point of rule calibrate_lr: the lr sweep's metrics -> lr.json and lr.png."""

import json

from plmscale.grid.calibration import write_calibration
from plmscale.logging_setup import log_to_file
from plmscale.plots.calibration import plot_calibration

log_to_file(snakemake.log[0])
result = write_calibration(snakemake.input.metrics, json.loads(snakemake.params.train), snakemake.output.summary)
plot_calibration(result, snakemake.output.plot)
