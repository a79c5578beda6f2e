"""Cluster sequences with MMseqs2 (a subprocess, arguments as a list) and write sorted, checked tables.

Reproducible by construction:
- MMseqs2 sees the sequences under numbers (0, 1, ...), never under their ids: it rewrites some ids
  (`ref|x`, `sp|x`, `gb|x`, ... are parsed as database accessions), and a number is safe whatever a source
  or record is called. The numbers are mapped back to ids here.
- Each cluster is named by its smallest member id, never by MMseqs2's representative: with several threads
  MMseqs2 may pick another representative of the same members on a rerun, and the split hashes the name.
- MMseqs2's output order varies between runs, so everything written here is sorted.
- Memory does not grow with the corpus: ids live in a file in record order, never in a list, and every
  join, grouping and ordering is an external sort (`plmscale.data.external_sort`) followed by a streaming
  merge, in the same order Python's `sorted` gives, so the tables are those an in-memory pass would write.

MMseqs2's temporary files go to a hidden `.mmseqs.tmp-PID` folder next to the outputs (or under tmp_root):
on the same disk as the results, not in /tmp, and removed on the next run if a kill left it behind.

An optional second level clusters one member per first-level cluster (its canonical, smallest-id member)
again at a coarser identity (UniRef90 -> UniRef50 style); members are mapped through, giving
cluster -> subcluster -> member.
"""

import io
import logging
import shutil
import subprocess
import os
from collections import Counter
from itertools import groupby
from pathlib import Path

from plmscale.data.atomic import remove_stale_temporaries, write_json, write_text
from plmscale.data.external_sort import read_tsv, sorted_records
from plmscale.data.gzio import open_read
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


def fasta_ids(path) -> list:
    """Ids (first word of each header) of a FASTA file, in order."""
    with io.BufferedReader(open_read(path), 1 << 20) as handle:
        return [_header_id(line) for line in handle if line.startswith(b">")]


def _header_id(line) -> str:
    words = line[1:].split(None, 1)
    return words[0].decode("ascii", errors="backslashreplace") if words else ""


def _number_records(path, numbered_path, ids_path) -> int:
    """Write a copy of path whose record k is `>k`, and its ids one a line in record order; return the
    number of records."""
    count = 0
    with io.BufferedReader(open_read(path), 1 << 20) as handle, open(numbered_path, "wb") as out, \
            open(ids_path, "w", buffering=1 << 20) as ids_out:
        for line in handle:
            if line.startswith(b">"):
                ids_out.write(_header_id(line) + "\n")
                line = b">%d\n" % count
                count += 1
            out.write(line)
    return count


def _read_ids(ids_path):
    with open(ids_path, buffering=1 << 20) as handle:
        for line in handle:
            yield line[:-1]


def _check_unique_ids(fasta, ids_path, work) -> None:
    repeated = []
    previous = None
    for (record_id,) in sorted_records(((i,) for i in _read_ids(ids_path)), work):
        if record_id == previous and (not repeated or repeated[-1] != record_id):
            repeated.append(record_id)
            if len(repeated) == 5:
                break
        previous = record_id
    if repeated:
        raise PlmscaleError(f"{fasta}: ids must be unique before clustering; repeated: {repeated[:5]}")


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


def _first_as_int(record):
    return int(record[0])


def _group_then_member(record):
    return int(record[0]), record[1]


def _numbered_pairs(path, n_records, fasta):
    """MMseqs2's cluster.tsv rows (representative, member), checked to be record numbers of `fasta`;
    yields (member, representative)."""
    with open(path, buffering=1 << 20) as handle:
        for line in handle:
            rep, member = line.rstrip("\n").split("\t")
            for number in (rep, member):
                if not (number.isascii() and number.isdigit() and int(number) < n_records):
                    raise PlmscaleError(f"MMseqs2 returned ids that are not record numbers of {fasta}; check "
                                        "the MMseqs2 version (14+ expected) and data.cluster.extra_args")
            yield member, rep


def _members_with_ids(pairs_path, ids_path, n_records, fasta, work):
    """Yield (representative number, member id, member number) for every record of `fasta`, in record
    order, after checking that MMseqs2 listed each record exactly once."""
    by_member = sorted_records(_numbered_pairs(pairs_path, n_records, fasta), work, key=_first_as_int)
    coverage = _Coverage(fasta)
    expected = enumerate(_read_ids(ids_path))
    found = ((int(member), member, rep) for member, rep in by_member)
    for (_, member_id), (_, member, rep) in _match_exactly_once(expected, found, coverage):
        yield rep, member_id, member
    coverage.raise_if_any()


def _with_group_first(records, work):
    """records: (group number, member id, ...). Yield (first, record) for each record, grouped by group
    number, `first` being the group's record with the smallest member id: the cluster's canonical member,
    whose id names the cluster whichever member MMseqs2 chose as representative."""
    ordered = sorted_records(records, work, key=_group_then_member)
    for _, group in groupby(ordered, key=_first_as_int):
        first = next(group)
        yield first, first
        for record in group:
            yield first, record


def _fine_rows(members, work):
    """(cluster name, member id) for every member, in output order."""
    return sorted_records(((first[1], record[1]) for first, record in _with_group_first(members, work)), work)


def _write_fine_level(members, fine_rows_path, canonical_path, work) -> None:
    """Write (canonical member number, cluster name, member id) for every member, and the canonical
    members' numbers: the second level clusters those records."""
    with open(fine_rows_path, "w", buffering=1 << 20) as rows_out, \
            open(canonical_path, "w", buffering=1 << 20) as canonical_out:
        for first, record in _with_group_first(members, work):
            if first is record:
                canonical_out.write(first[2] + "\n")
            rows_out.write(f"{first[2]}\t{first[1]}\t{record[1]}\n")


def _members_with_coarse_representative(fine_rows_path, coarse_pairs_path, n_records, fasta, mmseqs_log, work):
    """Yield (coarse representative number, member id, fine cluster name) for every member: a coarse
    cluster holds every member of the fine clusters whose canonical members it holds."""
    fine_rows = sorted_records(read_tsv(fine_rows_path, 1 << 20), work, key=_first_as_int)
    coarse = sorted_records(_numbered_pairs(coarse_pairs_path, n_records, fasta), work, key=_first_as_int)
    current_number, current_rep = -1, None
    for canonical, fine_name, member_id in fine_rows:
        number = int(canonical)
        while current_number < number:
            pair = next(coarse, None)
            if pair is None:
                break
            if int(pair[0]) == current_number:
                raise PlmscaleError(f"{coarse_pairs_path}: member {pair[0]!r} is listed twice in MMseqs2's "
                                    "output; this should not happen — check the MMseqs2 version (14+ expected)")
            current_number, current_rep = int(pair[0]), pair[1]
        if current_number != number:
            raise PlmscaleError(f"MMseqs2's second level left out representatives of the first; see "
                                f"{mmseqs_log}")
        yield current_rep, member_id, fine_name


def _coarse_rows(members_with_coarse, work):
    """(cluster name, subcluster name, member id) for every member, in output order."""
    named = ((first[1], record[2], record[1]) for first, record in _with_group_first(members_with_coarse, work))
    return sorted_records(named, work)


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
        _check_unique_ids(fasta, ids_path, work)
        run = _Runner(binary, mmseqs_log, work, mem_mb=mem_mb)
        common = dict(cov_mode=cov_mode, cluster_mode=cluster_mode, sensitivity=sensitivity,
                      threads=threads, mem_mb=mem_mb, extra_args=extra_args)
        fine_pairs = _easy_cluster(run, method, work / "numbered.fasta", work / "level1", work / "tmp1",
                                   min_seq_id, coverage, **common)
        members = _members_with_ids(fine_pairs, ids_path, n_records, fasta, work)
        if second_level:
            # The coarse level clusters each fine cluster's canonical member, not MMseqs2's representative
            # (which may change between runs), so its input depends on the fine memberships only.
            fine_rows_path, canonical_path = work / "level1_named.tsv", work / "level1_canonical.txt"
            _write_fine_level(members, fine_rows_path, canonical_path, work)
            canonical = sorted_records(((line,) for line in _read_ids(canonical_path)), work, key=_first_as_int)
            _keep_records(work / "numbered.fasta", (int(number) for (number,) in canonical),
                          work / "level1_canonical.fasta")
            coarse_pairs = _easy_cluster(
                run, second_level.get("method", "cluster"), work / "level1_canonical.fasta", work / "level2",
                work / "tmp2", second_level["min_seq_id"], second_level.get("coverage", coverage), **common)
            rows = _coarse_rows(_members_with_coarse_representative(
                fine_rows_path, coarse_pairs, n_records, fasta, mmseqs_log, work), work)
            header = ("cluster_id", "subcluster_id", "member_id")
        else:
            rows = _fine_rows(members, work)
            header = ("cluster_id", "member_id")
        summary = _write_clusters(out_clusters, header, rows, work / "cluster_sizes.unsorted.tsv")
        _write_sizes(out_sizes, work / "cluster_sizes.unsorted.tsv", bool(second_level), work)
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


def _write_clusters(out_clusters, header, rows, sizes_path) -> dict:
    """Write the sorted rows; as each cluster ends (rows are grouped by cluster), note its size and
    number of subclusters in sizes_path. Return the counts for stats.json."""
    n_sequences = n_clusters = n_subclusters = largest = 0
    histogram = Counter()
    with write_text(out_clusters) as handle, open(sizes_path, "w", buffering=1 << 20) as sizes_out:
        handle.write("\t".join(header) + "\n")
        for cluster_id, group in groupby(rows, key=lambda row: row[0]):
            size = subclusters = 0
            previous_subcluster = None
            for row in group:
                handle.write("\t".join(row) + "\n")
                size += 1
                if len(row) == 3 and row[1] != previous_subcluster:  # a subcluster's rows are adjacent
                    subclusters += 1
                    previous_subcluster = row[1]
            sizes_out.write(f"{cluster_id}\t{size}\t{subclusters}\n")
            n_sequences += size
            n_clusters += 1
            n_subclusters += subclusters
            largest = max(largest, size)
            histogram[size] += 1
    return {"n_sequences": n_sequences, "n_clusters": n_clusters, "n_subclusters": n_subclusters,
            "n_singletons": histogram.get(1, 0), "largest_cluster": largest,
            "size_histogram": {str(size): histogram[size] for size in sorted(histogram)}}


def _write_sizes(out_sizes, sizes_path, second_level, work) -> None:
    """cluster_sizes.tsv: largest clusters first, ties by name."""
    by_size = sorted_records(read_tsv(sizes_path, 1 << 20), work, key=lambda row: (-int(row[1]), row[0]))
    with write_text(out_sizes) as handle:
        handle.write("cluster_id\tsize" + ("\tn_subclusters" if second_level else "") + "\n")
        for cluster_id, size, subclusters in by_size:
            handle.write(f"{cluster_id}\t{size}" + (f"\t{subclusters}" if second_level else "") + "\n")


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
    """Counts of sequences missing from, repeated in or unknown to a clustering, with a few examples."""

    EXAMPLES = 3

    def __init__(self, fasta):
        self.fasta = fasta
        self.counts = {"missing": 0, "repeated": 0, "unknown": 0}
        self.examples = {kind: [] for kind in self.counts}

    def note(self, kind, record_id) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < self.EXAMPLES:
            self.examples[kind].append(record_id)

    def raise_if_any(self) -> None:
        if any(self.counts.values()):
            c, e = self.counts, self.examples
            raise PlmscaleError(
                f"clustering of {self.fasta} does not cover every sequence exactly once: {c['missing']} missing "
                f"(e.g. {e['missing']}), {c['repeated']} repeated (e.g. {e['repeated']}), {c['unknown']} unknown "
                f"(e.g. {e['unknown']}). Ids with spaces or unusual characters can confuse MMseqs2; check the "
                "dedup output and the MMseqs2 log.")


_END = object()


def _match_exactly_once(expected, found, coverage):
    """Merge `expected` (key, id) with unique keys and `found` (key, ...) tuples, both ascending by key.
    Yield (expected item, found item) per match; note in `coverage` the expected keys never found, the
    found ones repeated (each repeated sequence once) and those not expected."""
    expected = iter(expected)
    want = next(expected, _END)
    previous_key = previous_id = last_repeated = _END
    for item in found:
        key = item[0]
        if key == previous_key:
            if previous_key != last_repeated:
                coverage.note("repeated", previous_id)
                last_repeated = previous_key
            continue
        previous_key, previous_id = key, item[1]
        while want is not _END and want[0] < key:
            coverage.note("missing", want[1])
            want = next(expected, _END)
        if want is not _END and want[0] == key:
            previous_id = want[1]
            yield want, item
            want = next(expected, _END)
        else:
            coverage.note("unknown", item[1])
    while want is not _END:
        coverage.note("missing", want[1])
        want = next(expected, _END)


def read_clusters(path):
    """Yield rows of clusters.tsv as tuples: (cluster_id, member_id) or (cluster_id, subcluster_id, member_id)."""
    with open(path) as handle:
        header = handle.readline().rstrip("\n").split("\t")
        if header[0] != "cluster_id" or header[-1] != "member_id":
            raise PlmscaleError(f"{path}: not a plmscale clusters table (header {header}); delete it and "
                                "rerun the cluster step")
        for line in handle:
            yield tuple(line.rstrip("\n").split("\t"))
