# Identity of every valid/test sequence to the train split (MMseqs2 search), binned for out-of-distribution
# evaluation (plmscale.data.identity, docs/ood.md). Training reads the valid table to report a final loss
# per bin; input functions in rules/common.smk.


rule identity:
    input:
        train="results/data/split/train.fasta.gz",
        valid="results/data/split/valid.fasta.gz",
        test="results/data/split/test.fasta.gz",
    output:
        valid=IDENTITY_TABLES["valid"],
        test=IDENTITY_TABLES["test"],
        summary=IDENTITY_SUMMARY,
    params:
        bins=json_param(config["data"]["identity"]["bins"]),
        sensitivity=config["data"]["identity"]["sensitivity"],
        coverage=config["data"]["identity"]["coverage"],
        cov_mode=config["data"]["identity"]["cov_mode"],
        evalue=config["data"]["identity"]["evalue"],
        max_queries=config["data"]["identity"]["max_queries"],
        extra_args=json_param(config["data"]["identity"]["extra_args"]),
    log:
        main="logs/data/identity/identity.log",
        mmseqs="logs/data/identity/mmseqs.log",
    benchmark:
        "results/benchmarks/data/identity.tsv"
    threads: config["data"]["identity"]["threads"]
    resources:
        mem_mb=config["data"]["identity"]["mem_mb"],
        runtime=24 * 60,
    conda:
        "../envs/mmseqs2.yaml"
    script:
        "../workflow_scripts/identity.py"
