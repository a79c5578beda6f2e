"""Snakemake script: the dedup partitions merged back into corpus order (rule dedup)."""
from plmscale.data.dedup import gather
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log[0])
inputs = snakemake.input
partitions = [{"kept": kept, "provenance": provenance, "ids": ids, "stats": stats}
              for kept, provenance, ids, stats in zip(inputs.kept, inputs.provenance, inputs.ids, inputs.stats)]
gather(snakemake.params.clean_fastas, partitions, snakemake.output.fasta, snakemake.output.provenance,
       snakemake.output.stats)
