# The transfer sweep (train.transfer_sweep, docs/transfer.md): per size, one total budget split between CLM
# pre-training and MLM at several shares. Its runs are trained by rules/train.smk (an MLM run starts from its
# CLM run's weights, as train.transfer does); this stage finds the best share and the effectively transferred
# tokens. Input functions are in rules/common.smk.

rule transfer_sweep:
    input:
        metrics=transfer_sweep_run_files("metrics.json"),
        curves=transfer_sweep_run_files("curve.csv"),
    output:
        summary="results/scaling/transfer.json",
        plot=report("results/scaling/transfer_sweep.png", caption="../report/transfer_sweep.rst",
                    category="Scaling laws", subcategory="Transfer"),
    params:
        plan=json_param(TRANSFER_SWEEP_PLAN),
        bootstrap=config["train"]["transfer_sweep"]["bootstrap"],
        seed=config["fit"]["seed"],
    log:
        "logs/scaling/transfer_sweep.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/transfer_sweep.py"
