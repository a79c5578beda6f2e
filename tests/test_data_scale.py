"""The data stage in bounded memory: dedup and the split's join are hash-partitioned, the partition count
scales with the corpus, each partition job enforces its memory budget, and Snakemake runs the dedup
partitions as jobs of their own."""

import gzip
import os
import random
import subprocess
import sys
import textwrap

import pytest

from plmscale.data import dedup as dedup_module
from plmscale.data import split as split_module
from plmscale.data.dedup import dedup
from plmscale.data.gzio import open_read
from plmscale.data.partition import OverBudget, entry_budget, partition_names, partitions_needed
from plmscale.data.split import SPLITS, split_by_cluster
from workflow_helpers import REPO, SNAKEMAKE, planned_rules, run_snakemake, workflow_copy

# 1 MB: a budget of a few thousand entries, so small corpora need many partitions.
TINY_MEM_MB = 1


def _corpus(directory, n, seed=0, duplicate_every=10, gzipped=True):
    """Two sources of n records in all, every duplicate_every-th a copy of an earlier sequence."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    sequences = []
    paths = {}
    for source in ("ref", "meta"):
        paths[source] = directory / f"{source}.fa.gz"
        with (gzip.open(paths[source], "wt", compresslevel=1) if gzipped else open(paths[source], "w")) as handle:
            for i in range(n // 2):
                if sequences and i % duplicate_every == 0:
                    sequence = rng.choice(sequences)
                else:
                    sequence = "".join(rng.choices("ACDEFGHIKLMNPQRSTVWY", k=rng.randint(30, 40)))
                    sequences.append(sequence)
                handle.write(f">{source}{i}\n{sequence}\n")
    return paths


def _clusters_for(unique_fasta, path, members=3):
    """A clusters.tsv over the unique ids: sorted ids in groups of `members`, named by their smallest."""
    with open_read(unique_fasta) as handle:
        ids = sorted(line[1:].strip().decode() for line in handle if line.startswith(b">"))
    with open(path, "w") as out:
        out.write("cluster_id\tmember_id\n")
        for start in range(0, len(ids), members):
            out.writelines(f"{ids[start]}\t{member}\n" for member in ids[start:start + members])
    return path


def test_partition_count_scales_with_the_corpus_and_every_partition_fits_its_budget(tmp_path):
    budget = entry_budget(TINY_MEM_MB, dedup_module.BYTES_PER_ENTRY)
    counts = {}
    for n in (2_000, 20_000):
        paths = _corpus(tmp_path / str(n), n)
        counts[n] = partitions_needed(n, TINY_MEM_MB, dedup_module.BYTES_PER_ENTRY)
        # Each partition job stops if its dict passes the budget, so finishing proves every partition fit.
        out = tmp_path / f"out{n}"
        stats = dedup(paths, out / "u.fa.gz", out / "p.tsv.gz", out / "s.json", n_partitions=counts[n],
                      mem_mb=TINY_MEM_MB)
        assert stats["n_seen"] == n == stats["n_unique"] + stats["n_duplicates"]
        assert stats["n_unique"] > budget  # more than one partition's worth: the partitions did the work
    assert counts[20_000] >= 8 * counts[2_000] >= 8

    # Too few partitions: the job stops before it outgrows its memory, and names the count that fits.
    paths = _corpus(tmp_path / "20000", 20_000)
    with pytest.raises(OverBudget, match=r"set data\.partitions\.count \(now 1\) to (\d+) or more") as error:
        dedup(paths, tmp_path / "x/u.fa.gz", tmp_path / "x/p.tsv.gz", tmp_path / "x/s.json", n_partitions=1,
              mem_mb=TINY_MEM_MB)
    suggested = int(error.value.args[0].split("to ")[1].split(" ")[0])
    dedup(paths, tmp_path / "x/u.fa.gz", tmp_path / "x/p.tsv.gz", tmp_path / "x/s.json", n_partitions=suggested,
          mem_mb=TINY_MEM_MB)


def test_split_join_fits_its_budget_only_with_enough_partitions(tmp_path):
    paths = _corpus(tmp_path / "corpus", 20_000)
    unique, provenance = tmp_path / "u.fa.gz", tmp_path / "p.tsv.gz"
    n_unique = dedup(paths, unique, provenance, tmp_path / "d.json", n_partitions=4)["n_unique"]
    clusters = _clusters_for(unique, tmp_path / "clusters.tsv")
    out = {split: tmp_path / "split" / f"{split}.fasta.gz" for split in SPLITS}
    needed = partitions_needed(n_unique, TINY_MEM_MB, split_module.BYTES_PER_ENTRY)
    assert needed > 1
    with pytest.raises(OverBudget, match=r"cluster members.*data\.partitions\.count \(now 1\)"):
        split_by_cluster(unique, clusters, provenance, out, tmp_path / "split/stats.json", n_partitions=1,
                         mem_mb=TINY_MEM_MB)
    stats = split_by_cluster(unique, clusters, provenance, out, tmp_path / "split/stats.json",
                             n_partitions=needed, mem_mb=TINY_MEM_MB)
    assert stats["n_sequences"] == n_unique


_PEAK_RSS_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from plmscale.data.dedup import dedup
    from plmscale.data.split import SPLITS, split_by_cluster
    step, work, n_partitions = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    if step == "dedup":
        dedup({s: work / f"{s}.fa.gz" for s in ("ref", "meta")}, work / "u2.fa.gz", work / "p2.tsv.gz",
              work / "d2.json", n_partitions=n_partitions)
    else:
        split_by_cluster(work / "u.fa.gz", work / "clusters.tsv", work / "p.tsv.gz",
                         {s: work / "split" / f"{s}.fasta.gz" for s in SPLITS}, work / "split/stats.json",
                         n_partitions=n_partitions)
    # VmHWM is this process's own peak: ru_maxrss would start from the parent's at fork.
    print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0])
""")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak RSS from /proc")
def test_peak_memory_does_not_grow_with_the_corpus(tmp_path):
    """Peak RSS of dedup and split in a fresh process, on a corpus and on one 10x larger with 10x the
    partitions. The in-memory passes they replaced held ~250 bytes per sequence (dedup more, split less):
    +90 MB between these two corpora. What remains is fixed-size buffers that the small corpus does not
    fill yet (gzip writers, the scatter's 4 MB) and ~130 KB per partition of merge buffers. The inputs are
    plain text (the readers detect gzip by content), so the gzip reader's ~40 MB read-ahead, which only
    files larger than these fill, does not blur the comparison."""
    sizes = ((40_000, 1), (400_000, 10))
    peak_kb = {}
    for n, n_partitions in sizes:
        work = tmp_path / str(n)
        paths = _corpus(work, n, gzipped=False)
        dedup(paths, work / "u.fa.gz", work / "p.tsv.gz", work / "d.json", n_partitions=n_partitions)
        for name in ("u.fa.gz", "p.tsv.gz"):
            (work / name).write_bytes(gzip.decompress((work / name).read_bytes()))
        _clusters_for(work / "u.fa.gz", work / "clusters.tsv")
        for step in ("dedup", "split"):
            result = subprocess.run([sys.executable, "-c", _PEAK_RSS_CHILD, step, str(work), str(n_partitions)],
                                    capture_output=True, text=True, cwd=REPO, check=True)
            peak_kb[step, n] = int(result.stdout.split()[-1])
    (small, _), (large, _) = sizes
    in_memory_growth_kb = (large - small) * 250 / 1024
    for step in ("dedup", "split"):
        assert peak_kb[step, large] - peak_kb[step, small] < 0.25 * in_memory_growth_kb, peak_kb


@pytest.mark.slow  # starts Snakemake: a DAG build of seconds; the fast set (-m "not slow") starts none
@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="needs snakemake next to the Python running pytest")
def test_dry_run_plans_one_job_per_dedup_partition(tmp_path):
    config = {"data": {"partitions": {"count": 3, "mem_mb": 1000}}}
    work = workflow_copy(tmp_path / "wf", config)
    output = run_snakemake(work, "--dry-run", targets=["results/data/dedup/stats.json"])
    planned = planned_rules(output)
    assert planned["dedup_scatter"] == 2 and planned["dedup_partition"] == 3 and planned["dedup"] == 1, planned
    for name in partition_names(3):
        assert f"results/data/dedup/partitions/{name}.kept.tsv" in output
