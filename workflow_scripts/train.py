"""Snakemake entry point of rules train/transfer: one grid point, in process or under torchrun."""

import json
from pathlib import Path

from plmscale.train.launch import run_training_job
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log[0])
resources = snakemake.resources
run_training_job(
    spec=json.loads(snakemake.params.spec),
    train_dir=Path(snakemake.input.train).parent,
    valid_dir=Path(snakemake.input.valid).parent,
    out_dir=Path(snakemake.output.metrics).parent,
    checkpoint_dir=snakemake.params.checkpoint_dir,
    threads=snakemake.threads,
    processes_per_node=int(resources.get("processes_per_node", 1) or 1),
    nodes=int(resources.get("nodes", 1) or 1),
)
