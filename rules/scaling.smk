# Scaling laws: own runs (results/runs/*) and/or released curves -> runs table -> fits -> plots, predictions.
# With fit.use_own_runs false (configs/paper-logs.yaml) only this stage runs, on fit.curves_dir.
# Input functions are in rules/common.smk.

rule import_curves:
    input:
        import_config=config["fit"]["import_config"],
    output:
        runs="results/scaling/imported/runs.csv",
        curves="results/scaling/imported/curves.csv",
    params:
        curves_dir=config["fit"]["curves_dir"],
    log:
        "logs/scaling/import_curves.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/import_curves.py"


rule collect:
    input:
        unpack(imported_tables),
        unpack(train_manifest),
        metrics=study_run_files("metrics.json"),
        curves=study_run_files("curve.csv"),
    output:
        runs="results/scaling/runs.csv",
        curves="results/scaling/curves.csv",
    log:
        "logs/scaling/collect.log",
    threads: 1
    priority: CRITICAL_PATH_PRIORITY
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/collect_runs.py"


rule fit:
    input:
        runs="results/scaling/runs.csv",
        curves="results/scaling/curves.csv",
        run_curves=curve_law_curves,
    output:
        "results/scaling/fit.json",
    params:
        **FIT_PARAMS,
    log:
        "logs/scaling/fit.log",
    benchmark:
        "results/benchmarks/scaling/fit.tsv"
    threads: 1  # numpy on one BLAS thread (the fit script sets it); a second core would only wait
    priority: CRITICAL_PATH_PRIORITY
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/fit_scaling.py"


rule measured_cost:
    # Seconds per token on each device, fitted from the runs' wall times: a measurement of the machine, which
    # differs between machines and reruns (like results/benchmarks/), so it stays out of runs.csv and fit.json.
    input:
        metrics=study_run_files("metrics.json"),
    output:
        "results/scaling/measured_cost.json",
    log:
        "logs/scaling/measured_cost.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/measured_cost.py"


rule predict:
    input:
        fit="results/scaling/fit.json",
    output:
        "results/scaling/predictions.json",
    params:
        flops=json_param(config["fit"]["predict_flops"]),
        ladder=json_param(config["train"]["ladder"]),
    log:
        "logs/scaling/predict.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/predict_scaling.py"


rule plot:
    input:
        fit="results/scaling/fit.json",
        runs="results/scaling/runs.csv",
        curves="results/scaling/curves.csv",
        predictions="results/scaling/predictions.json",
    output:
        **plot_outputs(),
        vector=expand("results/scaling/{name}.{ext}", name=PLOT_NAMES, ext=["svg", "pdf"]),
    log:
        "logs/scaling/plot.log",
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/plot_scaling.py"
