"""Snakemake entry point of rule repetition: the study's metrics + curves -> repetition.json and repetition.png."""

from plmscale.logging_setup import log_to_file
from plmscale.plots.repetition import plot_repetition
from plmscale.scaling.repetition import read_repetition_runs, write_repetition

log_to_file(snakemake.log[0])
summary = write_repetition(snakemake.input.metrics, snakemake.input.curves, snakemake.output.summary,
                           fit_points=snakemake.params.fit_points, bootstrap=snakemake.params.bootstrap,
                           seed=snakemake.params.seed, train_manifest=snakemake.input.train_manifest)
plot_repetition(*read_repetition_runs(snakemake.input.metrics, snakemake.input.curves), summary,
                snakemake.output.plot)
