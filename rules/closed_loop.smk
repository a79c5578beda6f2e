# Closed loop (fit.closed_loop, off unless multiples are set): train the model the fit forecasts as
# compute-optimal at multiples of the top IsoFLOP budget, then score every method's forecast against it.
# The run is planned from fit.json (plmscale.scaling.closed_loop.plan_closed_loop), so its spec and
# resources are known only once the fit exists: a dry run before then shows them as <TBD>.
# Its input functions and the plan they read are in rules/common.smk.


rule closed_loop_train:
    input:
        fit="results/scaling/fit.json",
        train="results/data/shards/train/manifest.json",
        valid="results/data/shards/valid/manifest.json",
    output:
        plan="results/closed_loop/{objective}_x{label}/plan.json",
        metrics="results/closed_loop/{objective}_x{label}/metrics.json",
        curve="results/closed_loop/{objective}_x{label}/curve.csv",
        provenance="results/closed_loop/{objective}_x{label}/provenance.json",
    wildcard_constraints:
        objective="clm|mlm",
        label=_alternatives(CLOSED_LOOP_LABELS),
    params:
        plan=closed_loop_plan_json,
        checkpoint_dir=lambda wildcards: f"results/checkpoints/fcl_{wildcards.objective}_x{wildcards.label}",
    log:
        "logs/closed_loop/{objective}_x{label}/train.log",
    benchmark:
        "results/benchmarks/closed_loop/{objective}_x{label}.tsv"
    threads: CLOSED_LOOP_THREADS
    priority: CRITICAL_PATH_PRIORITY
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
