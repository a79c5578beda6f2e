# Whole clusters to train/valid/test (a FASTA plus cluster/source id sidecars per split), then each split to
# memmap token shards.
# The manifest is the declared output; the shard files it lists (with their sha256) sit beside it.


rule split:
    input:
        fasta="results/data/dedup/unique.fasta.gz",
        provenance="results/data/dedup/provenance.tsv.gz",
        clusters="results/data/cluster/clusters.tsv",
    output:
        train="results/data/split/train.fasta.gz",
        valid="results/data/split/valid.fasta.gz",
        test="results/data/split/test.fasta.gz",
        ids=expand("results/data/split/{split}.{kind}_ids.npy", split=SPLITS, kind=("cluster", "source")),
        stats="results/data/split/stats.json",
    params:
        valid_fraction=config["data"]["split"]["valid_fraction"],
        test_fraction=config["data"]["split"]["test_fraction"],
        salt=config["data"]["split"]["salt"],
        sources=SOURCES,
    log:
        "logs/data/split.log",
    benchmark:
        "results/benchmarks/data/split.tsv"
    # The member -> cluster join is DuckDB's, in this job's memory (spilling past it, see split.py).
    threads: config["data"]["engine"]["threads"]
    resources:
        mem_mb=config["data"]["engine"]["mem_mb"],
        runtime=6 * 60,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/split.py"


rule tokenize:
    input:
        fasta="results/data/split/{split}.fasta.gz",
        cluster_ids="results/data/split/{split}.cluster_ids.npy",
        source_ids="results/data/split/{split}.source_ids.npy",
    output:
        "results/data/shards/{split}/manifest.json",
    params:
        sources=SOURCES,
        max_tokens_per_shard=config["data"]["shards"]["max_tokens_per_shard"],
    log:
        "logs/data/tokenize/{split}.log",
    benchmark:
        "results/benchmarks/data/tokenize/{split}.tsv"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=6 * 60,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/tokenize.py"
