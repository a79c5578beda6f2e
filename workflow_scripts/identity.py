"""Snakemake script: valid/test identity to the train split, binned (rule identity)."""
import json

from plmscale.data.identity import search_identity
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log.main)
p = snakemake.params
search_identity(snakemake.input.train, {"valid": snakemake.input.valid, "test": snakemake.input.test},
                {"valid": snakemake.output.valid, "test": snakemake.output.test}, snakemake.output.summary,
                edges=json.loads(p.bins), sensitivity=p.sensitivity, coverage=p.coverage, cov_mode=p.cov_mode,
                evalue=p.evalue, max_queries=p.max_queries, extra_args=json.loads(p.extra_args),
                threads=snakemake.threads,
                mem_mb=snakemake.resources.mem_mb, tmp_root=snakemake.config["data"]["identity"]["tmp_dir"],
                mmseqs_log=snakemake.log.mmseqs)
