"""rule closed_loop_score: fit.json + every closed-loop plan and metrics -> closed_loop.json and its plot."""

import json

from plmscale.logging_setup import log_to_file
from plmscale.plots.closed_loop import plot_closed_loop
from plmscale.scaling.closed_loop import score_closed_loop, validation_lines
from plmscale.scaling.fitfile import read_fit
from plmscale.scaling.results import write_json


def read(path):
    with open(path) as handle:
        return json.load(handle)


log = log_to_file(snakemake.log[0])
runs = [(read(plan), read(metrics)) for plan, metrics in zip(snakemake.input.plans, snakemake.input.metrics)]
record = score_closed_loop(read_fit(snakemake.input.fit), runs)
write_json(record, snakemake.output.record, with_provenance=True)
plot_closed_loop(record, snakemake.output.plot)
for objective in record["objectives"]:
    for line in validation_lines(record, objective):
        log.info("%s %s", objective, line)
