"""rule predict: fit.json + fit.predict_flops -> predictions.json ({objective: [prediction, ...]})."""

import json

from plmscale.logging_setup import log_to_file
from plmscale.scaling.results import predict_budgets, write_json

log_to_file(snakemake.log[0])
with open(snakemake.input.fit) as handle:
    fit = json.load(handle)
predictions = predict_budgets(fit, json.loads(snakemake.params.flops), json.loads(snakemake.params.ladder))
write_json(predictions, snakemake.output[0])
