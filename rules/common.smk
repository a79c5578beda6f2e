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


def stage_targets_data():
    """The data stages serve training only: fitting released curves (fit.use_own_runs false) skips them."""
    if not config["fit"]["use_own_runs"]:
        return []
    return shard_manifests()


def all_targets():
    targets = stage_targets_data()
    if config["fit"]["use_own_runs"]:
        targets += stage_targets_train()
    targets += stage_targets_scaling()
    return targets


# ---- the training grid (plmscale.grid): expanded once, at parse time --------------------------------
from plmscale.grid import expand_grid

try:
    RUN_SPECS = {spec.run_id: spec for spec in expand_grid(config, source=", ".join(map(str, workflow.configfiles)) or None)}
except PlmscaleError as error:
    raise WorkflowError(str(error)) from None


# ---- data stage -------------------------------------------------------------------------------------
from plmscale.data.demo import SOURCES as DEMO_CORPORA
from plmscale.data.download import local_path

for _source in config["data"]["sources"]:
    if _source["url"].startswith("demo:") and _source["url"][len("demo:"):] not in DEMO_CORPORA:
        raise WorkflowError(
            f"data.sources {_source['name']!r}: url {_source['url']!r} names no demo corpus; "
            f"use one of {['demo:' + name for name in DEMO_CORPORA]}")


def demo_corpus_path(source_name):
    """The generated demo file behind a "demo:<name>" url, or None for a real url."""
    url = SOURCE_BY_NAME[source_name]["url"]
    if url.startswith("demo:"):
        return f"results/data/demo/{url[len('demo:'):]}.fasta.gz"
    return None


def download_input(wildcards):
    """Input of a download job: the demo file, a local source file, or nothing (a network url).

    A local file is an input so that replacing it reruns the download (and everything after)."""
    demo = demo_corpus_path(wildcards.source)
    if demo:
        return [demo]
    path = local_path(SOURCE_BY_NAME[wildcards.source]["url"])
    return [str(path)] if path is not None else []


def source_setting(key, default=""):
    """A per-source config value as a params function (empty string when the source leaves it out)."""
    return lambda wildcards: SOURCE_BY_NAME[wildcards.source].get(key, default)
RUNS = list(RUN_SPECS.values())  # the grid as a list of plmscale.grid.RunSpec, in expand_grid's order
