"""Snakemake entry point of rule sample_sequences: an exported CLM run -> a FASTA of sampled sequences."""

from plmscale.data.atomic import write_text
from plmscale.export.generate import sample, to_fasta
from plmscale.export.runs import load_run
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log[0])
loaded = load_run(snakemake.input.export, None, None)
sequences = sample(loaded, snakemake.params.n, seed=snakemake.params.seed)
with write_text(snakemake.output[0]) as handle:
    handle.write(to_fasta(sequences, loaded.run_id, snakemake.params.seed))
