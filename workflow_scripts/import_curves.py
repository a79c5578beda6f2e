"""rule import_curves: released training curves -> imported runs/curves tables."""

from plmscale.logging_setup import log_to_file
from plmscale.scaling.importer import import_curves, load_import_config
from plmscale.scaling.table import write_tables

log_to_file(snakemake.log[0])
runs, curves = import_curves(snakemake.params.curves_dir, load_import_config(snakemake.input.import_config))
write_tables(runs, curves, snakemake.output.runs, snakemake.output.curves)
