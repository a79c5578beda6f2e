"""Snakemake entry point of rule transfer_sweep: the sweep's metrics + curves -> transfer.json and transfer_sweep.png."""

import json

from plmscale.logging_setup import log_to_file
from plmscale.plots.transfer import plot_transfer_sweep
from plmscale.scaling.transfer import write_transfer_sweep

log_to_file(snakemake.log[0])
summary = write_transfer_sweep(json.loads(snakemake.params.plan), snakemake.input.metrics, snakemake.input.curves,
                               snakemake.output.summary, n_boot=snakemake.params.bootstrap, seed=snakemake.params.seed)
plot_transfer_sweep(summary, snakemake.output.plot)
