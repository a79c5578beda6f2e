"""rule design_summary: every round file + the final fit and runs -> design.json and design.png."""

import pandas as pd

from plmscale.config import load_config
from plmscale.design.round_files import design_record, read_round
from plmscale.logging_setup import log_to_file
from plmscale.plots.registry import DESIGN_FIGURE
from plmscale.scaling.fitfile import read_fit
from plmscale.scaling.results import write_json

log = log_to_file(snakemake.log[0])
config = load_config(dict(snakemake.config))
record = design_record(config, [read_round(path) for path in snakemake.input.rounds], read_fit(snakemake.input.fit).data)
write_json(record, snakemake.output.record)
DESIGN_FIGURE.draw(record, pd.read_csv(snakemake.input.runs, low_memory=False), snakemake.output.plot)
log.info("%d runs added in %d rounds, %.4g FLOPs; stopped: %s", record["n_runs_added"], len(record["rounds"]),
         record["added_flops"], record["stop"])
