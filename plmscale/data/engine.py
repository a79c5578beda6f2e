"""DuckDB for the data stage's joins, sorts and group-bys, in memory bounded by the job's budget.

Why DuckDB (docs/benchmarks.md, "Choosing the engine"): its hash joins, aggregates and sorts spill to disk
once they reach `memory_limit`, so a job's memory is what the config gives it whatever the corpus size, and
they use the rule's threads. Polars was as fast or faster at 1M sequences but has no memory limit to set.

What keeps the outputs the bytes the hand-written sorts gave:
- every ORDER BY is on a total key (a unique column last), so threads cannot change the order;
- strings compare byte by byte (DuckDB's default collation), which for ASCII is Python's str order;
- tables are written without quoting (`QUOTE ''`): ids are FASTA words and hold no tab or newline;
- a file's lines are numbered by the reader itself (`CREATE TABLE ... AS` keeps insertion order, so a row's
  `rowid` is its line number), never by an unordered window;
- the gzip outputs stay Python's: the threaded ISA-L writer cuts its deflate blocks from the sizes of the
  writes, so batches of records go through recordblocks.GzipBatchWriter, which makes the cuts one write per
  record would have made.
"""

import shutil
from contextlib import contextmanager
from pathlib import Path

import duckdb

from plmscale.data.atomic import atomic_path
from plmscale.data.gzio import is_gzip
from plmscale.errors import PlmscaleError

# DuckDB's own floor: below this, even small sorts fail instead of spilling.
MIN_MEMORY_MB = 128
# What a job holds besides DuckDB's buffers: the interpreter with numpy, pandas and DuckDB loaded, the gzip
# reader's read-ahead and the writers' buffers, and the allocator's slack (measured: a 1M-sequence dedup
# peaked at 478 MB with DuckDB held to 153 MB).
OVERHEAD_MB = 300
# Share of the rest given to DuckDB's memory_limit: its limit covers its buffers, not every allocation.
ENGINE_SHARE = 0.6


def engine_memory_mb(job_mem_mb) -> int:
    """DuckDB's memory_limit for a job with `job_mem_mb` of memory (None: 2000 MB, the rules' default)."""
    return max(MIN_MEMORY_MB, int(((job_mem_mb or 2000) - OVERHEAD_MB) * ENGINE_SHARE))


@contextmanager
def connect(work_dir, *, threads=1, mem_mb=None, settings_key="data.engine"):
    """An in-memory DuckDB that spills to `work_dir/duckdb.tmp` past `engine_memory_mb(mem_mb)`, using
    `threads` threads. The spill folder is removed on exit. DuckDB running out of memory and disk, or
    failing to write, is a PlmscaleError naming the folder and `settings_key`.mem_mb (the config key that
    sets mem_mb)."""
    spill = Path(work_dir) / "duckdb.tmp"
    spill.mkdir(parents=True, exist_ok=True)
    limit_mb = engine_memory_mb(mem_mb)
    con = duckdb.connect(config={
        "threads": max(1, int(threads)),
        "memory_limit": f"{limit_mb}MB",
        "temp_directory": str(spill),
        "preserve_insertion_order": True,
    })
    con.execute("SET enable_progress_bar = false")
    try:
        yield con
    except (duckdb.OutOfMemoryException, duckdb.IOException) as error:
        raise PlmscaleError(_out_of_room(error, spill, limit_mb, settings_key)) from None
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


def _out_of_room(error, spill: Path, limit_mb: int, settings_key: str) -> str:
    """What to do when DuckDB could neither hold its work in memory nor spill it (or write a file)."""
    try:
        free = f"{shutil.disk_usage(spill).free / 1e9:.2f} GB free there now"
    except OSError:
        free = "its free space unknown"
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (f"DuckDB ran out of room: its memory limit is {limit_mb} MB ({settings_key}.mem_mb) and it spills "
            f"to {spill} ({free}). Free disk space on that drive (the scratch folder sits next to the step's "
            f"outputs), or raise {settings_key}.mem_mb so that less spills. DuckDB said: {first_line}")


def quote(path) -> str:
    """A path as an SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def read_tsv(path, columns: dict, *, header=False, delimiter="\\t") -> str:
    """SQL for a tab-separated file read as is: no quoting, no type guessing. columns: {name: SQL type}.
    Gzip is recognised by its content, as plmscale's own readers do, not by the file name."""
    spec = ", ".join(f"{quote(name)}: {quote(kind)}" for name, kind in columns.items())
    compression = "gzip" if is_gzip(path) else "none"
    return (f"read_csv({quote(path)}, columns={{{spec}}}, delim='{delimiter}', header={str(header).lower()}, "
            f"quote='', escape='', auto_detect=false, new_line='\\n', compression='{compression}')")


def read_lines(path) -> str:
    """SQL for the lines of a text file (gzip or plain), one VARCHAR column `line`, tabs and all (the
    delimiter is the NUL character, which text files do not hold)."""
    return read_tsv(path, {"line": "VARCHAR"}, delimiter="\x00")


def write_tsv(con, query: str, path, *, header=True) -> None:
    """The rows of `query` (in its ORDER BY) written to `path` as tab-separated text, atomically."""
    with atomic_path(path) as tmp:
        con.execute(f"COPY ({query}) TO {quote(tmp)} (FORMAT csv, DELIMITER '\\t', QUOTE '', ESCAPE '', "
                    f"HEADER {str(header).lower()}, NEW_LINE '\\n')")


def fetch_batches(con, query: str, batch_rows=1 << 16):
    """The rows of `query` as lists of tuples, a batch at a time (memory: one batch)."""
    cursor = con.execute(query)
    while True:
        rows = cursor.fetchmany(batch_rows)
        if not rows:
            return
        yield rows


def copy_to_parquet(con, query: str, path) -> None:
    """Write the rows of `query`, in its ORDER BY, to a Parquet file (uncompressed: it is read back once)."""
    con.execute(f"COPY ({query}) TO {quote(path)} (FORMAT parquet, COMPRESSION uncompressed)")


def parquet_numpy_batches(path, batch_rows=1 << 17):
    """The columns of a Parquet file as {name: numpy array}, `batch_rows` rows at a time, in file order.
    Columns without NULLs. Read through a fixed 1 MB buffer: pyarrow's default pre-buffering keeps more of
    the file resident the further it reads (measured: 77 -> 173 MB over 9.3M rows of three int64 columns;
    103 MB flat with these settings)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20) as table:
        for batch in table.iter_batches(batch_size=batch_rows):
            if batch.num_rows:
                yield {name: column.to_numpy() for name, column in zip(batch.schema.names, batch.columns)}


def scalar(con, query: str):
    return con.execute(query).fetchone()[0]


# Python's str.split() whitespace within ASCII (the data stage's headers are ASCII), as an RE2 class.
_SPACE = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f "


def fasta_id(header_line: str) -> str:
    """SQL for the id of a FASTA header line (its first word after '>'), as linefasta.record_id takes it."""
    return f"regexp_extract(substr({header_line}, 2), '^[{_SPACE}]*([^{_SPACE}]*)', 1)"
