"""The data stage in bounded memory: dedup and the split's join are DuckDB's, in the memory the config gives
their jobs (data.engine), and their peak memory does not grow with the corpus."""

import gzip
import os
import random
import subprocess
import sys
import textwrap

import pytest

from plmscale.data.dedup import dedup
from plmscale.data.gzio import open_read
from workflow_helpers import REPO, SNAKEMAKE, planned_rules, run_snakemake, workflow_copy


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


_PEAK_RSS_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from plmscale.data.dedup import dedup
    from plmscale.data.split import SPLITS, split_by_cluster
    step, work, mem_mb = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    if step == "dedup":
        dedup({s: work / f"{s}.fa.gz" for s in ("ref", "meta")}, work / "u2.fa.gz", work / "p2.tsv.gz",
              work / "d2.json", threads=2, mem_mb=mem_mb)
    else:
        split_by_cluster(work / "u.fa.gz", work / "clusters.tsv", work / "p.tsv.gz",
                         {s: work / "split" / f"{s}.fasta.gz" for s in SPLITS}, work / "split/stats.json",
                         threads=2, mem_mb=mem_mb)
    # VmHWM is this process's own peak: ru_maxrss would start from the parent's at fork.
    print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0])
""")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak RSS from /proc")
def test_peak_memory_stays_within_the_configured_budget(tmp_path):
    """Peak RSS of dedup and split in a fresh process with the smallest data.engine.mem_mb (512), on a
    corpus and on one 10x larger: both within the budget. The in-memory passes they replaced held ~250 bytes
    per sequence (dedup more, split less): +90 MB between these two corpora, without a ceiling. DuckDB fills
    its buffers up to its limit (128 MB here) and spills past it; the rest is the interpreter and the write
    buffers (engine.OVERHEAD_MB). The inputs are plain text (the readers detect gzip by content), so the gzip
    reader's ~40 MB read-ahead does not blur the comparison."""
    mem_mb = 512
    peak_kb = {}
    for n in (40_000, 400_000):
        work = tmp_path / str(n)
        paths = _corpus(work, n, gzipped=False)
        dedup(paths, work / "u.fa.gz", work / "p.tsv.gz", work / "d.json")
        for name in ("u.fa.gz", "p.tsv.gz"):
            (work / name).write_bytes(gzip.decompress((work / name).read_bytes()))
        _clusters_for(work / "u.fa.gz", work / "clusters.tsv")
        for step in ("dedup", "split"):
            result = subprocess.run([sys.executable, "-c", _PEAK_RSS_CHILD, step, str(work), str(mem_mb)],
                                    capture_output=True, text=True, cwd=REPO, check=True)
            peak_kb[step, n] = int(result.stdout.split()[-1])
    assert max(peak_kb.values()) < mem_mb * 1024, peak_kb


@pytest.mark.slow  # starts Snakemake: a DAG build of seconds; the fast set (-m "not slow") starts none
@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="needs snakemake next to the Python running pytest")
def test_dry_run_plans_one_dedup_job_with_the_engine_settings(tmp_path):
    config = {"data": {"engine": {"threads": 3, "mem_mb": 1000}}}
    work = workflow_copy(tmp_path / "wf", config)
    output = run_snakemake(work, "--dry-run", "--cores", "4", targets=["results/data/split/stats.json"])
    planned = planned_rules(output)
    assert planned["dedup"] == 1 and planned["split"] == 1 and "dedup_partition" not in planned, planned
    assert "threads: 3" in output and "mem_mb=1000" in output
