"""Snakemake entry point of rule compare_mixed: the mixed runs and their single-objective partners'
metrics.json -> mixed.json and mixed.png."""

from plmscale.logging_setup import log_to_file
from plmscale.plots.mixed import plot_mixed
from plmscale.scaling.mixed import write_mixed

log_to_file(snakemake.log[0])
plot_mixed(write_mixed(snakemake.input.metrics, snakemake.output.summary), snakemake.output.plot)
