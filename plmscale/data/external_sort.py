"""Sort more records than fit in memory: sorted runs spilled to disk, then merged.

Records are tuples of str without tabs or newlines (ids are first words of FASTA headers, so they hold
neither). The order is exactly Python's `sorted(records, key=key)`, ties included, so a streamed result
equals the in-memory one byte for byte. Memory is `chunk_records` records plus a read buffer per merged run.
"""

import heapq
import shutil
import tempfile
from itertools import islice
from pathlib import Path

# ~50 MB of tuples of two or three short ids.
CHUNK_RECORDS = 200_000
# Runs merged at once: keeps open files far under the usual limit of 1024, whatever the corpus size.
MERGE_FAN_IN = 64


def sorted_records(records, work_dir, key=None, chunk_records=None, fan_in=None):
    """Yield `records` (an iterable of str tuples) in `sorted(records, key=key)` order.

    The input is read completely before the first record is yielded, so an error raised while producing
    it surfaces before anything downstream is written. Spilled runs live in a fresh folder under
    `work_dir`, removed when the generator finishes or is closed.
    """
    chunk_records = chunk_records or CHUNK_RECORDS
    fan_in = max(2, fan_in or MERGE_FAN_IN)
    records = iter(records)
    chunk = list(islice(records, chunk_records))
    if len(chunk) < chunk_records:
        # Everything fits in one chunk: no disk at all.
        yield from sorted(chunk, key=key)
        return
    run_dir = Path(tempfile.mkdtemp(prefix="sort-", dir=work_dir))
    try:
        runs = []
        while chunk:
            chunk.sort(key=key)
            runs.append(_write_run(chunk, run_dir, len(runs)))
            chunk = list(islice(records, chunk_records))
        generation = 0
        while len(runs) > fan_in:
            # Neighbouring runs are merged in order, so equal keys keep their input order as in `sorted`.
            generation += 1
            merged = []
            for start in range(0, len(runs), fan_in):
                group = runs[start:start + fan_in]
                merged.append(_write_run(_merge(group, key), run_dir, f"{generation}-{len(merged)}"))
                for path in group:
                    path.unlink()
            runs = merged
        yield from _merge(runs, key)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _write_run(records, run_dir, name) -> Path:
    path = run_dir / f"run-{name}.tsv"
    with open(path, "w", buffering=1 << 20) as out:
        out.writelines("\t".join(record) + "\n" for record in records)
    return path


def read_tsv(path, buffering=1 << 16):
    """Records of a file written as these runs are (tab-separated fields, one record a line), as tuples."""
    with open(path, buffering=buffering) as handle:
        for line in handle:
            yield tuple(line[:-1].split("\t"))


def _merge(paths, key):
    return heapq.merge(*(read_tsv(path) for path in paths), key=key)
