# Training: one job per grid point (plmscale.grid.expand_grid), results/runs/{run_id}/.
# `rule train` trains from scratch; `rule transfer` starts an MLM run from a finished CLM run's weights.
# Resources come from each run's own estimate (plmscale.grid.resources): GPUs, nodes, memory, time limit.
# Input functions and the run-id constraints are in rules/common.smk.

rule train:
    input:
        train="results/data/shards/train/manifest.json",
        valid="results/data/shards/valid/manifest.json",
    output:
        metrics="results/runs/{run_id}/metrics.json",
        curve="results/runs/{run_id}/curve.csv",
        provenance="results/runs/{run_id}/provenance.json",
    wildcard_constraints:
        run_id=SCRATCH_RUN_PATTERN,
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
        source_run=TRANSFER_SOURCE_PATTERN,
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
