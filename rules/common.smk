# Shared by every stage: the validated config, wildcard constraints, and input functions.
import json
from pathlib import Path

from snakemake.exceptions import WorkflowError

from plmscale.config import load_config
from plmscale.errors import PlmscaleError

# Validate once, fill every default, and fail with a message that names the config file.
try:
    _validated = load_config(dict(config), source=", ".join(map(str, workflow.configfiles)) or None)
except PlmscaleError as error:
    raise WorkflowError(str(error)) from None
config.clear()
config.update(_validated)

SOURCES = [source["name"] for source in config["data"]["sources"]]
SOURCE_BY_NAME = {source["name"]: source for source in config["data"]["sources"]}
SPLITS = ["train", "valid", "test"]


wildcard_constraints:
    source="|".join(SOURCES),
    split="train|valid|test",
    run_id=r"[A-Za-z0-9_.+-]+",


def json_param(obj):
    """Params as canonical JSON: Snakemake reruns a job when its params change, and only then."""
    return json.dumps(obj, sort_keys=True)


def shard_manifests():
    return expand("results/data/shards/{split}/manifest.json", split=SPLITS)


def all_targets():
    targets = shard_manifests()
    targets += stage_targets_train()
    targets += stage_targets_scaling()
    return targets
