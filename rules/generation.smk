# Generation that is measured (generation.runs, docs/generation.md): samples of CLM runs of several sizes
# against natural held-out (test) sequences of the same lengths: diversity, novelty and, on the demo corpus,
# planted motifs and families. Off while generation.runs is empty.

from plmscale.plots.registry import GENERATION_FIGURE

rule generation_metrics:
    input:
        metrics=expand("results/runs/{run_id}/metrics.json", run_id=GENERATION_RUNS),
        train="results/data/split/train.fasta.gz",
        test="results/data/split/test.fasta.gz",
        truth=list(GENERATION_TRUTH.values()),
    output:
        summary="results/generation/generation.json",
        samples="results/generation/generation.samples.fasta",
        table="results/generation/generation.samples.tsv",
    params:
        runs=GENERATION_RUNS,
        settings=json_param(config["generation"]),
        truth_tables=json_param(GENERATION_TRUTH),
    log:
        "logs/generation/generation.log",
    benchmark:
        "results/benchmarks/generation/generation.tsv"
    threads: config["generation"]["threads"]
    resources:
        mem_mb=config["generation"]["mem_mb"],
        runtime=30,
    conda:
        "../envs/generation.yaml"
    script:
        "../workflow_scripts/generation_metrics.py"


rule plot_generation:
    input:
        summary="results/generation/generation.json",
    output:
        report("results/generation/generation.png", caption=f"../report/{GENERATION_FIGURE.caption}",
               category="Generation", subcategory=GENERATION_FIGURE.subcategory),
    log:
        "logs/generation/plot.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/plot_generation.py"
