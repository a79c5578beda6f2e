"""Snakemake script: the first copy of each sequence in one dedup partition (rule dedup_partition)."""
from plmscale.data.dedup import dedup_partition
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log[0])
out = snakemake.output
dedup_partition(dict(zip(snakemake.params.sources, snakemake.input)),
                {"kept": out.kept, "provenance": out.provenance, "ids": out.ids, "stats": out.stats},
                n_partitions=snakemake.params.n_partitions, mem_mb=snakemake.resources.mem_mb)
