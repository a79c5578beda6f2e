# The repetition study (train.repetition, docs/repetition.md): a restricted source repeated for D/U epochs
# against the full mixture at the same budgets. Its runs are trained by rules/train.smk; this stage fits
# Muennighoff et al.'s R* to them and draws loss against tokens. Input functions are in rules/common.smk.

rule repetition:
    input:
        metrics=repetition_run_files("metrics.json"),
        curves=repetition_run_files("curve.csv"),
        train_manifest="results/data/shards/train/manifest.json",  # is the mixture more diverse than the source?
    output:
        summary="results/scaling/repetition.json",
        plot=report("results/scaling/repetition.png", caption="../report/repetition.rst",
                    category="Scaling laws", subcategory="Repetition vs diversity"),
        vector=expand("results/scaling/repetition.{ext}", ext=["svg", "pdf"]),
    params:
        fit_points=config["train"]["repetition"]["fit_points"],
        bootstrap=config["train"]["repetition"]["bootstrap"],
        seed=config["fit"]["seed"],
    log:
        "logs/scaling/repetition.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/repetition.py"
