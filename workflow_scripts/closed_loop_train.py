"""rule closed_loop_train: the plan made from fit.json -> train the forecast run, or record why not."""

import json
from pathlib import Path

from plmscale.train.launch import run_training_job
from plmscale.logging_setup import log_to_file
from plmscale.scaling.closed_loop import write_not_trained
from plmscale.scaling.results import write_json

log = log_to_file(snakemake.log[0])
plan = json.loads(snakemake.params.plan)
out_dir = Path(snakemake.output.metrics).parent
write_json(plan, snakemake.output.plan)
if plan["spec"] is None:
    log.warning("closed loop %s: %s", plan["run_id"], plan["reason"])
    write_not_trained(plan, out_dir)
else:
    log.info("closed loop %s: C = %.3g, N_opt %.3g (%s) -> shape %s, %d tokens", plan["run_id"], plan["flops"],
             plan["n_opt"], plan["method"], plan["shape"], plan["tokens"])
    resources = snakemake.resources
    run_training_job(spec=plan["spec"], train_dir=Path(snakemake.input.train).parent,
                     valid_dir=Path(snakemake.input.valid).parent, out_dir=out_dir,
                     checkpoint_dir=snakemake.params.checkpoint_dir, threads=snakemake.threads,
                     processes_per_node=int(resources.get("processes_per_node", 1) or 1),
                     nodes=int(resources.get("nodes", 1) or 1))
