"""Cluster sequences with MMseqs2 (a subprocess, arguments as a list) and write sorted, checked tables.

Reproducible by construction:
- MMseqs2 sees the sequences under numbers (0, 1, ...), never under their ids: it rewrites some ids
  (`ref|x`, `sp|x`, `gb|x`, ... are parsed as database accessions), and a number is safe whatever a source
  or record is called. The numbers are mapped back to ids here.
- Each cluster is named by its smallest member id, never by MMseqs2's representative: with several threads
  MMseqs2 may pick another representative of the same members on a rerun, and the split hashes the name.
- MMseqs2's output order varies between runs, so everything written here is sorted.
- Memory does not grow with the corpus: ids live in a file in record order, never in a list, and every
  join, grouping and ordering is DuckDB's (`plmscale.data.engine`: bounded by the job's memory, spilling to
  the work folder, on the rule's threads), ordered on total keys, so the tables are the bytes an in-memory
  pass in Python would write. With one level the ids are sorted once and everything after works on their
  ranks (_write_one_level).
- The numbered copy for MMseqs2 and the ids file are written a block of records at a time (numpy).

MMseqs2's temporary files go to a hidden `.mmseqs.tmp-PID` folder next to the outputs (or under tmp_root):
on the same disk as the results, not in /tmp, and removed on the next run if a kill left it behind.

An optional second level clusters one member per first-level cluster (its canonical, smallest-id member)
again at a coarser identity (UniRef90 -> UniRef50 style); members are mapped through, giving
cluster -> subcluster -> member.
"""

import logging
import shutil
import subprocess
import os
from pathlib import Path

import numpy as np

from plmscale.data import engine
from plmscale.data.atomic import remove_stale_temporaries, write_json
from plmscale.data.recordblocks import concat_segments, decimals, insert_segments, keep_segments, read_record_blocks
from plmscale.errors import PlmscaleError
from plmscale.provenance import mmseqs_version

log = logging.getLogger(__name__)
LOG_TAIL_LINES = 25
INSTALL_HINT = ("install MMseqs2: `sudo apt-get install mmseqs2` (Debian/Ubuntu) or "
                "`conda env create -f envs/mmseqs2.yaml` and activate it (or run Snakemake with --sdm conda)")


def find_mmseqs(binary="mmseqs") -> str:
    path = shutil.which(binary)
    if path is None:
        raise PlmscaleError(f"the MMseqs2 program {binary!r} was not found on PATH; {INSTALL_HINT}")
    return path


def _number_records(path, numbered_path, ids_path) -> int:
    """Write a copy of the two-line FASTA at path whose record k is `>k` and its sequence line, and each
    record's id as line k of ids_path; return the number of records. A block of records at a time (numpy, no
    call per record)."""
    count = 0
    # Of each record's segments, the '>' and the newline with the sequence line; the number goes in after '>'.
    keep_numbered = np.array([True, False, False, False, True])
    with open(numbered_path, "wb", buffering=1 << 20) as out, open(ids_path, "wb", buffering=1 << 20) as ids_out:
        for block in read_record_blocks(path):
            n = len(block)
            ids_out.write(block.id_lines())
            lengths = block.record_segments()
            kept = keep_segments(block.data, lengths, np.broadcast_to(keep_numbered, lengths.shape))
            record_lengths = 1 + lengths[:, 4]
            numbers, number_ends = concat_segments([decimals(np.arange(count, count + n))])
            out.write(insert_segments(kept, np.cumsum(record_lengths) - record_lengths + 1, numbers,
                                      np.diff(number_ends, prepend=0)))
            count += n
    return count


def _ids_table(ids_path) -> str:
    """SQL for ids.txt: one id per line, line k for record k (numbered by rowid once in a table)."""
    return engine.read_tsv(ids_path, {"id": "VARCHAR"}, delimiter="\x00")


def _check_unique_ids(fasta, ids_path, work, threads, mem_mb) -> None:
    """Repeated ids are an error before MMseqs2 runs."""
    with engine.connect(work, threads=threads, mem_mb=mem_mb, settings_key="data.cluster") as con:
        repeated = [row[0] for row in con.execute(
            f"SELECT id FROM {_ids_table(ids_path)} GROUP BY id HAVING count(*) > 1 ORDER BY id LIMIT 5").fetchall()]
    if repeated:
        raise PlmscaleError(f"{fasta}: ids must be unique before clustering; repeated: {repeated}")


def _tail(path, lines=LOG_TAIL_LINES) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return "(no log)"


def fresh_work_dir(tmp_root, beside) -> Path:
    """A new private MMseqs2 work folder in tmp_root (default: the folder of the output file `beside`), after
    removing what killed jobs left there."""
    tmp_root = Path(tmp_root) if tmp_root else Path(beside).resolve().parent
    tmp_root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(tmp_root)
    work = tmp_root / f".mmseqs.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return work


class _Runner:
    """Runs mmseqs commands, appending their output to one log file."""

    def __init__(self, binary, log_path, work_dir, settings_key="data.cluster", mem_mb=None):
        self.settings_key = settings_key  # the config section a failure message points to
        self.mem_mb = mem_mb  # the job's memory (MMseqs2 gets 80% as --split-memory-limit), for messages
        self.binary = find_mmseqs(binary)
        self.log_path = Path(log_path)
        self.work_dir = str(work_dir)
        self.commands = []
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("")

    def __call__(self, args) -> None:
        command = [self.binary] + [str(a) for a in args]
        # Recorded without the temporary directory, so stats.json does not change between identical runs.
        self.commands.append(" ".join(command[1:]).replace(self.work_dir, "<work>"))
        log.info("running %s", " ".join(command))
        with open(self.log_path, "a") as out:
            out.write("$ " + " ".join(command) + "\n")
            out.flush()
            try:
                result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
            except OSError as error:
                raise PlmscaleError(f"could not start {self.binary}: {error}; {INSTALL_HINT}") from None
        if result.returncode != 0:
            tail = _tail(self.log_path)
            if _out_of_memory(tail, result.returncode):
                now = f" (now {self.mem_mb} MB)" if self.mem_mb else ""
                hint = (f"MMseqs2 ran out of memory: raise {self.settings_key}.mem_mb{now} in the config, "
                        f"e.g. double it")
            else:
                hint = (f"MMseqs2 failed: check the {self.settings_key} settings (extra_args especially) and "
                        f"{self.settings_key}.mem_mb, the memory given to the rule")
            # The hint first and last: the first line is what a workflow's error summary shows.
            raise PlmscaleError(
                f"{hint}.\nMMseqs2 exit code {result.returncode} running: {' '.join(command)}\n"
                f"last lines of its log {self.log_path}:\n{tail}\n{hint}.")


# What MMseqs2 holds beyond --split-memory-limit, which bounds only kmermatcher's k-mer table
# (docs/data-scale.md, "MMseqs2: memory and disk", 2026-12-07): told 480 MB, easy-linclust of 1M and 10M
# generated sequences (~60 residues; numbered FASTA 61 and 621 MB) peaked at 351 and 1,002 MB of anonymous
# memory, about 280 MB plus 1.16 times the numbered FASTA. Its resident size was larger (417 and 2,555 MB):
# the rest is the database mapped from disk, which the kernel can reclaim, so it is not counted here.
MMSEQS_BASE_MB = 280
MMSEQS_PER_FASTA_BYTE = 1.16


def mmseqs_memory_floor_mb(fasta_bytes: int) -> float:
    """The anonymous memory easy-linclust was measured to hold for a numbered FASTA of this size, however
    low its --split-memory-limit."""
    return MMSEQS_BASE_MB + MMSEQS_PER_FASTA_BYTE * fasta_bytes / 2 ** 20


def warn_if_short_of_memory(fasta, mem_mb, settings_key="data.cluster") -> bool:
    """Warn (True) where the job's memory is below mmseqs_memory_floor_mb for `fasta`: on a cluster the
    scheduler would kill the job however low MMseqs2's split limit is set."""
    if not mem_mb:
        return False
    size = Path(fasta).stat().st_size
    floor = mmseqs_memory_floor_mb(size)
    if mem_mb >= floor:
        return False
    log.warning("%s.mem_mb is %d MB, but MMseqs2 needed about %.0f MB for this much sequence (%.0f MB of FASTA) "
                "in plmscale's measurements, whatever --split-memory-limit says (it bounds only the k-mer table): a "
                "scheduler that enforces the job's memory may kill it. Raise %s.mem_mb to at least %.0f",
                settings_key, mem_mb, floor, size / 2 ** 20, settings_key, floor)
    return True


def _out_of_memory(log_tail: str, returncode: int) -> bool:
    """MMseqs2's own words for a memory limit it cannot work in, or a kill by the kernel's OOM killer."""
    return ("Cannot fit databases" in log_tail or "more main memory" in log_tail
            or returncode in (-9, 137))


def _easy_cluster(run, method, fasta, prefix, tmp, min_seq_id, coverage, cov_mode, cluster_mode,
                  sensitivity, threads, mem_mb, extra_args) -> Path:
    """Run easy-linclust/easy-cluster; return the path of its (representative, member) table."""
    args = [f"easy-{method}", fasta, prefix, tmp, "--min-seq-id", min_seq_id, "-c", coverage,
            "--cov-mode", cov_mode, "--cluster-mode", cluster_mode, "--threads", max(1, int(threads))]
    if method == "cluster":
        args += ["-s", sensitivity]
    if mem_mb:
        # Leave headroom for MMseqs2's own bookkeeping beyond the split it is told about.
        args += ["--split-memory-limit", f"{max(64, int(mem_mb * 0.8))}M"]
    run(args + list(extra_args))
    return Path(f"{prefix}_cluster.tsv")


def _load_pairs(con, table, path, n_records, fasta) -> None:
    """Table `table`(rep, member) from MMseqs2's cluster.tsv, checked to hold record numbers of `fasta`."""
    raw = engine.read_tsv(path, {"rep": "VARCHAR", "member": "VARCHAR"})
    # Read once as text, checked, then numbers (not read a second time).
    con.execute(f"CREATE TABLE {table}_text AS SELECT * FROM {raw}")
    number = "coalesce(regexp_full_match({0}, '[0-9]{{1,18}}') AND try_cast({0} AS BIGINT) < {1}, false)"
    bad = engine.scalar(con, f"SELECT count(*) FROM {table}_text WHERE NOT ({number.format('rep', n_records)} "
                             f"AND {number.format('member', n_records)})")
    if bad:
        raise PlmscaleError(f"MMseqs2 returned ids that are not record numbers of {fasta}; check "
                            "the MMseqs2 version (14+ expected) and data.cluster.extra_args")
    con.execute(f"CREATE TABLE {table} AS SELECT rep::BIGINT AS rep, member::BIGINT AS member FROM {table}_text")
    con.execute(f"DROP TABLE {table}_text")


def _load_members(con, pairs_path, ids_path, n_records, fasta) -> None:
    """Table members(rep, num, id): every record of `fasta` with MMseqs2's representative, after checking
    that MMseqs2 listed each record exactly once."""
    con.execute(f"CREATE TABLE ids AS SELECT * FROM {_ids_table(ids_path)}")   # rowid: the record's number
    _load_pairs(con, "pairs", pairs_path, n_records, fasta)
    # Every member is a record number (checked above): once each exactly when there are n_records pairs with
    # n_records distinct members. Which ones are missing or repeated is looked up only when not.
    n_pairs, n_distinct = con.execute("SELECT count(*), count(DISTINCT member) FROM pairs").fetchone()
    if n_pairs != n_records or n_distinct != n_records:
        coverage = _Coverage(fasta)
        coverage.add("missing", con, "SELECT id, rowid AS num FROM ids ANTI JOIN pairs ON ids.rowid = pairs.member")
        coverage.add("repeated", con, "SELECT id, rowid AS num FROM ids JOIN (SELECT member FROM pairs GROUP BY "
                                      "member HAVING count(*) > 1) r ON ids.rowid = r.member")
        coverage.raise_if_any()
    con.execute("CREATE TABLE members AS SELECT pairs.rep, ids.rowid AS num, ids.id "
                "FROM pairs JOIN ids ON pairs.member = ids.rowid")
    con.execute("DROP TABLE pairs")
    con.execute("DROP TABLE ids")


def _name_groups(con, members, named) -> None:
    """Table `named`(rep, name, canonical): each group of `members`(rep, num, id) named by its smallest member
    id (the canonical member, numbered `canonical`), whichever member MMseqs2 chose as representative."""
    con.execute(f"CREATE TABLE {named} AS SELECT rep, min(id) AS name, arg_min(num, id) AS canonical "
                f"FROM {members} GROUP BY rep")


def _fine_level(con) -> None:
    """Table fine(num, id, cluster, canonical): every member with its cluster's name and canonical member."""
    _name_groups(con, "members", "fine_names")
    con.execute("CREATE TABLE fine AS SELECT m.num, m.id, f.name AS cluster, f.canonical "
                "FROM members m JOIN fine_names f USING (rep)")


def _coarse_level(con, coarse_pairs_path, n_records, fasta, mmseqs_log) -> None:
    """Table coarse(cluster, subcluster, member): a coarse cluster holds every member of the fine clusters
    whose canonical members it holds, and is named by its smallest member id."""
    _load_pairs(con, "coarse_pairs", coarse_pairs_path, n_records, fasta)
    twice = con.execute("SELECT member FROM coarse_pairs GROUP BY member HAVING count(*) > 1 ORDER BY member "
                        "LIMIT 1").fetchone()
    if twice:
        raise PlmscaleError(f"{coarse_pairs_path}: member {str(twice[0])!r} is listed twice in MMseqs2's "
                            "output; this should not happen — check the MMseqs2 version (14+ expected)")
    left_out = engine.scalar(con, "SELECT count(*) FROM (SELECT DISTINCT canonical FROM fine) f "
                                  "ANTI JOIN coarse_pairs c ON f.canonical = c.member")
    if left_out:
        raise PlmscaleError(f"MMseqs2's second level left out representatives of the first; see {mmseqs_log}")
    con.execute("CREATE TABLE coarse_members AS SELECT c.rep, f.num, f.id, f.cluster AS subcluster "
                "FROM fine f JOIN coarse_pairs c ON f.canonical = c.member")
    _name_groups(con, "coarse_members", "coarse_names")
    con.execute("CREATE TABLE coarse AS SELECT n.name AS cluster, m.subcluster, m.id AS member "
                "FROM coarse_members m JOIN coarse_names n USING (rep)")


def cluster_sequences(fasta, out_clusters, out_sizes, out_stats, *, method="linclust", min_seq_id=0.5,
                      coverage=0.8, cov_mode=0, cluster_mode=0, sensitivity=4.0, second_level=None,
                      extra_args=(), threads=1, mem_mb=None, tmp_root=None, mmseqs_log=None,
                      binary="mmseqs") -> dict:
    """Cluster `fasta`; write clusters.tsv (sorted), cluster_sizes.tsv and stats.json; return the stats."""
    if method not in ("linclust", "cluster"):
        raise PlmscaleError(f"data.cluster.method must be linclust or cluster, not {method!r}")
    fasta = Path(fasta).resolve()
    mmseqs_log = Path(mmseqs_log or Path(out_stats).with_name("mmseqs.log"))
    work = fresh_work_dir(tmp_root, beside=out_clusters)
    try:
        ids_path = work / "ids.txt"
        n_records = _number_records(fasta, work / "numbered.fasta", ids_path)
        _check_unique_ids(fasta, ids_path, work, threads, mem_mb)
        warn_if_short_of_memory(work / "numbered.fasta", mem_mb)
        run = _Runner(binary, mmseqs_log, work, mem_mb=mem_mb)
        common = dict(cov_mode=cov_mode, cluster_mode=cluster_mode, sensitivity=sensitivity,
                      threads=threads, mem_mb=mem_mb, extra_args=extra_args)
        fine_pairs = _easy_cluster(run, method, work / "numbered.fasta", work / "level1", work / "tmp1",
                                   min_seq_id, coverage, **common)
        # DuckDB runs while MMseqs2 does not, with the job's memory.
        with engine.connect(work, threads=threads, mem_mb=mem_mb, settings_key="data.cluster") as con:
            _load_members(con, fine_pairs, ids_path, n_records, fasta)
            if not second_level:
                summary = _write_one_level(con, out_clusters, out_sizes)
            else:
                _fine_level(con)
                # The coarse level clusters each fine cluster's canonical member, not MMseqs2's representative
                # (which may change between runs), so its input depends on the fine memberships only.
                canonical = (number for batch in engine.fetch_batches(
                    con, "SELECT canonical FROM fine_names ORDER BY canonical") for (number,) in batch)
                _keep_records(work / "numbered.fasta", canonical, work / "level1_canonical.fasta")
                coarse_pairs = _easy_cluster(
                    run, second_level.get("method", "cluster"), work / "level1_canonical.fasta", work / "level2",
                    work / "tmp2", second_level["min_seq_id"], second_level.get("coverage", coverage), **common)
                _coarse_level(con, coarse_pairs, n_records, fasta, mmseqs_log)
                rows = "SELECT cluster AS cluster_id, subcluster AS subcluster_id, member AS member_id FROM coarse"
                summary = _write_clusters(con, out_clusters, out_sizes, rows, True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # -s is given to every easy-cluster call (either level) and to no easy-linclust one.
    levels = [method] + ([second_level.get("method", "cluster")] if second_level else [])
    stats = {
        **summary,
        "n_subclusters": summary["n_subclusters"] if second_level else None,
        "settings": {"method": method, "min_seq_id": min_seq_id, "coverage": coverage, "cov_mode": cov_mode,
                     "cluster_mode": cluster_mode, "sensitivity": sensitivity if "cluster" in levels else None,
                     "second_level": second_level, "extra_args": list(extra_args)},
        "mmseqs_version": mmseqs_version(run.binary),
        "commands": run.commands,
    }
    write_json(out_stats, stats)
    log.info("%d sequences in %d clusters (%d singletons, largest %d)", stats["n_sequences"],
             stats["n_clusters"], stats["n_singletons"], stats["largest_cluster"])
    return stats


def _write_clusters(con, out_clusters, out_sizes, rows: str, second_level: bool) -> dict:
    """clusters.tsv: `rows` sorted by every column (the member id, last, is unique); cluster_sizes.tsv:
    largest clusters first, ties by name. Return the counts for stats.json."""
    con.execute(f"CREATE TABLE rows AS {rows}")
    engine.write_tsv(con, "SELECT * FROM rows ORDER BY ALL", out_clusters)
    subclusters = "count(DISTINCT subcluster_id)" if second_level else "0"
    con.execute(f"CREATE TABLE sizes AS SELECT cluster_id, count(*) AS size, {subclusters} AS n_subclusters "
                "FROM rows GROUP BY cluster_id")
    engine.write_tsv(con, "SELECT cluster_id, size" + (", n_subclusters" if second_level else "") +
                     " FROM sizes ORDER BY size DESC, cluster_id", out_sizes)
    return _summary(con, "sizes")


def _write_one_level(con, out_clusters, out_sizes) -> dict:
    """clusters.tsv and cluster_sizes.tsv of one level, from members(rep, num, id), as _fine_level and
    _write_clusters write them, with one sort of the ids instead of four passes on them: the members are
    ranked by id (a table's rowid follows the ORDER BY it was made with), so naming each cluster by its
    smallest id, both orderings and the sizes' grouping work on integer ranks. Ids are unique
    (_check_unique_ids), so the ranks are a total order. Return the counts for stats.json."""
    con.execute("CREATE TABLE ranked AS SELECT rep, id FROM members ORDER BY id, num")
    con.execute("DROP TABLE members")
    con.execute("CREATE TABLE sizes AS SELECT rep, min(rowid) AS name_rank, count(*) AS size, 0 AS n_subclusters "
                "FROM ranked GROUP BY rep")
    engine.write_tsv(con, "SELECT name.id AS cluster_id, member.id AS member_id FROM ranked member "
                          "JOIN sizes USING (rep) JOIN ranked name ON name.rowid = sizes.name_rank "
                          "ORDER BY sizes.name_rank, member.rowid", out_clusters)
    engine.write_tsv(con, "SELECT name.id AS cluster_id, size FROM sizes JOIN ranked name "
                          "ON name.rowid = sizes.name_rank ORDER BY size DESC, sizes.name_rank", out_sizes)
    return _summary(con, "sizes")


def _summary(con, sizes) -> dict:
    """The counts of stats.json from a table of cluster sizes (size, n_subclusters)."""
    n_sequences, n_clusters, n_subclusters, largest = con.execute(
        "SELECT coalesce(sum(size), 0), count(*), coalesce(sum(n_subclusters), 0), coalesce(max(size), 0) "
        f"FROM {sizes}").fetchone()
    histogram = dict(con.execute(f"SELECT size, count(*) FROM {sizes} GROUP BY size ORDER BY size").fetchall())
    return {"n_sequences": int(n_sequences), "n_clusters": n_clusters, "n_subclusters": int(n_subclusters),
            "n_singletons": histogram.get(1, 0), "largest_cluster": largest,
            "size_histogram": {str(size): count for size, count in histogram.items()}}


def _keep_records(path, keep_numbers, out_path) -> None:
    """Copy the records of a numbered FASTA (record k is `>k`) whose number is in `keep_numbers`, an
    ascending iterable of int."""
    wanted = iter(keep_numbers)
    next_wanted = next(wanted, None)
    number = -1
    keeping = False
    with open(path, "rb") as handle, open(out_path, "wb") as out:
        for line in handle:
            if line.startswith(b">"):
                number += 1
                keeping = number == next_wanted
                if keeping:
                    next_wanted = next(wanted, None)
            if keeping:
                out.write(line)


class _Coverage:
    """Counts of sequences missing from or repeated in a clustering, with a few examples."""

    EXAMPLES = 3

    def __init__(self, fasta):
        self.fasta = fasta
        self.counts = {"missing": 0, "repeated": 0}
        self.examples = {kind: [] for kind in self.counts}

    def add(self, kind, con, query) -> None:
        """Count the (id, num) rows of `query`, keeping the first few ids by record number as examples."""
        self.counts[kind] += engine.scalar(con, f"SELECT count(*) FROM ({query})")
        self.examples[kind] = [row[0] for row in con.execute(
            f"SELECT id FROM ({query}) ORDER BY num LIMIT {self.EXAMPLES}").fetchall()]

    def raise_if_any(self) -> None:
        if any(self.counts.values()):
            c, e = self.counts, self.examples
            raise PlmscaleError(
                f"clustering of {self.fasta} does not cover every sequence exactly once: {c['missing']} missing "
                f"(e.g. {e['missing']}) and {c['repeated']} repeated (e.g. {e['repeated']}). Ids with spaces or "
                "unusual characters can confuse MMseqs2; check the dedup output and the MMseqs2 log.")


def read_clusters(path):
    """Yield rows of clusters.tsv as tuples: (cluster_id, member_id) or (cluster_id, subcluster_id, member_id)."""
    with open(path) as handle:
        header = handle.readline().rstrip("\n").split("\t")
        if header[0] != "cluster_id" or header[-1] != "member_id":
            raise PlmscaleError(f"{path}: not a plmscale clusters table (header {header}); delete it and "
                                "rerun the cluster step")
        for line in handle:
            yield tuple(line.rstrip("\n").split("\t"))
