"""Snakemake script: exact duplicates across sources (rule dedup)."""
from plmscale.data.dedup import dedup
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log[0])
dedup(dict(zip(snakemake.params.sources, snakemake.input)), snakemake.output.fasta,
      snakemake.output.provenance, snakemake.output.stats)
