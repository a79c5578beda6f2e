"""Benchmark: peak memory and wall time of every data step at two corpus sizes, next to MMseqs2.

    python benchmarks/data_scale.py --sizes 1000000 10000000 --workdir /tmp/plmscale-datascale

For each size N, generates two sources of N/2 raw records each (numpy; residues drawn from the UniProt
background composition, lengths 30-90, mean ~50: short so that N = 10^7 runs in well under an hour on two
cores), with exact duplicates (5%, within and across sources) and near-duplicates (10%, ~3% of residues
substituted: what linclust at 90% identity merges), then runs the workflow's own functions step by step:

  clean            per source (plmscale.data.clean)
  dedup            one job: DuckDB groups the records by sequence (--threads, --mem-mb)
  cluster          plmscale.data.mmseqs.cluster_sequences (linclust at 90%, no second level) without the
                   MMseqs2 process: our numbering, and DuckDB's naming and ordering of its output
  MMseqs2          easy-linclust itself, the baseline (its peak RSS, wall time and peak disk: database,
                   temporary files and the numbered input; and its own, anonymous memory apart from the
                   database pages it maps, which its peak RSS counts)
  split            one job: DuckDB joins members to records, Python writes the split FASTAs
  tokenize         per split (plmscale.data.tokenize)

Every step (each source, each split) runs in its own subprocess, so its peak RSS (VmHWM) is its own; a
step's row gives the largest peak over its jobs and the sum of their wall times (Slurm runs the jobs of a
step side by side). MMseqs2 runs under /usr/bin/time for its own peak. The last rows compare plmscale's own
time (every step but MMseqs2's commands) with easy-linclust's, both measured in this run.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from plmscale.data import dedup as dedup_module  # noqa: E402
from plmscale.data import split as split_module  # noqa: E402
from plmscale.data.gzio import open_write  # noqa: E402

AMINO = np.frombuffer(b"ARNDCQEGHILKMFPSTWYV", np.uint8)
# UniProtKB/Swiss-Prot background composition (%), same order as AMINO
BACKGROUND = np.array([8.25, 5.53, 4.06, 5.45, 1.37, 3.93, 6.75, 7.07, 2.27, 5.96,
                       9.66, 5.84, 2.42, 3.86, 4.70, 6.56, 5.34, 1.08, 2.92, 6.87])
SOURCES = ("reference", "metagenomic")
MIN_LEN, MAX_LEN = 30, 90
EXACT_SHARE, NEAR_SHARE, NEAR_SUBSTITUTION = 0.05, 0.10, 0.03
CHUNK = 200_000


# ---- corpus ---------------------------------------------------------------------------------------------
def generate(directory: Path, n: int, seed=0) -> dict:
    """Two raw gzip FASTA sources of n // 2 records each; returns {source: path}."""
    rng = np.random.default_rng(seed)
    probabilities = BACKGROUND / BACKGROUND.sum()
    recent = []   # a window of earlier sequences to copy: duplicates without holding the corpus
    paths = {}
    for source in SOURCES:
        paths[source] = directory / f"{source}.raw.fasta.gz"
        with open_write(paths[source]) as out:
            for start in range(0, n // 2, CHUNK):
                m = min(CHUNK, n // 2 - start)
                lengths = rng.integers(MIN_LEN, MAX_LEN + 1, m)
                residues = AMINO[rng.choice(20, size=int(lengths.sum()), p=probabilities)]
                offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()
                kind = rng.random(m)
                # Per record: which positions a near-duplicate changes, and to what.
                substitute = rng.random((m, MAX_LEN)) < NEAR_SUBSTITUTION
                replacement = AMINO[rng.integers(0, 20, (m, MAX_LEN))]
                blob = residues.tobytes()
                records = []
                for k in range(m):
                    if recent and kind[k] < EXACT_SHARE:
                        sequence = recent[int(kind[k] * 1e9) % len(recent)]
                    elif recent and kind[k] < EXACT_SHARE + NEAR_SHARE:
                        template = np.frombuffer(recent[int(kind[k] * 1e9) % len(recent)], np.uint8).copy()
                        where = substitute[k, :len(template)]
                        template[where] = replacement[k, :len(template)][where]
                        sequence = template.tobytes()
                    else:
                        sequence = blob[offsets[k]:offsets[k + 1]]
                    records.append(b">%s_%09d len=%d\n%s\n" % (source[:3].upper().encode(), start + k,
                                                               len(sequence), sequence))
                    if k % 50 == 0:
                        recent.append(sequence)
                        if len(recent) > 20_000:
                            del recent[:10_000]
                out.write(b"".join(records))
    return paths


# ---- one step in a subprocess -----------------------------------------------------------------------------
def peak_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_step(args) -> dict:
    """Inside the subprocess: run one job of one step; return what the parent records."""
    spec = json.loads(args.step)
    kind, started = spec["kind"], time.monotonic()
    extra = {}
    if kind == "clean":
        from plmscale.data.clean import clean_fasta
        clean_fasta(spec["raw"], spec["clean"], spec["clean"] + ".stats.json", spec["source"], MIN_LEN - 5,
                    None, False)
    elif kind == "dedup":
        dedup_module.dedup(spec["clean"], spec["fasta"], spec["provenance"], spec["stats"],
                           threads=spec["threads"], mem_mb=spec["mem_mb"])
    elif kind == "cluster":
        extra = _cluster_with_mmseqs_measured(spec)
    elif kind == "split":
        split_module.split_by_cluster(spec["fasta"], spec["clusters"], spec["provenance"], spec["out"],
                                      spec["stats"], valid_fraction=0.05, test_fraction=0.05,
                                      sources=list(SOURCES), threads=spec["threads"], mem_mb=spec["mem_mb"])
    elif kind == "tokenize":
        from plmscale.data.tokenize import tokenize_split
        tokenize_split(spec["fasta"], spec["out_dir"], spec["split"], list(SOURCES), 100_000_000)
    else:
        raise SystemExit(f"unknown step {kind}")
    usage = resource.getrusage(resource.RUSAGE_SELF)   # every thread of this job (DuckDB's, gzip's)
    return {"wall_s": time.monotonic() - started, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": peak_rss_mb(), **extra}


def _cluster_with_mmseqs_measured(spec) -> dict:
    """cluster_sequences with MMseqs2 run under /usr/bin/time (its own peak RSS and wall time) and the
    disk of its work folder sampled every second."""
    from plmscale.data.mmseqs import cluster_sequences
    measures = Path(spec["work"]) / "mmseqs_time.txt"
    wrapper = Path(spec["work"]) / "mmseqs_timed"
    wrapper.write_text(f"#!/bin/sh\nexec /usr/bin/time -a -o {measures} -f '%M %e %U %S' {shutil.which('mmseqs')} "
                       '"$@"\n')
    wrapper.chmod(0o755)
    tmp_root = Path(spec["work"]) / "mmseqs_tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    peak_disk, peak_anon = [0], [0.0]
    stop = threading.Event()

    def sample_mmseqs():
        ticks = 0
        while not stop.wait(0.2):
            # MMseqs2's own memory, apart from the database files it maps (which the kernel can reclaim and
            # /usr/bin/time counts in its peak RSS): summed over its processes, five times a second.
            peak_anon[0] = max(peak_anon[0], _anonymous_mb(_descendants(os.getpid())))
            ticks += 1
            if ticks % 5 == 0:
                peak_disk[0] = max(peak_disk[0], _disk_bytes(tmp_root))

    sampler = threading.Thread(target=sample_mmseqs, daemon=True)
    sampler.start()
    try:
        cluster_sequences(spec["fasta"], spec["clusters"], spec["sizes"], spec["stats"], method="linclust",
                          min_seq_id=0.9, coverage=0.8, threads=spec["threads"], mem_mb=spec["mem_mb"],
                          tmp_root=tmp_root, mmseqs_log=Path(spec["work"]) / "mmseqs.log", binary=str(wrapper))
    finally:
        stop.set()
        sampler.join()
    runs = [line.split() for line in measures.read_text().splitlines() if line.strip()]
    # One line per mmseqs call: the version query and easy-linclust (whose own sub-steps it waits for).
    return {"mmseqs_wall_s": sum(float(wall) for _, wall, _, _ in runs),
            "mmseqs_cpu_s": sum(float(user) + float(system) for _, _, user, system in runs),
            "mmseqs_peak_rss_mb": max(int(rss) for rss, _, _, _ in runs) / 1024,
            "mmseqs_peak_disk_gb": peak_disk[0] / 1e9, "mmseqs_peak_anon_mb": peak_anon[0]}


def _descendants(pid: int) -> list:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in children] + [d for c in children for d in _descendants(int(c))]


def _anonymous_mb(pids) -> float:
    """Summed RssAnon of the MMseqs2 processes among pids."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("Name", "").strip().startswith("mmseqs") and "RssAnon" in fields:
            total += int(fields["RssAnon"].split()[0]) / 1024
    return total


def _disk_bytes(root: Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except OSError:  # removed while walking
                pass
    return total


def spawn(spec: dict) -> dict:
    result = subprocess.run([sys.executable, __file__, "--step", json.dumps(spec)], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"})
    if result.returncode != 0:
        raise SystemExit(f"step {spec['kind']} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---- one corpus size --------------------------------------------------------------------------------------
def measure(n: int, workdir: Path, mem_mb: int, threads: int, mmseqs_mem_mb: int, keep=False) -> dict:
    work = workdir / f"n{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    raw = generate(work, n)
    rows = {"generate (not a workflow step)": {"jobs": 1, "wall_s": time.monotonic() - started,
                                                "cpu_s": float("nan"), "peak_rss_mb": float("nan")}}

    def record(name, results):
        rows[name] = {"jobs": len(results), "wall_s": sum(r["wall_s"] for r in results),
                      "cpu_s": sum(r["cpu_s"] for r in results),
                      "peak_rss_mb": max(r["peak_rss_mb"] for r in results)}
        print(f"  n={n:>11,} {name:<34} {len(results):>4} jobs {rows[name]['wall_s']:8.1f} s "
              f"{rows[name]['cpu_s']:8.1f} CPU-s {rows[name]['peak_rss_mb']:8.1f} MB", flush=True)
        return results

    clean = {source: str(work / f"{source}.clean.fasta.gz") for source in SOURCES}
    record("clean", [spawn({"kind": "clean", "raw": str(raw[s]), "clean": clean[s], "source": s})
                     for s in SOURCES])

    unique, provenance = str(work / "unique.fasta.gz"), str(work / "provenance.tsv.gz")
    record("dedup", [spawn({"kind": "dedup", "clean": clean, "fasta": unique, "provenance": provenance,
                            "stats": str(work / "dedup.json"), "threads": threads, "mem_mb": mem_mb})])

    clusters = str(work / "clusters.tsv")
    (cluster,) = record("cluster (plmscale, incl. MMseqs2)", [spawn(
        {"kind": "cluster", "fasta": unique, "clusters": clusters, "sizes": str(work / "sizes.tsv"),
         "stats": str(work / "cluster.json"), "work": str(work), "threads": threads, "mem_mb": mmseqs_mem_mb})])
    # The job's own CPU time leaves out MMseqs2's (a child process): it is the wrapper's.
    rows["cluster (plmscale, without MMseqs2)"] = {"jobs": 1, "wall_s": cluster["wall_s"] - cluster["mmseqs_wall_s"],
                                                   "cpu_s": cluster["cpu_s"], "peak_rss_mb": cluster["peak_rss_mb"]}
    rows["MMseqs2 easy-linclust (baseline)"] = {"jobs": 1, "wall_s": cluster["mmseqs_wall_s"],
                                                "cpu_s": cluster["mmseqs_cpu_s"],
                                                "peak_rss_mb": cluster["mmseqs_peak_rss_mb"],
                                                "peak_disk_gb": cluster["mmseqs_peak_disk_gb"],
                                                "peak_anon_mb": cluster["mmseqs_peak_anon_mb"]}
    del rows["cluster (plmscale, incl. MMseqs2)"]
    print(f"  n={n:>11,} MMseqs2: {cluster['mmseqs_wall_s']:.1f} s, {cluster['mmseqs_peak_rss_mb']:.0f} MB resident "
          f"({cluster['mmseqs_peak_anon_mb']:.0f} MB its own, the rest its mapped database), "
          f"peak disk {cluster['mmseqs_peak_disk_gb']:.2f} GB", flush=True)

    out = {split: str(work / "split" / f"{split}.fasta.gz") for split in split_module.SPLITS}
    record("split", [spawn({"kind": "split", "fasta": unique, "clusters": clusters, "provenance": provenance,
                            "out": out, "stats": str(work / "split" / "stats.json"), "threads": threads,
                            "mem_mb": mem_mb})])
    record("tokenize", [spawn({"kind": "tokenize", "fasta": out[split], "out_dir": str(work / "shards" / split),
                               "split": split}) for split in split_module.SPLITS])
    stats = {name: json.loads((work / name).read_text()) for name in ("dedup.json", "cluster.json")}
    rows["_corpus"] = {"n_raw": n, "n_unique": stats["dedup.json"]["n_unique"],
                       "n_clusters": stats["cluster.json"]["n_clusters"],
                       "residues_unique": stats["dedup.json"]["n_residues_unique"]}
    ours = [row for name, row in rows.items() if not name.startswith(("_", "generate", "MMseqs2"))]
    own, own_cpu = sum(row["wall_s"] for row in ours), sum(row["cpu_s"] for row in ours)
    baseline = rows["MMseqs2 easy-linclust (baseline)"]
    rows["_own"] = {"own_s": own, "linclust_s": baseline["wall_s"], "ratio": own / baseline["wall_s"],
                    "own_cpu_s": own_cpu, "linclust_cpu_s": baseline["cpu_s"], "cpu_ratio": own_cpu / baseline["cpu_s"]}
    print(f"  n={n:>11,} plmscale's own time {own:.1f} s = {own / baseline['wall_s']:.2f} x easy-linclust "
          f"({baseline['wall_s']:.1f} s); CPU {own_cpu:.1f} s = {own_cpu / baseline['cpu_s']:.2f} x "
          f"({baseline['cpu_s']:.1f} s)", flush=True)
    if not keep:
        shutil.rmtree(work)
    return rows


def table(results: dict) -> str:
    sizes = list(results)
    steps = [name for name in results[sizes[0]] if not name.startswith("_")]
    head = "| step | " + " | ".join(f"wall s, N={n:,}" for n in sizes) + " | " + \
        " | ".join(f"CPU s, N={n:,}" for n in sizes) + " | " + \
        " | ".join(f"peak RSS MB, N={n:,}" for n in sizes) + " | RSS ratio |"
    lines = [head, "|" + "---|" * (2 + 3 * len(sizes))]
    for step in steps:
        walls = [results[n][step]["wall_s"] for n in sizes]
        rss = [results[n][step]["peak_rss_mb"] for n in sizes]
        ratio = rss[-1] / rss[0] if rss[0] == rss[0] and rss[0] else float("nan")
        cpus = [results[n][step].get("cpu_s", float("nan")) for n in sizes]
        lines.append(f"| {step} | " + " | ".join(f"{w:.1f}" for w in walls) + " | " +
                     " | ".join("-" if c != c else f"{c:.1f}" for c in cpus) + " | " +
                     " | ".join("-" if r != r else f"{r:.0f}" for r in rss) + " | " +
                     ("-" if ratio != ratio else f"{ratio:.2f}") + " |")
    for n in sizes:
        corpus = results[n]["_corpus"]
        mmseqs = results[n]["MMseqs2 easy-linclust (baseline)"]
        own = results[n]["_own"]
        # Older --json files have no anonymous-memory figure.
        anon = f"MMseqs2's own memory {mmseqs['peak_anon_mb']:.0f} MB; " if "peak_anon_mb" in mmseqs else ""
        lines.append(f"\nN={n:,}: {corpus['n_unique']:,} unique, {corpus['residues_unique']:,} residues, "
                     f"{corpus['n_clusters']:,} clusters; MMseqs2 peak disk {mmseqs['peak_disk_gb']:.2f} GB; {anon}"
                     f"plmscale's own time "
                     f"{own['own_s']:.1f} s = {own['ratio']:.2f} x easy-linclust ({own['linclust_s']:.1f} s), CPU "
                     f"{own.get('own_cpu_s', float('nan')):.1f} s = {own.get('cpu_ratio', float('nan')):.2f} x "
                     f"({own.get('linclust_cpu_s', float('nan')):.1f} s)")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/plmscale-datascale"))
    parser.add_argument("--mem-mb", type=int, default=1000,
                        help="memory of the dedup and split jobs (data.engine.mem_mb; DuckDB gets 60%% beyond 300 MB)")
    parser.add_argument("--threads", type=int, default=2, help="threads of MMseqs2 and of the DuckDB steps")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (to compare outputs)")
    parser.add_argument("--mmseqs-mem-mb", type=int, default=8000, help="mem_mb of the cluster step (MMseqs2 gets 80%%)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--combine", type=Path, nargs="+", help="print one table from earlier --json files")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(run_step(args)))
        return
    if args.combine:
        results = {}
        for path in args.combine:
            results.update({int(n): rows for n, rows in json.loads(path.read_text()).items()})
        print(table(dict(sorted(results.items()))))
        return
    results = {}
    for n in args.sizes:
        results[n] = measure(n, args.workdir, args.mem_mb, args.threads, args.mmseqs_mem_mb, args.keep)
    if args.json:
        args.json.write_text(json.dumps({str(n): r for n, r in results.items()}, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
