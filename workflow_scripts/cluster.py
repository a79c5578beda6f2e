"""Snakemake script: MMseqs2 clustering (rule cluster)."""
import json

from plmscale.data.mmseqs import cluster_sequences
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log.main)
p = snakemake.params
cluster_sequences(snakemake.input[0], snakemake.output.clusters, snakemake.output.sizes, snakemake.output.stats,
                  method=p.method, min_seq_id=p.min_seq_id, coverage=p.coverage, cov_mode=p.cov_mode,
                  cluster_mode=p.cluster_mode, sensitivity=p.sensitivity,
                  second_level=json.loads(p.second_level), extra_args=json.loads(p.extra_args),
                  threads=snakemake.threads, mem_mb=snakemake.resources.mem_mb,
                  tmp_root=snakemake.config["data"]["cluster"]["tmp_dir"], mmseqs_log=snakemake.log.mmseqs)
