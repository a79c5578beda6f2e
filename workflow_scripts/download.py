"""Snakemake script: fetch one source into results/data/raw (rule download)."""
from plmscale.data.atomic import write_json
from plmscale.data.download import fetch_to
from plmscale.logging_setup import log_to_file

log_to_file(snakemake.log[0])
url = snakemake.params.url
# A demo or local source arrives as the rule's input (so Snakemake tracks it); read that file.
source = snakemake.input[0] if url.startswith("demo:") else url
info = fetch_to(source, snakemake.output.fasta, snakemake.config["data"]["download"],
                md5=snakemake.params.md5 or None, sha256=snakemake.params.sha256 or None)
write_json(snakemake.output.stats, {**info, "url": url})
