# Optional: this study's fit side by side with another fit.json of the same grid (fit.cross_check), e.g.
# the WSD demo grid against the cosine one (docs/wsd.md). Logic: plmscale.scaling.cross_check.

if config["fit"]["cross_check"]["fit"]:

    rule cross_check:
        input:
            fit="results/scaling/fit.json",
            runs="results/scaling/runs.csv",
            other=config["fit"]["cross_check"]["fit"],
        output:
            json="results/scaling/cross_check.json",
            md="results/scaling/cross_check.md",
            png=report("results/scaling/cross_check.png", caption="../report/cross_check.rst",
                       category="Scaling laws", subcategory="Cross-check"),
        params:
            labels=json_param(config["fit"]["cross_check"]),
        log:
            "logs/scaling/cross_check.log",
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            "../envs/python.yaml"
        script:
            "../workflow_scripts/cross_check.py"
