"""checkpoint design_round: the fit of the study after round k-1 (+ its runs, the earlier round files) ->
round k's decision and the specs of the runs it adds (results/scaling/design/round_<k>.json)."""

import pandas as pd

from plmscale.config import load_config
from plmscale.design.round_files import plan_round, read_round
from plmscale.logging_setup import log_to_file
from plmscale.data.shards import read_split_pass_tokens
from plmscale.scaling.fitfile import read_fit
from plmscale.scaling.results import write_json

log = log_to_file(snakemake.log[0])
config = load_config(dict(snakemake.config))
earlier = [read_round(path) for path in snakemake.input.earlier]
manifest = snakemake.input.get("train_manifest")
record = plan_round(config, pd.read_csv(snakemake.input.runs, low_memory=False), read_fit(snakemake.input.fit).data,
                    earlier, int(snakemake.wildcards.k),
                    train_tokens=read_split_pass_tokens(manifest) if manifest else None)
write_json(record, snakemake.output.round)
for run in record["runs_added"]:
    log.info("round %s adds %s: %s", record["round"], run["run_id"], run["why"])
for run in record["skipped"]:
    log.info("round %s skips %s at %.4g: %s", record["round"], run["model"], run["budget"], run["why"])
log.info("round %s: %s", record["round"], record["stop"] or f"{len(record['runs_added'])} runs, "
         f"{record['flops']:.4g} FLOPs")
