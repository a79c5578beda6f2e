# Closed loop (fit.closed_loop, off unless multiples are set): train the model the fit forecasts as
# compute-optimal at multiples of the top IsoFLOP budget, then score every method's forecast against it.
# The run is planned from fit.json (plmscale.scaling.closed_loop.plan_closed_loop), so its spec and
# resources are known only once the fit exists: a dry run before then shows them as <TBD>.
from functools import lru_cache

from plmscale.grid.resources import snakemake_resources
from plmscale.scaling.closed_loop import closed_loop_jobs, multiple_label, plan_closed_loop
from plmscale.scaling.fitfile import read_fit

try:
    CLOSED_LOOP_JOBS = closed_loop_jobs(config)
except PlmscaleError as error:
    raise WorkflowError(str(error)) from None
CLOSED_LOOP_MULTIPLES = {multiple_label(m): m for _, m in CLOSED_LOOP_JOBS}
CLOSED_LOOP_DIRS = [f"results/closed_loop/{o}_x{multiple_label(m)}" for o, m in CLOSED_LOOP_JOBS]
# A job with nothing to train still claims these (the scheduler needs numbers before it knows).
NOT_TRAINED_RESOURCES = {"gpus": 0, "nodes": 1, "gpus_per_node": 0, "gpu_model": None, "mem_mb": 1000,
                         "runtime_min": 5, "cpus": 1}


def stage_targets_closed_loop():
    if not CLOSED_LOOP_JOBS:
        return []
    return ["results/scaling/closed_loop.json", "results/scaling/closed_loop.png"]


@lru_cache(maxsize=None)
def _closed_loop_plan_cached(fit_path, modified, objective, multiple):
    return plan_closed_loop(config, read_fit(fit_path), objective, multiple,
                            source=", ".join(map(str, workflow.configfiles)) or None)


def closed_loop_plan(wildcards, input):
    """The plan for this job from the current fit.json; before the fit exists Snakemake shows <TBD>."""
    fit_path = Path(input.fit)
    if not fit_path.exists():
        raise FileNotFoundError(2, "fit.json is not written yet", str(input.fit))
    return _closed_loop_plan_cached(str(fit_path), fit_path.stat().st_mtime_ns, wildcards.objective,
                                    CLOSED_LOOP_MULTIPLES[wildcards.multiple])


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


rule closed_loop_train:
    input:
        fit="results/scaling/fit.json",
        train="results/data/shards/train/manifest.json",
        valid="results/data/shards/valid/manifest.json",
    output:
        plan="results/closed_loop/{objective}_x{multiple}/plan.json",
        metrics="results/closed_loop/{objective}_x{multiple}/metrics.json",
        curve="results/closed_loop/{objective}_x{multiple}/curve.csv",
        provenance="results/closed_loop/{objective}_x{multiple}/provenance.json",
    wildcard_constraints:
        objective="clm|mlm",
        multiple=_alternatives(CLOSED_LOOP_MULTIPLES),
    params:
        plan=closed_loop_plan_json,
        checkpoint_dir=lambda wildcards: f"results/checkpoints/fcl_{wildcards.objective}_x{wildcards.multiple}",
    log:
        "logs/closed_loop/{objective}_x{multiple}/train.log",
    benchmark:
        "results/benchmarks/closed_loop/{objective}_x{multiple}.tsv"
    threads: CLOSED_LOOP_THREADS
    resources:
        **CLOSED_LOOP_RESOURCES,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/closed_loop_train.py"


rule closed_loop_score:
    input:
        fit="results/scaling/fit.json",
        plans=[f"{d}/plan.json" for d in CLOSED_LOOP_DIRS],
        metrics=[f"{d}/metrics.json" for d in CLOSED_LOOP_DIRS],
    output:
        record="results/scaling/closed_loop.json",
        plot=report("results/scaling/closed_loop.png", caption="../report/closed_loop.rst",
                    category="Scaling laws", subcategory="Closed loop"),
    log:
        "logs/scaling/closed_loop.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/closed_loop_score.py"
