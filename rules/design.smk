# Adaptive IsoFLOP rounds (train.isoflop.adaptive, docs/design.md): after the grid is trained and fitted, each
# round decides the next runs from the fit (plmscale.design.rounds) and writes them, with their specs, to a
# round file; the train rule trains them (run_spec in rules/common.smk reads their specs there) and the study
# is refitted, until a round stops it. A round file is a checkpoint's output: the runs it adds are known only
# once it exists, so a dry run before then shows the first round as pending. Input functions: rules/common.smk.


rule design_collect:
    # The study after round k (round 0: the grid): its runs table, refitted below, which round k+1 reads.
    input:
        unpack(imported_tables),
        unpack(train_manifest),
        metrics=round_run_files("metrics.json"),
        curves=round_run_files("curve.csv"),
    output:
        runs=f"{ROUND_DIR}/runs.csv",
        curves=f"{ROUND_DIR}/curves.csv",
    log:
        "logs/scaling/design/round_{k}/collect.log",
    threads: 1
    priority: CRITICAL_PATH_PRIORITY
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/collect_runs.py"


rule design_fit:
    input:
        runs=f"{ROUND_DIR}/runs.csv",
        curves=f"{ROUND_DIR}/curves.csv",
    output:
        f"{ROUND_DIR}/fit.json",
    params:
        **FIT_PARAMS,
    log:
        "logs/scaling/design/round_{k}/fit.log",
    threads: 1
    priority: CRITICAL_PATH_PRIORITY
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/fit_scaling.py"


checkpoint design_round:
    # Round k, decided from the fit of the study after round k-1, and the rounds before it (their shapes).
    input:
        unpack(round_decision_inputs),
    output:
        round=ROUND_FILE,
    params:
        adaptive=json_param(config["train"]["isoflop"]["adaptive"]),
    log:
        "logs/scaling/design/round_{k}.log",
    threads: 1
    priority: CRITICAL_PATH_PRIORITY
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/design_round.py"


rule design_summary:
    input:
        rounds=adaptive_round_files,
        fit="results/scaling/fit.json",
        runs="results/scaling/runs.csv",
    output:
        record="results/scaling/design.json",
        plot=report("results/scaling/design.png", caption=f"../report/{DESIGN_FIGURE.caption}",
                    category="Scaling laws", subcategory=DESIGN_FIGURE.subcategory),
    log:
        "logs/scaling/design.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/design_summary.py"
