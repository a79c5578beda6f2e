"""rule collect: own runs' metrics.json/curve.csv (+ imported tables) -> results/scaling/runs.csv, curves.csv."""

from plmscale.logging_setup import log_to_file
from plmscale.scaling.collect import collect_and_merge
from plmscale.scaling.table import write_tables

log_to_file(snakemake.log[0])
runs, curves = collect_and_merge(snakemake.input.metrics, snakemake.input.curves,
                                 snakemake.input.get("imported_runs"), snakemake.input.get("imported_curves"),
                                 snakemake.input.get("train_manifest"))
write_tables(runs, curves, snakemake.output.runs, snakemake.output.curves)
