# Clean each source (alphabet policy, length limits, stats), then remove exact duplicates across sources.
from plmscale.data.partition import partition_names


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


# Exact dedup in bounded memory (plmscale/data/partition.py): each source is scattered to
# data.partitions.count files by a hash of the sequence, each partition is deduplicated by its own job (in
# parallel on a cluster), and the gather merges them back into corpus order. The scattered files are temp().
DEDUP_PARTITIONS = partition_names(config["data"]["partitions"]["count"])


rule dedup_scatter:
    input:
        "results/data/clean/{source}.fasta.gz",
    output:
        temp(expand("results/data/dedup/scatter/{{source}}/{part}.tsv", part=DEDUP_PARTITIONS)),
    params:
        source_index=lambda wildcards: SOURCES.index(wildcards.source),
    log:
        "logs/data/dedup/scatter_{source}.log",
    benchmark:
        "results/benchmarks/data/dedup/scatter_{source}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=6 * 60,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/dedup_scatter.py"


rule dedup_partition:
    input:
        expand("results/data/dedup/scatter/{source}/{{part}}.tsv", source=SOURCES),
    output:
        kept=temp("results/data/dedup/partitions/{part}.kept.tsv"),
        provenance=temp("results/data/dedup/partitions/{part}.provenance.tsv"),
        ids=temp("results/data/dedup/partitions/{part}.ids.txt"),
        stats=temp("results/data/dedup/partitions/{part}.stats.json"),
    params:
        sources=SOURCES,
        n_partitions=len(DEDUP_PARTITIONS),
    wildcard_constraints:
        part=r"\d{4}",
    log:
        "logs/data/dedup/partition_{part}.log",
    benchmark:
        "results/benchmarks/data/dedup/partition_{part}.tsv"
    threads: 1
    resources:
        mem_mb=config["data"]["partitions"]["mem_mb"],
        runtime=6 * 60,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/dedup_partition.py"


rule dedup:
    input:
        **{
            name: expand(f"results/data/dedup/partitions/{{part}}.{suffix}", part=DEDUP_PARTITIONS)
            for name, suffix in (
                ("kept", "kept.tsv"),
                ("provenance", "provenance.tsv"),
                ("ids", "ids.txt"),
                ("stats", "stats.json"),
            )
        },
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
    threads: 1
    resources:
        mem_mb=1000,
        runtime=6 * 60,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/dedup.py"
