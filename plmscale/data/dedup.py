"""Exact duplicates across all sources: keep the first copy, remember every source that held it.

Sources are read in config order, so "first" means the earliest source in data.sources, then file order.
Ids become `{source}|{id}`: two sources may use the same id for different proteins.

One job, in memory bounded by its budget: DuckDB (plmscale.data.engine; memory_limit from the job's
memory, spilling to a scratch folder, on the rule's threads) reads the clean FASTAs, numbers each record by
its place in the corpus (source index, record index) and groups them by sequence (by its 128-bit md5, as the
hand-written version grouped by a 16-byte digest): each group's first copy, the sources holding it and its
copies, written in corpus order to a Parquet file in the scratch folder. The connection is closed before
Python streams the clean FASTAs again, so DuckDB's buffers are not held beside the write pass's (a job's
peak no longer grows with the corpus until DuckDB fills its limit: docs/benchmarks.md). That pass reads
the FASTAs a block of records at a time (numpy, no call per record: plmscale.data.recordblocks) and
writes the first copies in corpus order; the gzip writer cuts its
blocks where one write per record would have, so unique.fasta.gz and provenance.tsv.gz are the same bytes
as before. An id repeated within a source with another sequence is an error.
"""

import io
import logging
import shutil

import numpy as np

from plmscale.data import engine
from plmscale.data.atomic import scratch_dir, write_json
from plmscale.data.gzio import open_read
from plmscale.data.recordblocks import GzipBatchWriter, RowStream, concat_segments, constant, decimals, \
    insert_at, keep_segments, read_record_blocks
from plmscale.errors import PlmscaleError

log = logging.getLogger(__name__)
SEPARATOR = "|"
_COUNTS = ("seen", "kept", "duplicates", "duplicates_within_source")
# A record's place in the corpus as one number: source index above these bits, record index below.
RECORD_BITS = 40
# A record: its place in the corpus, a hash of its id and the md5 of its sequence (see _load_source).
RECORDS_TABLE = "CREATE TABLE records (key BIGINT, id_hash UBIGINT, digest UHUGEINT)"
# The first copies as the write pass reads them: in corpus order.
FIRSTS_IN_CORPUS_ORDER = "SELECT key, mask, copies FROM firsts ORDER BY key"


def id_hash_sql(id_sql: str) -> str:
    """SQL for a 64-bit hash of an id (ids are compared by it first: a fixed-width column instead of a
    string per record; equal hashes are then compared as ids)."""
    return f"hash({id_sql})"


def _read_lines(con, path) -> None:
    con.execute(f"CREATE OR REPLACE TABLE lines AS SELECT line FROM {engine.read_lines(path)}")


def _load_source(con, index: int, source: str, path) -> None:
    """Append one clean FASTA's records to table records(key, id_hash, digest); check its two-line layout.
    The sequences themselves stay in the file: the write pass reads them again."""
    _read_lines(con, path)
    bad = con.execute("SELECT rowid FROM lines WHERE starts_with(line, '>') != (rowid % 2 = 0) "
                      "ORDER BY rowid LIMIT 1").fetchone()
    n_lines = engine.scalar(con, "SELECT count(*) FROM lines")
    if bad or n_lines % 2:
        line_no = bad[0] + 1 if bad else n_lines
        raise PlmscaleError(
            f"{path}, line {line_no}: expected a '>' header followed by one sequence line (the "
            "one-line-per-sequence FASTA the clean step writes); rerun the clean step or delete this file so "
            "Snakemake regenerates it")
    # Header and sequence lines narrowed first (a hash of the id; a 16-byte digest), then paired by record
    # index. The ids themselves are needed only where two hashes meet (_check_unique_ids).
    con.execute(f"""INSERT INTO records
        SELECT ({index}::BIGINT << {RECORD_BITS}) + h.idx, h.id_hash, s.digest
        FROM (SELECT rowid // 2 AS idx, {id_hash_sql(engine.fasta_id('line'))} AS id_hash FROM lines
              WHERE rowid % 2 = 0) h
        JOIN (SELECT rowid // 2 AS idx, md5_number(line) AS digest FROM lines WHERE rowid % 2 = 1) s
        USING (idx)""")
    con.execute("DROP TABLE lines")


def _group(con, clean_fastas: dict) -> dict:
    """Table firsts(key, mask, copies): the first copy of each sequence, the sources holding it (bits in
    config order) and its copies; returns the per-source counts."""
    sources = list(clean_fastas)
    if len(sources) > 62:
        raise PlmscaleError(f"data.sources lists {len(sources)} sources; dedup handles at most 62")
    # Copies meet by a 128-bit hash of their sequence (the hand-written version used a 16-byte digest too):
    # a fixed-width key groups several times faster than the sequence itself and spills far less.
    con.execute(RECORDS_TABLE)
    for index, (source, path) in enumerate(clean_fastas.items()):
        _load_source(con, index, source, path)
    group_records(con)
    per_source = {source: dict.fromkeys(_COUNTS, 0) for source in sources}
    seen = dict(con.execute(f"SELECT key >> {RECORD_BITS}, count(*) FROM records GROUP BY 1").fetchall())
    distinct = con.execute("SELECT " + ", ".join(f"count(*) FILTER (WHERE mask & {1 << index} <> 0)"
                                                 for index in range(len(sources))) + " FROM firsts").fetchone()
    # Within a source, every copy after the source's first one is a within-source duplicate.
    for index, source in enumerate(sources):
        counts = per_source[source]
        counts["seen"] = seen.get(index, 0)
        counts["duplicates_within_source"] = counts["seen"] - distinct[index]
    for index, kept in con.execute(f"SELECT key >> {RECORD_BITS}, count(*) FROM firsts GROUP BY 1").fetchall():
        per_source[sources[index]]["kept"] = kept
    for counts in per_source.values():
        counts["duplicates"] = counts["seen"] - counts["kept"]
    return per_source


def group_records(con) -> None:
    """Table firsts(key, mask, copies) from table records: one grouping by sequence; a source holds a
    sequence where its bit is set in the mask. (benchmarks/engine_memory.py runs this on records it makes.)"""
    con.execute(f"CREATE TABLE firsts AS SELECT min(key) AS key, bit_or(1::BIGINT << (key >> {RECORD_BITS})) "
                "AS mask, count(*) AS copies FROM records GROUP BY digest")


def _check_unique_ids(con, clean_fastas: dict) -> None:
    """Kept ids must be unique within a source: the same id twice in a source with different sequences is an
    error. Compared by their hashes; only the records whose hash another kept record of the source shares
    have their ids read again and compared."""
    kept = "(SELECT key, id_hash FROM records SEMI JOIN firsts USING (key))"
    shared = f"SELECT key >> {RECORD_BITS} AS source, id_hash FROM {kept} GROUP BY ALL HAVING count(*) > 1"
    if not engine.scalar(con, f"SELECT count(*) FROM ({shared})"):
        return
    con.execute(f"CREATE TABLE suspects AS SELECT key FROM {kept} k SEMI JOIN ({shared}) s "
                f"ON k.key >> {RECORD_BITS} = s.source AND k.id_hash = s.id_hash")
    for index, (source, path) in enumerate(clean_fastas.items()):
        _read_lines(con, path)
        repeated = con.execute(f"""SELECT id FROM (
            SELECT {engine.fasta_id('line')} AS id FROM lines
            SEMI JOIN suspects ON key = ({index}::BIGINT << {RECORD_BITS}) + lines.rowid // 2
            WHERE lines.rowid % 2 = 0)
            GROUP BY id HAVING count(*) > 1 ORDER BY id LIMIT 1""").fetchone()
        con.execute("DROP TABLE lines")
        if repeated:
            raise PlmscaleError(f"{path}: id {repeated[0]!r} occurs twice with different sequences; ids must be "
                                "unique within a source — rerun the clean step, or fix the source file")
    con.execute("DROP TABLE suspects")


def _write_firsts(clean_fastas: dict, firsts, writer, provenance) -> int:
    """Stream the clean FASTAs in corpus order and write each first copy (firsts: batches of key, mask and
    copies in key order, i.e. corpus order) to the unique FASTA and the provenance table, a block of records
    at a time. Returns the residues written."""
    sources = list(clean_fastas)
    holders_of = {}   # source mask -> b"\ta,b\t": few distinct masks
    wanted = RowStream(firsts)
    residues = 0
    for index, (source, path) in enumerate(clean_fastas.items()):
        base = index << RECORD_BITS
        prefix = f"{source}{SEPARATOR}".encode("ascii")
        for block in read_record_blocks(path):
            rows = wanted.take_below("key", base + block.first + len(block), ("key", "mask", "copies"))
            keep = rows["key"] - (base + block.first)
            if not len(keep):
                continue
            n = len(keep)
            # Each record as segments: '>', leading blanks, id, the rest of the header, then the header's
            # newline, the sequence and its newline. Kept records lose the blanks and the rest of the header
            # and gain the source prefix after the '>'.
            id_start, id_end = block.id_ranges()
            lengths = block.record_segments()
            kept = np.zeros((len(block), 5), bool)
            kept[keep] = (True, False, True, False, True)
            record_lengths = lengths[keep][:, [0, 2, 4]].sum(axis=1)
            starts = np.cumsum(record_lengths) - record_lengths
            fasta = insert_at(keep_segments(block.data, lengths, kept), starts + 1, prefix)
            writer.write(fasta, np.cumsum(record_lengths + len(prefix)))
            ids = (block.data, id_start[keep], (id_end - id_start)[keep])
            residues += int(block.sequence_lengths(keep).sum())
            masks, mask_of_row = np.unique(rows["mask"], return_inverse=True)
            for mask in masks.tolist():
                if mask not in holders_of:
                    holders_of[mask] = ("\t" + ",".join(s for i, s in enumerate(sources) if mask & (1 << i))
                                        + "\t").encode("ascii")
            holders = [holders_of[mask] for mask in masks.tolist()]
            holder_lengths = np.array([len(text) for text in holders], np.int64)
            holder_starts = np.cumsum(holder_lengths) - holder_lengths
            lines, line_ends = concat_segments([
                constant(prefix, n), ids,
                (np.frombuffer(b"".join(holders), np.uint8), holder_starts[mask_of_row], holder_lengths[mask_of_row]),
                decimals(rows["copies"]), constant(b"\n", n)])
            provenance.write(lines, line_ends)
    return residues


def dedup(clean_fastas: dict, out_fasta, out_provenance, out_stats, *, threads=1, mem_mb=None) -> dict:
    """clean_fastas is {source: path} in priority order. Writes the unique FASTA, provenance and stats;
    threads and mem_mb are the job's, for DuckDB (see plmscale.data.engine)."""
    sources = list(clean_fastas)
    work = scratch_dir(out_fasta)
    try:
        with engine.connect(work, threads=threads, mem_mb=mem_mb) as con:
            per_source = _group(con, clean_fastas)
            if not any(counts["kept"] for counts in per_source.values()):
                raise PlmscaleError(
                    f"no sequence survived the clean step in any source ({', '.join(sources)}): every record was "
                    f"dropped as invalid or outside the length limits — see results/data/clean/<source>.stats.json "
                    f"for why, then fix data.sources or data.clean in the config")
            _check_unique_ids(con, clean_fastas)
            n_shared = engine.scalar(con, "SELECT count(*) FROM firsts WHERE bit_count(mask) > 1")
            con.execute("DROP TABLE records")
            engine.copy_to_parquet(con, FIRSTS_IN_CORPUS_ORDER, work / "firsts.parquet")
        with GzipBatchWriter(out_fasta) as writer, GzipBatchWriter(out_provenance) as provenance:
            provenance.write_lines(b"unique_id\tsources\tn_copies\n")
            n_residues = _write_firsts(clean_fastas, engine.parquet_numpy_batches(work / "firsts.parquet"),
                                       writer, provenance)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    empty = [s for s, c in per_source.items() if c["kept"] == 0]
    emptied_by_dedup = [s for s in empty if per_source[s]["seen"] > 0]
    for source in empty:
        if source in emptied_by_dedup:
            log.warning("source %r is empty after dedup: all %d of its sequences are also in a source listed "
                        "before it in data.sources, which keeps them; its weight in data.sources will have "
                        "nothing to draw from, and training renormalises the other weights (the run's "
                        "provenance.json records the mix it used). List it earlier in data.sources to keep "
                        "its copies, or drop it", source, per_source[source]["seen"])
        else:
            log.warning("source %r has no sequence left after the clean step while other sources do: its weight "
                        "in data.sources will have nothing to draw from; see results/data/clean/%s.stats.json",
                        source, source)
    for source, counts in per_source.items():
        log.info("dedup %s: %d seen, %d kept, %d duplicates", source, counts["seen"], counts["kept"],
                 counts["duplicates"])
    n_seen = sum(c["seen"] for c in per_source.values())
    stats = {
        "sources": sources,
        "per_source": per_source,
        "n_seen": n_seen,
        "n_unique": writer.n_records,
        "n_duplicates": n_seen - writer.n_records,
        "n_residues_unique": n_residues,
        "empty_sources": empty,
        "emptied_by_dedup": emptied_by_dedup,
        "n_shared_across_sources": n_shared,
        "identity": "per source: seen = kept + duplicates; n_seen = n_unique + n_duplicates",
    }
    if writer.n_records != sum(c["kept"] for c in per_source.values()):
        raise PlmscaleError(f"dedup wrote {writer.n_records} records but counted {per_source}; delete "
                            "results/data/dedup and rerun the dedup step")
    write_json(out_stats, stats)
    return stats


def read_provenance(path):
    """Yield (unique_id, [sources], n_copies) in file order."""
    with io.TextIOWrapper(open_read(path), encoding="ascii") as handle:
        header = handle.readline()
        if header.rstrip("\n").split("\t") != ["unique_id", "sources", "n_copies"]:
            raise PlmscaleError(f"{path}: not a dedup provenance table (header {header.strip()!r}); "
                                "delete it and rerun the dedup step")
        for line in handle:
            unique_id, holders, copies = line.rstrip("\n").split("\t")
            yield unique_id, holders.split(","), int(copies)
