# Mixed CLM+MLM training against each objective alone at equal compute (train.objectives mixed, docs/mixed.md):
# the runs are trained by rules/train.smk; this stage compares every mixed run with the CLM and MLM runs of its
# size and token target. Input functions are in rules/common.smk.

rule compare_mixed:
    input:
        metrics=mixed_comparison_files,
    output:
        summary="results/scaling/mixed.json",
        plot=report("results/scaling/mixed.png", caption="../report/mixed.rst",
                    category="Scaling laws", subcategory="Mixed objective"),
        vector=expand("results/scaling/mixed.{ext}", ext=["svg", "pdf"]),
    log:
        "logs/scaling/mixed.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/compare_mixed.py"
