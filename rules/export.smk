# Export (export.runs, docs/export.md): finished runs as files others can load. A CLM run becomes a
# transformers Llama checkpoint (safetensors + config.json); an MLM run loads with plmscale.export.load_exported.
# Each exported CLM run also writes a few sampled sequences, the quickest check that the weights work.


rule export_run:
    input:
        metrics="results/runs/{run_id}/metrics.json",
    output:
        directory("results/export/{run_id}"),
    wildcard_constraints:
        run_id=EXPORT_ID_PATTERN,
    log:
        "logs/export/{run_id}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/export_run.py"


rule sample_sequences:
    input:
        export="results/export/{run_id}",
    output:
        report("results/export/{run_id}.samples.fasta", caption="../report/samples.rst", category="Exported models"),
    wildcard_constraints:
        run_id=EXPORT_ID_PATTERN,
    params:
        n=config["export"]["samples"],
        seed=config["export"]["sample_seed"],
    log:
        "logs/export/{run_id}.samples.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/sample_sequences.py"
