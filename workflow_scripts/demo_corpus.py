"""Snakemake script: write the generated demo corpus (rule demo_corpus)."""
import json
from pathlib import Path

from plmscale.data.demo import write_demo_corpus
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log[0])
write_demo_corpus(Path(snakemake.output.fasta[0]).parent, min_length=snakemake.params.min_length,
                  max_length=snakemake.params.max_length, **json.loads(snakemake.params.demo))
