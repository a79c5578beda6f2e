# Shared by every stage: the validated config, wildcard constraints, and input functions.
import json
import re
from functools import lru_cache
from pathlib import Path

from snakemake.exceptions import WorkflowError

from plmscale.config import load_config, read_yaml
from plmscale.data.demo import SOURCES as DEMO_CORPORA
from plmscale.data.download import local_path
from plmscale.data.identity import check_edges as check_identity_edges
from plmscale.design.round_files import (ROUND_DIR, ROUND_FILE, adaptive_enabled, check_adaptive, read_round,
                                         round_of, round_specs)
from plmscale.errors import PlmscaleError
from plmscale.grid import expand_grid
from plmscale.grid.calibration import calibration_specs
from plmscale.grid.repetition import repetition_settings, repetition_specs
from plmscale.grid.resources import snakemake_resources
from plmscale.grid.spec import MIXED
from plmscale.grid.transfer_sweep import transfer_sweep_plan, transfer_sweep_specs
from plmscale.grid.wsd import branch_checkpoint_name
from plmscale.scaling.closed_loop import closed_loop_jobs, plan_closed_loop, run_label
from plmscale.scaling.fitfile import read_fit
from plmscale.scaling.mixed import comparison_runs
from plmscale.scaling.settings import fit_keys
from plmscale.plots import PLOT_NAMES, PLOTS
from plmscale.plots.registry import DESIGN_FIGURE

# The names of the config files, for messages that say where to fix a setting (None when given on the command line).
CONFIG_SOURCE = ", ".join(map(str, workflow.configfiles)) or None


def checked(function, *args, **kwargs):
    """function(*args, **kwargs), a PlmscaleError (a message naming the config key and what to do) ending the
    workflow as a WorkflowError, without a traceback."""
    try:
        return function(*args, **kwargs)
    except PlmscaleError as error:
        raise WorkflowError(str(error)) from None


def _validated_config():
    # Snakemake has read the files already, keeping the last of a key written twice: read them again to refuse that.
    for path in workflow.configfiles:
        read_yaml(path)
    return load_config(dict(config), source=CONFIG_SOURCE)


# Validate once, fill every default, and fail with a message that names the config file.
_validated = checked(_validated_config)
config.clear()
config.update(_validated)

SOURCES = [source["name"] for source in config["data"]["sources"]]
SOURCE_BY_NAME = {source["name"]: source for source in config["data"]["sources"]}
SPLITS = ["train", "valid", "test"]


wildcard_constraints:
    source="|".join(SOURCES),
    split="train|valid|test",
    run_id=r"[A-Za-z0-9_.+-]+",
    k=r"[0-9]+",


def json_param(obj):
    """Params as canonical JSON: Snakemake reruns a job when its params change, and only then."""
    return json.dumps(obj, sort_keys=True)


def shard_manifests():
    return expand("results/data/shards/{split}/manifest.json", split=SPLITS)


def stage_targets_data():
    """The data stages serve training only: fitting released curves (fit.use_own_runs false) skips them."""
    if not config["fit"]["use_own_runs"]:
        return []
    return shard_manifests() + identity_outputs() + demo_floor_targets()


# ---- identity to the train split (rules/identity.smk, docs/ood.md) ----------------------------------
IDENTITY_TABLES = {split: f"results/data/identity/{split}.tsv" for split in ("valid", "test")}
IDENTITY_SUMMARY = "results/data/identity/summary.json"
checked(check_identity_edges, config["data"]["identity"]["bins"])


def identity_outputs():
    if not config["data"]["identity"]["enabled"]:
        return []
    return [*IDENTITY_TABLES.values(), IDENTITY_SUMMARY]


def all_targets():
    targets = stage_targets_data()
    if config["fit"]["use_own_runs"]:
        targets += stage_targets_train()
    targets += stage_targets_scaling()
    targets += stage_targets_design()  # rules/design.smk
    targets += stage_targets_closed_loop()  # rules/closed_loop.smk
    targets += stage_targets_repetition()  # rules/repetition.smk
    targets += stage_targets_mixed()  # rules/mixed.smk
    targets += stage_targets_transfer_sweep()  # rules/transfer.smk
    targets += stage_targets_export()  # rules/export.smk
    targets += stage_targets_generation()  # rules/generation.smk
    if config["fit"]["cross_check"]["fit"]:  # rules/cross_check.smk
        targets += expand("results/scaling/cross_check.{ext}", ext=("json", "md", "png"))
    return targets


# ---- the training grid (plmscale.grid): expanded once, at parse time --------------------------------
RUN_SPECS = {spec.run_id: spec for spec in checked(expand_grid, config, source=CONFIG_SOURCE)}
RUNS = list(RUN_SPECS.values())  # the grid as a list of plmscale.grid.RunSpec, in expand_grid's order
# The trunks of a WSD grid (train.isoflop.schedule wsd): not grid points; train.smk trains each.
TRUNK_SPECS = {spec.run_id: spec for spec in checked(expand_grid, config, source=CONFIG_SOURCE, trunks=True)
               if spec.wsd_role == "trunk"}


# ---- data stage -------------------------------------------------------------------------------------
for _source in config["data"]["sources"]:
    if _source["url"].startswith("demo:") and _source["url"][len("demo:"):] not in DEMO_CORPORA:
        raise WorkflowError(
            f"data.sources {_source['name']!r}: url {_source['url']!r} names no demo corpus; "
            f"use one of {['demo:' + name for name in DEMO_CORPORA]}")


# params of demo_corpus and demo_floor: the generator's settings and the clean step's length limits.
DEMO_PARAMS = dict(
    demo=json_param(config["data"]["demo"]),
    min_length=config["data"]["clean"]["min_length"],
    # The demo plants over-long records just past the cap; with no cap it still needs a length.
    max_length=config["data"]["clean"]["max_length"] or 1022,
)


def demo_corpus_path(source_name):
    """The generated demo file behind a "demo:<name>" url, or None for a real url."""
    url = SOURCE_BY_NAME[source_name]["url"]
    if url.startswith("demo:"):
        return f"results/data/demo/{url[len('demo:'):]}.fasta.gz"
    return None


def demo_floor_targets():
    """floor.json (the known truth for the parametric fit's E) whenever a source is generated."""
    if any(demo_corpus_path(name) for name in SOURCE_BY_NAME):
        return ["results/data/demo/floor.json"]
    return []


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


# ---- training -----------------------------------------------------------------------------------------
CALIBRATION_SPECS = {spec.run_id: spec for spec in checked(calibration_specs, config, source=CONFIG_SOURCE)}
# The repetition study's runs (train.repetition): trained by the train rule, fitted by rules/repetition.smk.
REPETITION_SPECS = {spec.run_id: spec for spec in checked(repetition_specs, config, source=CONFIG_SOURCE)}
# The transfer sweep's runs (train.transfer_sweep, ids xfer_...): trained by the train rule, analysed by
# rules/transfer.smk.
TRANSFER_SWEEP_SPECS = {spec.run_id: spec for spec in checked(transfer_sweep_specs, config, source=CONFIG_SOURCE)}
# Every run that train makes (the study's grid, and the lr sweep's, repetition study's and transfer sweep's
# runs, which are not part of the fits).
TRAINED_SPECS = {**RUN_SPECS, **CALIBRATION_SPECS, **REPETITION_SPECS, **TRANSFER_SWEEP_SPECS}


def _alternatives(names):
    """A wildcard regex matching exactly these names (and nothing when there are none)."""
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!x)x"


# Adaptive IsoFLOP rounds (train.isoflop.adaptive, rules/design.smk): runs decided from the fit at run time,
# their specs in the round files; their ids (ad<k>_...) never match a grid id.
checked(check_adaptive, config, CONFIG_SOURCE or "config")
ADAPTIVE = adaptive_enabled(config)
ADAPTIVE_MAX_ROUNDS = config["train"]["isoflop"]["adaptive"]["max_rounds"]
RUN_ID_PATTERN = _alternatives(TRAINED_SPECS) + (r"|ad[0-9]+_(?:clm|mlm)_[A-Za-z0-9_.+-]+" if ADAPTIVE else "")


@lru_cache(maxsize=None)
def _round_specs_cached(path, modified):
    return checked(round_specs, checked(read_round, path), path)


def run_spec(run_id):
    """The RunSpec of a run to train (a grid or sweep run, or one an adaptive round added, read from its round
    file, which exists once the round's checkpoint has run)."""
    if run_id in TRAINED_SPECS:
        return TRAINED_SPECS[run_id]
    path = Path(ROUND_FILE.format(k=round_of(run_id)))
    specs = _round_specs_cached(str(path), path.stat().st_mtime_ns)
    if run_id not in specs:
        raise WorkflowError(f"run {run_id} is in no round file ({path} adds {', '.join(sorted(specs)) or 'none'}); "
                            "delete results/scaling/design/ to decide the rounds again")
    return specs[run_id]

# Runs to export (export.runs, rules/export.smk): each must be a run this study trains.
_unknown_exports = [run_id for run_id in config["export"]["runs"] if run_id not in TRAINED_SPECS]
if _unknown_exports:
    raise WorkflowError(
        f"export.runs names {', '.join(_unknown_exports)}, not a run of this study; `plmscale plan` lists the run "
        f"ids (grid, extra, transfer and repetition runs); fix the list in {CONFIG_SOURCE}")
_mixed_exports = [run_id for run_id in config["export"]["runs"] if TRAINED_SPECS[run_id].objective == MIXED]
if _mixed_exports:
    raise WorkflowError(
        f"export.runs names the mixed run(s) {', '.join(_mixed_exports)}: export writes a CLM or an MLM model, and a "
        f"mixed model is both; remove them from export.runs in {CONFIG_SOURCE}")
EXPORT_ID_PATTERN = _alternatives(config["export"]["runs"])


def stage_targets_train():
    targets = [f"results/runs/{run_id}/metrics.json" for run_id in RUN_SPECS]
    if CALIBRATION_SPECS:
        targets += ["results/calibration/lr.json", "results/calibration/lr.png"]
    return targets


def calibration_run_files(wildcards):
    return [f"results/runs/{run_id}/metrics.json" for run_id in CALIBRATION_SPECS]


def train_inputs(wildcards):
    """Shards, and for a transfer run the source run's metrics.json (its final weights are written with it)."""
    inputs = {"train": "results/data/shards/train/manifest.json",
              "valid": "results/data/shards/valid/manifest.json"}
    if config["data"]["identity"]["enabled"]:  # read by the run as <valid shards>/../../identity/valid.tsv
        inputs["identity"] = IDENTITY_TABLES["valid"]
    spec = run_spec(wildcards.run_id)
    if round_of(wildcards.run_id) is not None and wildcards.run_id not in TRAINED_SPECS:
        inputs["round"] = ROUND_FILE.format(k=round_of(wildcards.run_id))  # its spec is there
    if spec.init_from is not None:
        inputs["source"] = f"results/runs/{spec.init_from}/metrics.json"
    if spec.wsd_role == "branch":  # a WSD branch starts from its trunk's state at its decay start
        inputs["trunk_state"] = trunk_branch_state(spec.wsd["trunk"], spec.run_id)
    return inputs


def trunk_branch_state(trunk_id, branch_id):
    return f"results/checkpoints/{trunk_id}/{branch_checkpoint_name(branch_id)}"


def trunk_rule_name(trunk_id):
    """A rule name (an identifier) for a trunk's run id, which may hold dots, plus or minus signs."""
    return "train_trunk_{}".format(re.sub(r"\W", "_", trunk_id))


def run_spec_json(wildcards):
    """The run's spec without the resource estimate: a change here (and only here) retrains the run."""
    return json_param(run_spec(wildcards.run_id).training_dict())


def run_threads(wildcards):
    return run_spec(wildcards.run_id).resources["cpus"]


# collect -> fit -> closed loop: once the grid is done, these go ahead of any run still queued (the
# repetition study's, which the fit does not wait for), so those runs share the cores with them.
CRITICAL_PATH_PRIORITY = 10**9


def run_priority(wildcards):
    """Longest runs first: with more runs than cores, a long run started last leaves cores idle at the
    end (the demo's 49k-step run alone took the last 8 minutes). Optimizer steps are the cost of tiny
    models and track FLOPs at a fixed batch for the others. The repetition study's runs go after every
    other run: nothing downstream of the fit waits for them, so they fill the cores the fit and the
    one-job closed loop leave idle."""
    if wildcards.run_id in REPETITION_SPECS:
        return 0
    spec = run_spec(wildcards.run_id)
    return 1 + spec.tokens // spec.batch_tokens


def _run_resource(key):
    return lambda wildcards: snakemake_resources(run_spec(wildcards.run_id).resources)[key]


# Resources of the train rule, from each run's own estimate (None drops a key from the job).
TRAIN_RESOURCES = {key: _run_resource(key) for key in snakemake_resources(
    {"gpus": 0, "nodes": 1, "gpus_per_node": 0, "gpu_model": None, "mem_mb": 0, "runtime_min": 0, "cpus": 1})}


# ---- scaling laws -----------------------------------------------------------------------------------

def own_run_files(name):
    """metrics.json / curve.csv of every grid run the fits take (none when fitting released curves only):
    not the mixed runs, which rules/mixed.smk compares with the others instead."""
    if not config["fit"]["use_own_runs"]:
        return []
    return [f"results/runs/{run.run_id}/{name}" for run in RUNS if run.objective != MIXED]


def study_run_files(name):
    """metrics.json / curve.csv of every run of the study: the grid's, and with adaptive rounds (an input
    function then) those of every round decided so far."""
    if not ADAPTIVE:
        return own_run_files(name)
    return lambda wildcards: own_run_files(name) + [f"results/runs/{run_id}/{name}" for run_id in adaptive_run_ids()]


def adaptive_rounds(last=None):
    """The round records (rounds 1 … `last`, default all) in order, up to the one that stopped the study.
    Reading a round not yet decided raises Snakemake's IncompleteCheckpointException: the DAG waits for it."""
    records = []
    for k in range(1, (ADAPTIVE_MAX_ROUNDS if last is None else last) + 1):
        records.append(checked(read_round, checkpoints.design_round.get(k=k).output.round))
        if records[-1]["stop"]:
            break
    return records


def adaptive_run_ids(last=None):
    return [run["run_id"] for record in adaptive_rounds(last) for run in record["runs_added"]]


def round_run_files(name):
    """The study after round k (0: the grid): its runs' metrics.json / curve.csv."""
    return lambda wildcards: own_run_files(name) + [f"results/runs/{run_id}/{name}"
                                                    for run_id in adaptive_run_ids(int(wildcards.k))]


def round_decision_inputs(wildcards):
    k = int(wildcards.k)
    return {"fit": f"{ROUND_DIR.format(k=k - 1)}/fit.json", "runs": f"{ROUND_DIR.format(k=k - 1)}/runs.csv",
            "earlier": [ROUND_FILE.format(k=j) for j in range(1, k)], **train_manifest(wildcards)}


def adaptive_round_files(wildcards):
    """Every round file the study made, the one that stopped it last."""
    return [ROUND_FILE.format(k=record["round"]) for record in adaptive_rounds()]


def stage_targets_design():
    if not ADAPTIVE:
        return []
    return ["results/scaling/design.json", "results/scaling/design.png"]


# Params of the fit, shared by the per-round fits of rules/design.smk (a round is decided from the same fit).
FIT_PARAMS = dict(
    fit=json_param(fit_keys(config["fit"])),  # what plmscale.scaling.settings.FitSettings reads
    grid_objectives=config["train"]["objectives"],
    cost_shapes=json_param({"ladder": config["train"]["ladder"], "seq_len": config["train"]["seq_len"]}),
)


def curve_law_curves(wildcards):
    """Each own run's curve.csv (the lr of every update) for the loss-curve law of fit.curve_law; none when off."""
    if not config["fit"]["curve_law"]:
        return []
    files = study_run_files("curve.csv")
    return files(wildcards) if callable(files) else files


def imported_tables(wildcards):
    if not config["fit"]["curves_dir"]:
        return {}
    return {"imported_runs": "results/scaling/imported/runs.csv",
            "imported_curves": "results/scaling/imported/curves.csv"}


def train_manifest(wildcards):
    """The train split's manifest (its token count gives each own run's epochs), when the study trains."""
    if not config["fit"]["use_own_runs"]:
        return {}
    return {"train_manifest": "results/data/shards/train/manifest.json"}


def stage_targets_scaling():
    if not (own_run_files("metrics.json") or config["fit"]["curves_dir"]):
        return []
    targets = ["results/scaling/fit.json", "results/scaling/predictions.json"]
    targets += expand("results/scaling/{name}.png", name=PLOT_NAMES)
    if own_run_files("metrics.json"):  # wall times of our own runs (released curves have none)
        targets.append("results/scaling/measured_cost.json")
    return targets


def plot_outputs():
    """The plot rule's figures: one per entry of plmscale.plots.PLOTS, with its report caption."""
    return {name: report(f"results/scaling/{name}.png", caption=f"../report/{plot.caption}",
                         category="Scaling laws", subcategory=plot.subcategory)
            for name, plot in PLOTS.items()}


# ---- closed loop (rules/closed_loop.smk) ------------------------------------------------------------
CLOSED_LOOP_JOBS = checked(closed_loop_jobs, config)
# "3" -> (3.0, None); with a depth search (fit.closed_loop.layers) "3_L2" -> (3.0, 2), "3_L3" -> (3.0, 3).
CLOSED_LOOP_LABELS = {run_label(m, layers): (m, layers) for _, m, layers in CLOSED_LOOP_JOBS}
CLOSED_LOOP_DIRS = [f"results/closed_loop/{o}_x{run_label(m, layers)}" for o, m, layers in CLOSED_LOOP_JOBS]
# A job with nothing to train still claims these (the scheduler needs numbers before it knows).
NOT_TRAINED_RESOURCES = {"gpus": 0, "nodes": 1, "gpus_per_node": 0, "gpu_model": None, "mem_mb": 1000,
                         "runtime_min": 5, "cpus": 1}


def stage_targets_closed_loop():
    if not CLOSED_LOOP_JOBS:
        return []
    return ["results/scaling/closed_loop.json", "results/scaling/closed_loop.png"]


@lru_cache(maxsize=None)
def _closed_loop_plan_cached(fit_path, modified, objective, label):
    multiple, layers = CLOSED_LOOP_LABELS[label]
    return plan_closed_loop(config, read_fit(fit_path), objective, multiple,
                            source=CONFIG_SOURCE, layers=layers)


def closed_loop_plan(wildcards, input):
    """The plan for this job from the current fit.json; before the fit exists Snakemake shows <TBD>."""
    fit_path = Path(input.fit)
    if not fit_path.exists():
        raise FileNotFoundError(2, "fit.json is not written yet", str(input.fit))
    return _closed_loop_plan_cached(str(fit_path), fit_path.stat().st_mtime_ns, wildcards.objective,
                                    wildcards.label)


def closed_loop_plan_json(wildcards, input):
    return json_param(closed_loop_plan(wildcards, input))


def _closed_loop_resource(key):
    def resource(wildcards, input):
        plan = closed_loop_plan(wildcards, input)
        return snakemake_resources(plan.get("resources") or NOT_TRAINED_RESOURCES)[key]

    return resource


CLOSED_LOOP_RESOURCES = {key: _closed_loop_resource(key) for key in snakemake_resources(NOT_TRAINED_RESOURCES)}
# Threads must be known before the plan: a grid run's CPU count under the same settings.
CLOSED_LOOP_THREADS = (config["train"]["threads"] if config["train"]["device"] == "cpu"
                       else config["train"]["resources"]["cpus_per_gpu"])


# ---- repetition study (rules/repetition.smk) ---------------------------------------------------------
REPETITION = checked(repetition_settings, config) if config["fit"]["use_own_runs"] else None


def stage_targets_mixed():
    if not any(run.objective == MIXED for run in RUNS):
        return []
    return ["results/scaling/mixed.json", "results/scaling/mixed.png"]


def mixed_comparison_files(wildcards):
    """metrics.json of every mixed run and of the CLM and MLM runs of its size and token target."""
    return [f"results/runs/{run_id}/metrics.json" for run_id in comparison_runs(RUNS)]


def stage_targets_repetition():
    if REPETITION is None:
        return []
    return ["results/scaling/repetition.json", "results/scaling/repetition.png"]


def repetition_run_files(name):
    """metrics.json / curve.csv of every run of the repetition study."""
    return [f"results/runs/{run_id}/{name}" for run_id in REPETITION_SPECS]


def stage_targets_export():
    if not config["fit"]["use_own_runs"]:
        return []
    targets = [f"results/export/{run_id}" for run_id in config["export"]["runs"]]
    if config["export"]["samples"]:
        targets += [f"results/export/{run_id}.samples.fasta" for run_id in config["export"]["runs"]
                    if TRAINED_SPECS[run_id].objective == "clm"]
    return targets


# Generation metrics (rules/generation.smk): CLM runs of the study only.
GENERATION_RUNS = config["generation"]["runs"]
_not_clm = [run_id for run_id in GENERATION_RUNS
            if run_id not in TRAINED_SPECS or TRAINED_SPECS[run_id].objective != "clm"]
if _not_clm:
    raise WorkflowError(
        f"generation.runs names {', '.join(_not_clm)}, not a CLM run of this study (only a causal model generates); "
        f"`plmscale plan` lists the run ids; fix the list in {CONFIG_SOURCE}")
# Planted content is measured when every source is a generated demo corpus (its truth tables are inputs).
GENERATION_TRUTH = ({name: f"results/data/demo/{SOURCE_BY_NAME[name]['url'][len('demo:'):]}.truth.tsv"
                     for name in SOURCES} if all(demo_corpus_path(name) for name in SOURCES) else {})


def stage_targets_generation():
    if not (GENERATION_RUNS and config["fit"]["use_own_runs"]):
        return []
    return ["results/generation/generation.json", "results/generation/generation.png"]


# ---- transfer sweep (rules/transfer.smk) ---------------------------------------------------------------
TRANSFER_SWEEP_PLAN = checked(transfer_sweep_plan, config, source=CONFIG_SOURCE) if config["fit"]["use_own_runs"] else []


def stage_targets_transfer_sweep():
    if not TRANSFER_SWEEP_PLAN:
        return []
    return ["results/scaling/transfer.json", "results/scaling/transfer_sweep.png"]


def transfer_sweep_run_files(name):
    """metrics.json / curve.csv of every run of the transfer sweep (CLM sources included: their tokens)."""
    return [f"results/runs/{run_id}/{name}" for run_id in TRANSFER_SWEEP_SPECS]
