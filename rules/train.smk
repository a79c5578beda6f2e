# Training: one job per grid point (plmscale.grid.expand_grid), results/runs/{run_id}/.
# `rule train` trains from scratch; `rule transfer` starts an MLM run from a finished CLM run's weights.
# Resources come from each run's own estimate (plmscale.grid.resources): GPUs, nodes, memory, time limit.
import re

TRAIN_OUTPUTS = ("metrics.json", "curve.csv", "provenance.json")
_SCRATCH_IDS = [r for r, s in RUN_SPECS.items() if s.init_from is None]
_TRANSFER_SOURCES = [s.init_from for s in RUN_SPECS.values() if s.init_from is not None]


def _alternatives(names):
    """A wildcard regex matching exactly these names (and nothing when there are none)."""
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!x)x"


def stage_targets_train():
    return [f"results/runs/{run_id}/metrics.json" for run_id in RUN_SPECS]


def run_id_of(wildcards):
    return wildcards.run_id if "run_id" in wildcards.keys() else f"tmlm_{wildcards.source_run}"


def run_spec_json(wildcards):
    """The run's spec without the resource estimate: a change here (and only here) retrains the run."""
    return json_param(RUN_SPECS[run_id_of(wildcards)].training_dict())


def run_resource(key):
    """A resource of the run as an input function; None drops the resource from the job."""

    def value(wildcards):
        res = RUN_SPECS[run_id_of(wildcards)].resources
        single_gpu_node = res["gpus"] > 0 and res["nodes"] == 1
        multi_node = res["nodes"] > 1
        if key == "gpu":  # GPUs of a one-node job: the Slurm plugin's --gpus, and `--resources gpu=K` locally
            return res["gpus"] if single_gpu_node else None
        if key == "gpu_model":
            return res["gpu_model"] if single_gpu_node and res["gpu_model"] else None
        if key == "nodes":
            return res["nodes"] if multi_node else None
        if key in ("tasks", "mpi"):
            # Several nodes: one task per node, and the job script starts torchrun on each node with srun
            # itself (`mpi` tells the Slurm plugin not to wrap the script in `srun -n1`).
            return (res["nodes"] if key == "tasks" else "srun") if multi_node else None
        if key == "slurm_extra":
            if not multi_node:
                return None
            gpus = f"{res['gpu_model']}:{res['gpus_per_node']}" if res["gpu_model"] else res["gpus_per_node"]
            return f"--ntasks-per-node=1 --gpus-per-node={gpus}"
        if key == "gpus_per_node":
            return res["gpus_per_node"]
        if key == "cpus_per_task":
            return res["cpus"]
        return res[key]

    return value


def run_threads(wildcards):
    return RUN_SPECS[run_id_of(wildcards)].resources["cpus"]


# Resource keys shared by both rules (Snakemake's names: runtime in minutes, mem_mb per node).
TRAIN_RESOURCES = dict(
    mem_mb=run_resource("mem_mb"),
    runtime=run_resource("runtime_min"),
    cpus_per_task=run_resource("cpus_per_task"),
    gpu=run_resource("gpu"),
    gpu_model=run_resource("gpu_model"),
    gpus_per_node=run_resource("gpus_per_node"),
    nodes=run_resource("nodes"),
    tasks=run_resource("tasks"),
    mpi=run_resource("mpi"),
    slurm_extra=run_resource("slurm_extra"),
)


rule train:
    input:
        train="results/data/shards/train/manifest.json",
        valid="results/data/shards/valid/manifest.json",
    output:
        metrics="results/runs/{run_id}/metrics.json",
        curve="results/runs/{run_id}/curve.csv",
        provenance="results/runs/{run_id}/provenance.json",
    wildcard_constraints:
        run_id=_alternatives(_SCRATCH_IDS),
    params:
        spec=run_spec_json,
        checkpoint_dir=lambda wildcards: f"results/checkpoints/{wildcards.run_id}",
    log:
        "logs/runs/{run_id}/train.log",
    benchmark:
        "results/benchmarks/runs/{run_id}.tsv"
    threads: run_threads
    resources:
        **TRAIN_RESOURCES,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/train.py"


rule transfer:
    input:
        train="results/data/shards/train/manifest.json",
        valid="results/data/shards/valid/manifest.json",
        source="results/runs/{source_run}/metrics.json",
    output:
        metrics="results/runs/tmlm_{source_run}/metrics.json",
        curve="results/runs/tmlm_{source_run}/curve.csv",
        provenance="results/runs/tmlm_{source_run}/provenance.json",
    wildcard_constraints:
        source_run=_alternatives(_TRANSFER_SOURCES),
    params:
        spec=run_spec_json,
        checkpoint_dir=lambda wildcards: f"results/checkpoints/tmlm_{wildcards.source_run}",
    log:
        "logs/runs/tmlm_{source_run}/train.log",
    benchmark:
        "results/benchmarks/runs/tmlm_{source_run}.tsv"
    threads: run_threads
    resources:
        **TRAIN_RESOURCES,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/train.py"
