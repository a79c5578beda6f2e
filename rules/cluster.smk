# Cluster the unique sequences with MMseqs2; clusters.tsv is sorted so reruns give identical bytes.


rule cluster:
    input:
        "results/data/dedup/unique.fasta.gz",
    output:
        clusters="results/data/cluster/clusters.tsv",
        sizes="results/data/cluster/cluster_sizes.tsv",
        stats="results/data/cluster/stats.json",
    params:
        method=config["data"]["cluster"]["method"],
        min_seq_id=config["data"]["cluster"]["min_seq_id"],
        coverage=config["data"]["cluster"]["coverage"],
        cov_mode=config["data"]["cluster"]["cov_mode"],
        cluster_mode=config["data"]["cluster"]["cluster_mode"],
        sensitivity=config["data"]["cluster"]["sensitivity"],
        second_level=json_param(config["data"]["cluster"]["second_level"]),
        extra_args=json_param(config["data"]["cluster"]["extra_args"]),
    log:
        main="logs/data/cluster/cluster.log",
        mmseqs="logs/data/cluster/mmseqs.log",
    benchmark:
        "results/benchmarks/data/cluster.tsv"
    threads: config["data"]["cluster"]["threads"]
    resources:
        mem_mb=config["data"]["cluster"]["mem_mb"],
        runtime=24 * 60,
    conda:
        "../envs/mmseqs2.yaml"
    script:
        "../workflow_scripts/cluster.py"
