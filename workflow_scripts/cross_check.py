"""Snakemake entry point of rule cross_check: this fit next to another one (plmscale.scaling.cross_check)."""

import json
from pathlib import Path

from plmscale.logging_setup import log_to_file
from plmscale.plots.cross_check import write_cross_check
from plmscale.scaling import cross_check

log_to_file(snakemake.log[0])
labels = json.loads(snakemake.params.labels)
fits = {labels["label"]: cross_check.read_fit_and_runs(snakemake.input.other),
        labels["this_label"]: cross_check.read_fit_and_runs(snakemake.input.fit)}
write_cross_check(fits, Path(snakemake.output.json).parent)
