"""Snakemake script: one split's FASTA -> token shards + manifest.json (rule tokenize)."""
from pathlib import Path

from plmscale.data.tokenize import tokenize_split
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log[0])
# The id sidecars are read from next to the FASTA (split.sidecar_paths); they are inputs for Snakemake.
tokenize_split(snakemake.input.fasta, Path(snakemake.output[0]).parent, snakemake.wildcards.split,
               snakemake.params.sources, snakemake.params.max_tokens_per_shard)
