"""Snakemake entry point of rule export_run: a finished run's checkpoint -> results/export/{run_id}/."""

from pathlib import Path

from plmscale.export.files import export_run
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log[0])
results = Path(snakemake.input.metrics).parents[2]  # results/runs/{run_id}/metrics.json -> results
export_run(snakemake.wildcards.run_id, out_dir=snakemake.output[0], results=results,
           metrics=snakemake.input.metrics)
