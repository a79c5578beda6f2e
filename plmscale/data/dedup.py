"""Exact duplicates across all sources: keep the first copy, remember every source that held it.

Sources are read in config order, so "first" means the earliest source in data.sources, then file order.
Ids become `{source}|{id}`: two sources may use the same id for different proteins.

Bounded memory at any corpus size, in three steps (see partition.py), each a Snakemake job:
1. scatter, one job per source: every record goes to one of P partition files by a hash of its sequence,
   tagged with its place in the corpus (source index, record index), so all copies of a sequence meet in
   one partition;
2. one job per partition: the first copy of each sequence is kept, the sources holding it and its copies
   are counted; memory is one dict entry per distinct sequence of the partition (~BYTES_PER_ENTRY), and
   a partition over the job's memory stops saying which data.partitions.count fits;
3. gather: the partitions' kept records are merged back into corpus order, so unique.fasta.gz and
   provenance.tsv.gz are the same bytes whatever P is (and as the single in-memory pass gave).
An id repeated within a source with another sequence is an error: each partition's kept ids are sorted,
and the gather finds a repeat where the sorted lists merge.
"""

import io
import json
import logging
import shutil
from pathlib import Path

from plmscale.data.atomic import write_gzip_text, write_json, write_text
from plmscale.data.gzio import open_read
from plmscale.data.linefasta import RecordWriter, read_records, record_id
from plmscale.data.partition import (KEY_WIDTH, PartitionWriter, check_budget, entry_budget, key_digest,
                                     merge_sorted, order_key, partition_names, partition_of, read_lines,
                                     scratch_dir)
from plmscale.errors import PlmscaleError

log = logging.getLogger(__name__)
SEPARATOR = "|"
# Measured with tracemalloc on ids like `metagenomic|MGYP000123456789`: digest, [key+id, mask, copies], slot.
BYTES_PER_ENTRY = 400
PARTITION_OUTPUTS = ("kept", "provenance", "ids", "stats")
_COUNTS = ("seen", "kept", "duplicates", "duplicates_within_source")


def scatter_source(clean_fasta, source_index: int, out_paths: list) -> list:
    """Write each record of one source's clean FASTA as `KEY\\tid\\tsequence` to the partition of its
    sequence; return the number of records per partition."""
    count = len(out_paths)
    with PartitionWriter(out_paths) as writer:
        for index, (header, sequence) in enumerate(read_records(clean_fasta)):
            partition = partition_of(key_digest(sequence), count)
            writer.write(partition, f"{order_key(source_index, index)}\t{record_id(header)}\t{sequence}\n")
    log.info("%s: %d records to %d partitions (largest %d)", clean_fasta, sum(writer.counts), count,
             max(writer.counts))
    return writer.counts


def dedup_partition(scattered: dict, outputs: dict, *, n_partitions: int, mem_mb: int) -> dict:
    """scattered: {source: this partition's scatter file} in config order. outputs: {kept, provenance, ids,
    stats} paths. Keeps the first copy of each sequence; returns the partition's stats."""
    sources = list(scattered)
    budget = entry_budget(mem_mb, BYTES_PER_ENTRY)
    first_copy = {}   # sequence digest -> [KEY\tunique_id, source bit mask, n_copies]
    per_source = {source: dict.fromkeys(_COUNTS, 0) for source in sources}
    with write_text(outputs["kept"]) as kept:
        for index, (source, path) in enumerate(scattered.items()):
            counts, bit = per_source[source], 1 << index
            for line in read_lines(path):
                key, seq_id, sequence = line.rstrip("\n").split("\t")
                counts["seen"] += 1
                digest = key_digest(sequence)
                entry = first_copy.get(digest)
                if entry is not None:
                    counts["duplicates"] += 1
                    if entry[1] & bit:
                        counts["duplicates_within_source"] += 1
                    entry[1] |= bit
                    entry[2] += 1
                    continue
                keyed_id = f"{key}\t{source}{SEPARATOR}{seq_id}"
                first_copy[digest] = [keyed_id, bit, 1]
                kept.write(f"{keyed_id}\t{sequence}\n")
                counts["kept"] += 1
                if len(first_copy) > budget:
                    check_budget(len(first_copy), budget, what="distinct sequences",
                                 inputs=list(scattered.values()), n_partitions=n_partitions, mem_mb=mem_mb,
                                 bytes_per_entry=BYTES_PER_ENTRY)
    with write_text(outputs["provenance"]) as handle:   # insertion order = corpus order
        for keyed_id, mask, copies in first_copy.values():
            holders = ",".join(s for i, s in enumerate(sources) if mask & (1 << i))
            handle.write(f"{keyed_id}\t{holders}\t{copies}\n")
    ids = sorted(keyed_id[KEY_WIDTH + 1:] for keyed_id, _, _ in first_copy.values())
    with write_text(outputs["ids"]) as handle:
        handle.writelines(f"{unique_id}\n" for unique_id in ids)
    stats = {"per_source": per_source, "n_distinct": len(first_copy),
             "n_shared_across_sources": sum(1 for _, mask, _ in first_copy.values() if mask & (mask - 1))}
    write_json(outputs["stats"], stats)
    return stats


def gather(clean_fastas: dict, partitions: list, out_fasta, out_provenance, out_stats) -> dict:
    """clean_fastas: {source: clean FASTA} in config order (for messages); partitions: one {kept,
    provenance, ids, stats} dict of paths per partition. Writes the unique FASTA, provenance and stats."""
    sources = list(clean_fastas)
    per_source = {source: dict.fromkeys(_COUNTS, 0) for source in sources}
    n_shared = 0
    for part in partitions:
        stats = json.loads(Path(part["stats"]).read_text())
        n_shared += stats["n_shared_across_sources"]
        for source, counts in stats["per_source"].items():
            for name, value in counts.items():
                per_source[source][name] += value
    if not any(counts["kept"] for counts in per_source.values()):
        raise PlmscaleError(
            f"no sequence survived the clean step in any source ({', '.join(sources)}): every record was "
            f"dropped as invalid or outside the length limits — see results/data/clean/<source>.stats.json "
            f"for why, then fix data.sources or data.clean in the config")
    _check_unique_ids(clean_fastas, [part["ids"] for part in partitions])

    with RecordWriter(out_fasta) as writer:
        for line in merge_sorted([part["kept"] for part in partitions]):
            _, unique_id, sequence = line.rstrip("\n").split("\t")
            writer.write(unique_id, sequence)
    with write_gzip_text(out_provenance) as handle:
        handle.write("unique_id\tsources\tn_copies\n")
        for line in merge_sorted([part["provenance"] for part in partitions]):
            handle.write(line[KEY_WIDTH + 1:])

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
        "n_residues_unique": writer.n_residues,
        "empty_sources": empty,
        "emptied_by_dedup": emptied_by_dedup,
        "n_shared_across_sources": n_shared,
        "identity": "per source: seen = kept + duplicates; n_seen = n_unique + n_duplicates",
    }
    if not all(c["seen"] == c["kept"] + c["duplicates"] for c in per_source.values()) or \
            writer.n_records != sum(c["kept"] for c in per_source.values()):
        raise PlmscaleError(f"dedup partitions do not add up ({per_source}, {writer.n_records} written); "
                            "delete results/data/dedup and rerun the dedup step")
    write_json(out_stats, stats)
    return stats


def _check_unique_ids(clean_fastas: dict, id_files: list) -> None:
    """Kept ids must be unique: a repeat sits next to itself where the partitions' sorted ids merge."""
    previous = None
    for line in merge_sorted(id_files):
        if line == previous:
            unique_id = line.rstrip("\n")
            source, seq_id = unique_id.split(SEPARATOR, 1)
            path = clean_fastas.get(source, source)
            raise PlmscaleError(f"{path}: id {seq_id!r} occurs twice with different sequences; ids must be "
                                "unique within a source — rerun the clean step, or fix the source file")
        previous = line


def partition_paths(directory, partition: str) -> dict:
    """The outputs of one dedup partition job inside `directory`."""
    directory = Path(directory)
    suffix = {"kept": "kept.tsv", "provenance": "provenance.tsv", "ids": "ids.txt", "stats": "stats.json"}
    return {name: directory / f"{partition}.{suffix[name]}" for name in PARTITION_OUTPUTS}


def dedup(clean_fastas: dict, out_fasta, out_provenance, out_stats, *, n_partitions=1, mem_mb=4000) -> dict:
    """All three steps in one process (what the Snakemake jobs do, for tests and single-machine use):
    clean_fastas is {source: path} in priority order. Writes the unique FASTA, provenance and stats."""
    names = partition_names(n_partitions)
    work = scratch_dir(out_fasta)
    try:
        for index, (source, path) in enumerate(clean_fastas.items()):
            scatter_source(path, index, [work / source / f"{name}.tsv" for name in names])
        partitions = []
        for name in names:
            outputs = partition_paths(work / "dedup", name)
            dedup_partition({source: work / source / f"{name}.tsv" for source in clean_fastas}, outputs,
                            n_partitions=n_partitions, mem_mb=mem_mb)
            partitions.append(outputs)
        return gather(clean_fastas, partitions, out_fasta, out_provenance, out_stats)
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
