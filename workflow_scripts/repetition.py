"""Snakemake entry point of rule repetition: the study's metrics + curves -> repetition.json and repetition.png."""

from plmscale.logging_setup import log_to_file
from plmscale.scaling.repetition import write_repetition

log_to_file(snakemake.log[0])
write_repetition(snakemake.input.metrics, snakemake.input.curves, snakemake.output.summary, snakemake.output.plot,
                 fit_points=snakemake.params.fit_points, bootstrap=snakemake.params.bootstrap,
                 seed=snakemake.params.seed, train_manifest=snakemake.input.train_manifest)
