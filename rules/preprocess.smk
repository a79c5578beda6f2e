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


rule dedup:
    input:
        expand("results/data/clean/{source}.fasta.gz", source=SOURCES),
    output:
        fasta="results/data/dedup/unique.fasta.gz",
        provenance="results/data/dedup/provenance.tsv.gz",
        stats="results/data/dedup/stats.json",
    params:
        sources=SOURCES,
    log:
        "logs/data/dedup.log",
    benchmark:
        "results/benchmarks/data/dedup.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=6 * 60,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/dedup.py"
