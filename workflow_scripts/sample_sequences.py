"""Snakemake entry point of rule sample_sequences: an exported CLM run -> a FASTA of sampled sequences."""

from plmscale.data.atomic import write_text
from plmscale.export.generate import write_samples
from plmscale.export.runs import load_run
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log[0])
loaded = load_run(snakemake.input.export, None, None)
with write_text(snakemake.output[0]) as handle:
    write_samples(handle.write, loaded, snakemake.params.n, snakemake.params.seed)
