# Clean each source (alphabet policy, length limits, stats), then remove exact duplicates across sources.
rule clean:
    input:
        "results/data/raw/{source}.fasta.gz",
    output:
        fasta="results/data/clean/{source}.fasta.gz",
        stats="results/data/clean/{source}.stats.json",
    params:
        min_length=config["data"]["clean"]["min_length"],
        max_length=config["data"]["clean"]["max_length"],
        strict=config["data"]["clean"]["strict"],
        origin=source_setting("url"),
    log:
        "logs/data/clean/{source}.log",
    benchmark:
        "results/benchmarks/data/clean/{source}.tsv"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=6 * 60,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/clean.py"


# Exact dedup across sources in one job (plmscale/data/dedup.py): DuckDB groups the records by sequence in
# memory bounded by data.engine.mem_mb (spilling to a scratch folder), on data.engine.threads threads.
rule dedup:
    input:
        expand("results/data/clean/{source}.fasta.gz", source=SOURCES),
    output:
        fasta="results/data/dedup/unique.fasta.gz",
        provenance="results/data/dedup/provenance.tsv.gz",
        stats="results/data/dedup/stats.json",
    params:
        clean_fastas={source: f"results/data/clean/{source}.fasta.gz" for source in SOURCES},
    log:
        "logs/data/dedup.log",
    benchmark:
        "results/benchmarks/data/dedup.tsv"
    threads: config["data"]["engine"]["threads"]
    resources:
        mem_mb=config["data"]["engine"]["mem_mb"],
        runtime=6 * 60,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/dedup.py"
