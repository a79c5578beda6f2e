"""Snakemake script: one source's clean records to the dedup partitions (rule dedup_scatter)."""
from plmscale.data.dedup import scatter_source
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log[0])
scatter_source(snakemake.input[0], snakemake.params.source_index, list(snakemake.output))
