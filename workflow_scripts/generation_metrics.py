"""rule generation_metrics: CLM runs + train/test splits (+ the demo truth) -> generation.json and the samples."""

import dataclasses
import json

import torch

from plmscale.config import load_config
from plmscale.evaluate.demo_truth import load_demo_truth
from plmscale.evaluate.generation import GenerationSettings, measure_generation
from plmscale.export.runs import load_run
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log[0])
torch.set_num_threads(1)  # the grid's tiny models sample fastest on one thread; MMseqs2 gets the job's threads
config = load_config(dict(snakemake.config))
settings = dataclasses.replace(GenerationSettings.from_config(config), threads=snakemake.threads)
truth_tables = json.loads(snakemake.params.truth_tables)
truth = load_demo_truth(config["data"]["demo"], truth_tables) if truth_tables else None
reason = "" if truth else "not a demo corpus (a source is not generated): planted motifs and families are absent"
loaded = [load_run(run_id, "results") for run_id in snakemake.params.runs]
measure_generation(loaded, snakemake.input.train, snakemake.input.test, snakemake.output.summary, settings, truth,
                   reason)
