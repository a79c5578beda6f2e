"""Snakemake script: the demo corpus's entropy floor (rule demo_floor)."""
import json

from plmscale.data.demo import write_demo_floor
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log[0])
write_demo_floor(snakemake.output.floor, min_length=snakemake.params.min_length,
                 max_length=snakemake.params.max_length, **json.loads(snakemake.params.demo))
