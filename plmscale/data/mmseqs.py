"""Cluster sequences with MMseqs2 (a subprocess, arguments as a list) and write sorted, checked tables.

Reproducible by construction:
- MMseqs2 sees the sequences under numbers (0, 1, ...), never under their ids: it rewrites some ids
  (`ref|x`, `sp|x`, `gb|x`, ... are parsed as database accessions), and a number is safe whatever a source
  or record is called. The numbers are mapped back to ids here.
- Each cluster is named by its smallest member id, never by MMseqs2's representative: with several threads
  MMseqs2 may pick another representative of the same members on a rerun, and the split hashes the name.
- MMseqs2's output order varies between runs, so everything written here is sorted.

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
from pathlib import Path

from plmscale.data.atomic import remove_stale_temporaries, write_json, write_text
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
    return _number_records(path, None)


def _number_records(path, numbered_path) -> list:
    """Ids of path's records in order; with numbered_path, also write a copy whose record k is `>k`."""
    ids = []
    with io.BufferedReader(open_read(path), 1 << 20) as handle:
        out = open(numbered_path, "wb") if numbered_path is not None else None
        try:
            for line in handle:
                if line.startswith(b">"):
                    words = line[1:].split(None, 1)
                    ids.append(words[0].decode("ascii", errors="backslashreplace") if words else "")
                    line = b">%d\n" % (len(ids) - 1)
                if out is not None:
                    out.write(line)
        finally:
            if out is not None:
                out.close()
    return ids


def _tail(path, lines=LOG_TAIL_LINES) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return "(no log)"


class _Runner:
    """Runs mmseqs commands, appending their output to one log file."""

    def __init__(self, binary, log_path, work_dir, settings_key="data.cluster"):
        self.settings_key = settings_key  # the config section a failure message points to
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
            hint = (f"MMseqs2 ran out of its memory allowance: raise {self.settings_key}.mem_mb in the config"
                    if "Cannot fit databases" in tail else
                    f"Check the {self.settings_key} settings (extra_args especially) and the memory given to "
                    "the rule")
            raise PlmscaleError(
                f"MMseqs2 failed (exit code {result.returncode}) running: {' '.join(command)}\n"
                f"last lines of its log {self.log_path}:\n{tail}\n{hint}.")


def _easy_cluster(run, method, fasta, prefix, tmp, min_seq_id, coverage, cov_mode, cluster_mode,
                  sensitivity, threads, mem_mb, extra_args):
    args = [f"easy-{method}", fasta, prefix, tmp, "--min-seq-id", min_seq_id, "-c", coverage,
            "--cov-mode", cov_mode, "--cluster-mode", cluster_mode, "--threads", max(1, int(threads))]
    if method == "cluster":
        args += ["-s", sensitivity]
    if mem_mb:
        # Leave headroom for MMseqs2's own bookkeeping beyond the split it is told about.
        args += ["--split-memory-limit", f"{max(64, int(mem_mb * 0.8))}M"]
    run(args + list(extra_args))
    return _read_pairs(f"{prefix}_cluster.tsv")


def _read_pairs(path) -> dict:
    """MMseqs2 cluster.tsv (representative, member) -> {member: representative}, as MMseqs2 names them."""
    member_to_rep = {}
    with open(path) as handle:
        for line in handle:
            rep, member = line.rstrip("\n").split("\t")
            if member in member_to_rep:
                raise PlmscaleError(f"{path}: member {member!r} is listed twice in MMseqs2's output; "
                                    "this should not happen — check the MMseqs2 version (14+ expected)")
            member_to_rep[member] = rep
    return member_to_rep


def cluster_sequences(fasta, out_clusters, out_sizes, out_stats, *, method="linclust", min_seq_id=0.5,
                      coverage=0.8, cov_mode=0, cluster_mode=0, sensitivity=4.0, second_level=None,
                      extra_args=(), threads=1, mem_mb=None, tmp_root=None, mmseqs_log=None,
                      binary="mmseqs") -> dict:
    """Cluster `fasta`; write clusters.tsv (sorted), cluster_sizes.tsv and stats.json; return the stats."""
    if method not in ("linclust", "cluster"):
        raise PlmscaleError(f"data.cluster.method must be linclust or cluster, not {method!r}")
    fasta = Path(fasta).resolve()
    mmseqs_log = Path(mmseqs_log or Path(out_stats).with_name("mmseqs.log"))
    tmp_root = Path(tmp_root) if tmp_root else Path(out_clusters).resolve().parent
    tmp_root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(tmp_root)
    work = tmp_root / f".mmseqs.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        ids = _number_records(fasta, work / "numbered.fasta")
        repeated = [i for i, n in Counter(ids).items() if n > 1]
        if repeated:
            raise PlmscaleError(f"{fasta}: ids must be unique before clustering; repeated: {repeated[:5]}")
        run = _Runner(binary, mmseqs_log, work)
        common = dict(cov_mode=cov_mode, cluster_mode=cluster_mode, sensitivity=sensitivity,
                      threads=threads, mem_mb=mem_mb, extra_args=extra_args)
        member_to_rep = _easy_cluster(run, method, work / "numbered.fasta", work / "level1",
                                      work / "tmp1", min_seq_id, coverage, **common)
        fine = _canonical_names(_as_ids(member_to_rep, ids, fasta))
        if second_level:
            # The coarse level clusters each fine cluster's canonical member, not MMseqs2's representative
            # (which may change between runs), so its input depends on the fine memberships only.
            number = {record_id: k for k, record_id in enumerate(ids)}
            canonical = {str(number[fine[ids[int(m)]]]) for m in member_to_rep}
            _keep_records(work / "numbered.fasta", canonical, work / "level1_canonical.fasta")
            rep_to_coarse = _easy_cluster(
                run, second_level.get("method", "cluster"), work / "level1_canonical.fasta", work / "level2",
                work / "tmp2", second_level["min_seq_id"], second_level.get("coverage", coverage), **common)
            # A coarse cluster holds every member of the fine clusters whose canonical members it holds.
            member_to_coarse = {m: rep_to_coarse.get(str(number[fine[ids[int(m)]]])) for m in member_to_rep}
            if None in member_to_coarse.values():
                raise PlmscaleError(f"MMseqs2's second level left out representatives of the first; see "
                                    f"{mmseqs_log}")
            coarse = _canonical_names(_as_ids(member_to_coarse, ids, fasta))
            rows = sorted((coarse[member], fine[member], member) for member in fine)
            header = ("cluster_id", "subcluster_id", "member_id")
        else:
            rows = sorted((fine[member], member) for member in fine)
            header = ("cluster_id", "member_id")
        _check_every_sequence_once(fasta, ids, [row[-1] for row in rows])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    with write_text(out_clusters) as handle:
        handle.write("\t".join(header) + "\n")
        for row in rows:
            handle.write("\t".join(row) + "\n")

    sizes = Counter(row[0] for row in rows)
    subclusters = {}
    if second_level:
        for cluster_id, subcluster_id, _ in rows:
            subclusters.setdefault(cluster_id, set()).add(subcluster_id)
    with write_text(out_sizes) as handle:
        handle.write("cluster_id\tsize" + ("\tn_subclusters" if second_level else "") + "\n")
        for cluster_id, size in sorted(sizes.items(), key=lambda item: (-item[1], item[0])):
            extra = f"\t{len(subclusters[cluster_id])}" if second_level else ""
            handle.write(f"{cluster_id}\t{size}{extra}\n")

    histogram = Counter(sizes.values())
    stats = {
        "n_sequences": len(rows),
        "n_clusters": len(sizes),
        "n_subclusters": len({row[1] for row in rows}) if second_level else None,
        "n_singletons": histogram.get(1, 0),
        "largest_cluster": max(sizes.values(), default=0),
        "size_histogram": {str(size): histogram[size] for size in sorted(histogram)},
        "settings": {"method": method, "min_seq_id": min_seq_id, "coverage": coverage, "cov_mode": cov_mode,
                     "cluster_mode": cluster_mode, "sensitivity": sensitivity if method == "cluster" else None,
                     "second_level": second_level, "extra_args": list(extra_args)},
        "mmseqs_version": mmseqs_version(run.binary),
        "commands": run.commands,
    }
    write_json(out_stats, stats)
    log.info("%d sequences in %d clusters (%d singletons, largest %d)", stats["n_sequences"],
             stats["n_clusters"], stats["n_singletons"], stats["largest_cluster"])
    return stats


def _keep_records(path, keep: set, out_path) -> None:
    """Copy the records of a numbered FASTA whose number is in `keep` (a set of str)."""
    with open(path, "rb") as handle, open(out_path, "wb") as out:
        keeping = False
        for line in handle:
            if line.startswith(b">"):
                keeping = line[1:].strip().decode() in keep
            if keeping:
                out.write(line)


def _as_ids(member_to_rep, ids, fasta) -> dict:
    """MMseqs2's numbers (as text) back to record ids: {member id: representative id}."""
    try:
        return {ids[int(member)]: ids[int(rep)] for member, rep in member_to_rep.items()}
    except (ValueError, IndexError):
        raise PlmscaleError(f"MMseqs2 returned ids that are not record numbers of {fasta}; check the "
                            "MMseqs2 version (14+ expected) and data.cluster.extra_args") from None


def _canonical_names(member_to_rep) -> dict:
    """{member: name of its cluster}, the name being the smallest member id: it depends on who is in the
    cluster only, not on which member MMseqs2 happened to choose as representative."""
    smallest = {}
    for member, rep in member_to_rep.items():
        if rep not in smallest or member < smallest[rep]:
            smallest[rep] = member
    return {member: smallest[rep] for member, rep in member_to_rep.items()}


def _check_every_sequence_once(fasta, ids, members) -> None:
    counts = Counter(members)
    twice = [m for m, n in counts.items() if n > 1]
    missing = [i for i in ids if i not in counts]
    known = set(ids)
    unknown = [m for m in counts if m not in known]
    if twice or missing or unknown:
        raise PlmscaleError(
            f"clustering of {fasta} does not cover every sequence exactly once: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(twice)} repeated (e.g. {twice[:3]}), {len(unknown)} unknown "
            f"(e.g. {unknown[:3]}). Ids with spaces or unusual characters can confuse MMseqs2; check the "
            "dedup output and the MMseqs2 log.")


def read_clusters(path):
    """Yield rows of clusters.tsv as tuples: (cluster_id, member_id) or (cluster_id, subcluster_id, member_id)."""
    with open(path) as handle:
        header = handle.readline().rstrip("\n").split("\t")
        if header[0] != "cluster_id" or header[-1] != "member_id":
            raise PlmscaleError(f"{path}: not a plmscale clusters table (header {header}); delete it and "
                                "rerun the cluster step")
        for line in handle:
            yield tuple(line.rstrip("\n").split("\t"))
