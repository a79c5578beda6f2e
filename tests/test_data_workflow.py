"""End to end: the real `snakemake` runs the data stage on a small demo corpus in a scratch copy of the
workflow. Counts must add up through every stage, a second run must have nothing to do, a run from scratch
must give byte-identical shards, and changing the clustering identity must rerun cluster and what follows,
not download."""

import csv
import gzip
import shutil
from collections import Counter

import pytest
import yaml

from workflow_helpers import SNAKEMAKE, planned_rules, read_json, run_snakemake, workflow_copy

SPLITS = ("train", "valid", "test")
TARGETS = [f"results/data/shards/{split}/manifest.json" for split in SPLITS]
CONFIG = {
    "data": {
        "demo": {"seed": 5, "n_families": 16, "members_per_family": 6, "n_exact_duplicates": 8,
                 "n_malformed": 7},
        # The demo's truth table expects its planted over-long records dropped, so this test sets a cap
        # (the default keeps long proteins for the sampler to crop).
        "clean": {"max_length": 1022},
        "cluster": {"method": "linclust", "min_seq_id": 0.5, "threads": 2, "mem_mb": 4000},
        "split": {"valid_fraction": 0.2, "test_fraction": 0.2},
        "shards": {"max_tokens_per_shard": 5000},
    }
}

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("mmseqs") is None, reason="needs the mmseqs binary"),
              pytest.mark.skipif(not SNAKEMAKE.exists(), reason="needs snakemake next to the Python running pytest")]


def _snakemake(workdir, *args):
    return run_snakemake(workdir, *args, targets=TARGETS)


def _n_records(path):
    with gzip.open(path, "rb") as handle:
        return handle.read().count(b">")


def _shard_fingerprint(workdir):
    return {split: (workdir / f"results/data/shards/{split}/manifest.json").read_bytes() for split in SPLITS}


def test_data_stage_end_to_end(tmp_path):
    work = workflow_copy(tmp_path / "wf", CONFIG)
    _snakemake(work)
    results = work / "results/data"

    # Every record accounted for, stage by stage.
    kept = 0
    for source in ("reference", "metagenomic"):
        clean = read_json(results / f"clean/{source}.stats.json")
        assert clean["seen"] == _n_records(results / f"raw/{source}.fasta.gz")
        assert clean["seen"] == clean["kept"] + clean["dropped_invalid"] + clean["dropped_length"]
        # The clean step does to each planted defect what the demo's truth table says it should.
        expected = Counter(row["expected"] for row in
                           csv.DictReader(open(results / f"demo/{source}.truth.tsv"), delimiter="\t"))
        assert clean["kept"] == expected["kept"] + expected["duplicate"]
        assert clean["dropped_invalid"] == expected["dropped_invalid"] >= 1
        assert clean["dropped_length"] == expected["dropped_length"] >= 1
        kept += clean["kept"]
    dedup = read_json(results / "dedup/stats.json")
    assert dedup["n_seen"] == kept
    assert dedup["n_duplicates"] == 8 and dedup["n_unique"] == kept - 8
    cluster = read_json(results / "cluster/stats.json")
    assert cluster["n_sequences"] == dedup["n_unique"]
    split = read_json(results / "split/stats.json")
    assert sum(s["n_sequences"] for s in split["splits"].values()) == dedup["n_unique"]
    manifests = {s: read_json(results / f"shards/{s}/manifest.json") for s in SPLITS}
    assert sum(m["n_sequences"] for m in manifests.values()) == dedup["n_unique"]
    for s in SPLITS:
        assert manifests[s]["n_sequences"] == split["splits"][s]["n_sequences"]
        assert manifests[s]["n_tokens"] == split["splits"][s]["n_residues"]
        for shard in manifests[s]["shards"]:
            assert (results / f"shards/{s}" / shard["bin"]).exists()

    # Each raw file says how its completeness was established; no temporaries are left anywhere.
    for source in ("reference", "metagenomic"):
        download = read_json(results / f"raw/{source}.download.json")
        assert download["url"] == f"demo:{source}" and download["completeness"]["verified"]
    assert not [p for p in results.rglob("*") if ".tmp-" in p.name or p.name.endswith(".part")]

    # Nothing to do right after.
    assert "Nothing to be done" in _snakemake(work, "--dry-run")

    # From scratch, twice more (three runs in all, MMseqs2 on 2 threads): identical shards every time.
    # The manifests hold the sha256 of every shard file, so equal manifests mean equal bytes.
    first = _shard_fingerprint(work)
    for _ in range(2):
        shutil.rmtree(work / "results")
        _snakemake(work)
        assert _shard_fingerprint(work) == first

    # A new clustering identity reruns cluster and everything after it, and nothing before.
    changed = {**CONFIG, "data": {**CONFIG["data"], "cluster": {**CONFIG["data"]["cluster"], "min_seq_id": 0.9}}}
    (work / "config.yaml").write_text(yaml.safe_dump(changed))
    planned = planned_rules(_snakemake(work, "--dry-run"))
    assert planned == {"cluster": 1, "split": 1, "tokenize": 3}, planned
