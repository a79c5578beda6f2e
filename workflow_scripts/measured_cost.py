"""rule measured_cost: the runs' metrics.json -> results/scaling/measured_cost.json, the measured cost law per
device (seconds/token = c0 + c1 · chinchilla FLOPs/token, plmscale.scaling.costs). Wall times differ between
machines and reruns, so this file, unlike runs.csv and fit.json, is not reproduced byte for byte."""

from plmscale.logging_setup import log_to_file
from plmscale.scaling.collect import run_timings
from plmscale.scaling.costs import fit_measured_cost, measured_cost_record
from plmscale.scaling.results import write_json

log_to_file(snakemake.log[0])
laws = fit_measured_cost(run_timings(snakemake.input.metrics), source="the runs' metrics.json")
write_json(measured_cost_record(laws), snakemake.output[0])
