"""Snakemake script: exact duplicates removed across sources (rule dedup)."""
from plmscale.data.dedup import dedup
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log[0])
dedup(snakemake.params.clean_fastas, snakemake.output.fasta, snakemake.output.provenance, snakemake.output.stats,
      threads=snakemake.threads, mem_mb=snakemake.resources.mem_mb)
