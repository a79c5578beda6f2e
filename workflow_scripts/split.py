"""Snakemake script: whole clusters to train/valid/test (rule split)."""
from plmscale.data.split import split_by_cluster
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log[0])
out = snakemake.output
split_by_cluster(snakemake.input.fasta, snakemake.input.clusters, snakemake.input.provenance,
                 {"train": out.train, "valid": out.valid, "test": out.test}, out.stats,
                 valid_fraction=snakemake.params.valid_fraction, test_fraction=snakemake.params.test_fraction,
                 salt=snakemake.params.salt, sources=snakemake.params.sources,
                 threads=snakemake.threads, mem_mb=snakemake.resources.mem_mb)
