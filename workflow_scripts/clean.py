"""Snakemake script: clean one source (rule clean)."""
from plmscale.data.clean import clean_fasta
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log[0])
clean_fasta(snakemake.input[0], snakemake.output.fasta, snakemake.output.stats, snakemake.wildcards.source,
            snakemake.params.min_length, snakemake.params.max_length, snakemake.params.strict,
            origin=snakemake.params.origin)
