# Training: one job per grid point (plmscale.grid.expand_grid), results/runs/{run_id}/.
# A transfer run (an MLM run started from a finished CLM run's weights) is the same job with one more
# input, its source run's metrics.json (train_inputs in rules/common.smk).
# Resources come from each run's own estimate (plmscale.grid.resources): GPUs, nodes, memory, time limit.


rule train:
    input:
        unpack(train_inputs),
    output:
        metrics="results/runs/{run_id}/metrics.json",
        curve="results/runs/{run_id}/curve.csv",
        provenance="results/runs/{run_id}/provenance.json",
    wildcard_constraints:
        run_id=RUN_ID_PATTERN,
    params:
        spec=run_spec_json,
        checkpoint_dir="results/checkpoints/{run_id}",
    log:
        "logs/runs/{run_id}/train.log",
    benchmark:
        "results/benchmarks/runs/{run_id}.tsv"
    threads: run_threads
    priority: run_priority
    resources:
        **TRAIN_RESOURCES,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/train.py"


# A WSD grid's trunks (train.isoflop.schedule wsd, docs/wsd.md): one job per objective and size that trains
# at constant lr and writes its state at each budget's decay start; those files are the inputs of the
# branches (rule train above), so the branches of a trunk run in parallel once it is done. One rule per trunk
# because the number of branch outputs differs from size to size.
for _trunk in TRUNK_SPECS.values():

    rule:
        name:
            trunk_rule_name(_trunk.run_id)
        input:
            train="results/data/shards/train/manifest.json",
            valid="results/data/shards/valid/manifest.json",
        output:
            metrics=f"results/trunks/{_trunk.run_id}/metrics.json",
            curve=f"results/trunks/{_trunk.run_id}/curve.csv",
            provenance=f"results/trunks/{_trunk.run_id}/provenance.json",
            branch_states=[trunk_branch_state(_trunk.run_id, branch) for branch in _trunk.wsd["branches"]],
        params:
            spec=json_param(_trunk.training_dict()),
            checkpoint_dir=lambda wildcards, output: str(Path(output.branch_states[0]).parent),
        log:
            f"logs/trunks/{_trunk.run_id}/train.log",
        benchmark:
            f"results/benchmarks/trunks/{_trunk.run_id}.tsv"
        threads: _trunk.resources["cpus"]
        priority: _trunk.tokens // _trunk.batch_tokens
        resources:
            **snakemake_resources(_trunk.resources),
        conda:
            "../envs/torch.yaml"
        script:
            "../workflow_scripts/train.py"


# The optional lr sweep (train.lr_calibration): its runs are trained by the rule above, then the best lr
# per size refits the small-scale recipe's lr_ref (docs/recipe.md).
rule calibrate_lr:
    input:
        metrics=calibration_run_files,
    output:
        summary="results/calibration/lr.json",
        plot="results/calibration/lr.png",
    params:
        train=json_param({key: config["train"][key] for key in ("small_scale", "lr_calibration")}),
    log:
        "logs/calibration/lr.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/calibrate_lr.py"
