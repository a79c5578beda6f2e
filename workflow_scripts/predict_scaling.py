"""rule predict: fit.json + fit.predict_flops -> predictions.json ({objective: [prediction, ...]})."""

import json

from plmscale.logging_setup import log_to_file
from plmscale.scaling.fitfile import read_fit
from plmscale.scaling.predict import predict_budgets
from plmscale.scaling.results import write_json

log_to_file(snakemake.log[0])
predictions = predict_budgets(read_fit(snakemake.input.fit), json.loads(snakemake.params.flops),
                              json.loads(snakemake.params.ladder))
write_json(predictions, snakemake.output[0])
