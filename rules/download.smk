# Download: every source in data.sources -> results/data/raw/{source}.fasta.gz (always gzip).
# These run on the submitting machine: compute nodes of a cluster often have no network.
localrules:
    demo_corpus,
    demo_floor,
    download,


rule demo_corpus:
    output:
        fasta=expand("results/data/demo/{name}.fasta.gz", name=DEMO_CORPORA),
        truth=expand("results/data/demo/{name}.truth.tsv", name=DEMO_CORPORA),
    params:
        **DEMO_PARAMS,
    log:
        "logs/data/demo_corpus.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/demo_corpus.py"


# The demo process's entropy floor (docs/demo-design.md): its own random stream, so it is computed beside
# the corpus rather than after it (on the demo, each takes about half a minute on one core). Local, like the
# corpus: half a minute is less than a cluster's queue.
rule demo_floor:
    output:
        floor="results/data/demo/floor.json",
    params:
        **DEMO_PARAMS,
    log:
        "logs/data/demo_floor.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/demo_floor.py"


# Transport settings (data.download: timeout, retries, backoff) are read by the script from the config,
# not passed as params: they do not change the result, so changing them must not rerun the download.
rule download:
    input:
        download_input,
    output:
        fasta="results/data/raw/{source}.fasta.gz",
        stats="results/data/raw/{source}.download.json",
    params:
        url=source_setting("url"),
        md5=source_setting("md5"),
        sha256=source_setting("sha256"),
    log:
        "logs/data/download/{source}.log",
    benchmark:
        "results/benchmarks/data/download/{source}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=12 * 60,
    conda:
        "../envs/python.yaml"
    script:
        "../workflow_scripts/download.py"
