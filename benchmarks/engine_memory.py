"""Benchmark: peak memory of dedup's DuckDB core as the corpus grows, at one configured budget.

    python benchmarks/engine_memory.py --sizes 1000000 10000000 100000000 --mem-mb 1000

The paper's corpus is 939M sequences; benchmarks/data_scale.py can generate and run the whole data stage up
to ~30M on this machine. What decides whether a dedup job's memory stays flat beyond that is its DuckDB
core: the table of records (a key, an id hash and a sequence digest per record), the grouping by sequence
(plmscale.data.dedup.group_records) and the first copies streamed back in corpus order
(dedup.FIRSTS_IN_CORPUS_ORDER, as the write pass reads them), in a connection made by plmscale.data.engine
with the job's budget. This script makes that table in SQL (two sources of N/2 records, 1 in 14 records a
copy of another, so ~7% duplicates, as the generated corpora have) and runs exactly those queries, each
size in its own process so that its peak RSS (VmHWM) is its own.

Baseline, measured in the same run: a process that imports the same modules and opens the same
connection but makes no table (what every data job pays before it reads a record).
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from markdown_table import markdown_table  # noqa: E402  (benchmarks/, this script's directory)
from plmscale.data import dedup, engine  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(n: int, mem_mb: int, threads: int) -> dict:
    """One size, in this process: make the records, group them, stream the first copies in order."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="plmscale-engine-memory-") as work:
        with engine.connect(work, threads=threads, mem_mb=mem_mb) as con:
            firsts = 0
            if n:
                half = n // 2
                con.execute(dedup.RECORDS_TABLE)
                con.execute(f"""INSERT INTO records SELECT
                    ((i // {half})::BIGINT << {dedup.RECORD_BITS}) + i % {half}, hash(i),
                    md5_number((CASE WHEN i % 14 = 0 THEN i // 2 ELSE i END)::VARCHAR) FROM range({n}) t(i)""")
                dedup.group_records(con)
                con.execute("DROP TABLE records")
                engine.copy_to_parquet(con, dedup.FIRSTS_IN_CORPUS_ORDER, Path(work) / "firsts.parquet")
        if n:  # as dedup reads them: from disk, the connection closed
            for batch in engine.parquet_numpy_batches(Path(work) / "firsts.parquet"):
                firsts += len(batch["key"])
    return {"n": n, "firsts": firsts, "wall_s": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()}


def run_in_subprocess(n: int, mem_mb: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--step", str(n), "--mem-mb", str(mem_mb), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"size {n:,} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000, 30_000_000,
                                                                 100_000_000])
    parser.add_argument("--mem-mb", type=int, default=1000, help="the job's budget, data.engine.mem_mb")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB's threads, data.engine.threads")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--step", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step is not None:
        print(json.dumps(measure(args.step, args.mem_mb, args.threads)))
        return

    limit = engine.engine_memory_mb(args.mem_mb)
    print(f"budget data.engine.mem_mb {args.mem_mb} (DuckDB's memory_limit {limit} MB), {args.threads} threads",
          flush=True)
    baseline = run_in_subprocess(0, args.mem_mb, args.threads)
    rows, results = [["baseline: imports and connection, no table", "-", f"{baseline['wall_s']:.1f}",
                      f"{baseline['peak_rss_mb']:.0f}", "-", "-"]], [baseline]
    for n in args.sizes:
        result = run_in_subprocess(n, args.mem_mb, args.threads)
        results.append(result)
        first = results[1]["peak_rss_mb"]
        above = result["peak_rss_mb"] - baseline["peak_rss_mb"]
        print(f"  n={n:>13,}: {result['wall_s']:7.1f} s, peak {result['peak_rss_mb']:7.0f} MB", flush=True)
        rows.append([f"{n:,} records", f"{result['firsts']:,}", f"{result['wall_s']:.1f}",
                     f"{result['peak_rss_mb']:.0f}", f"{above / limit:.2f}", f"{result['peak_rss_mb'] / first:.2f}"])
    print(markdown_table(["records", "first copies", "wall s", "peak RSS MB",
                          "(peak - baseline) / DuckDB limit", "x the smallest size"], rows))
    if args.json:
        args.json.write_text(json.dumps({"mem_mb": args.mem_mb, "duckdb_limit_mb": limit, "threads": args.threads,
                                         "results": results}, indent=1))


if __name__ == "__main__":
    main()
