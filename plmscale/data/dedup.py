"""Exact duplicates across all sources: keep the first copy, remember every source that held it.

Sources are read in config order, so "first" means the earliest source in data.sources, then file order.
Ids become `{source}|{id}`: two sources may use the same id for different proteins.

Memory: one 16-byte BLAKE2b digest of each distinct sequence plus a small record (~150 bytes per unique
sequence in a Python dict): fine to ~10^7 sequences (~1.5 GB). At UniRef/ColabFoldDB scale (10^8-10^9),
leave exact dedup to MMseqs2 (linclust collapses identical sequences in its own first step) or run it
sharded by digest prefix; the sequences themselves are never held in memory here.
"""

import hashlib
import io
import logging

from plmscale.data.atomic import write_gzip_text, write_json
from plmscale.data.gzio import open_read
from plmscale.data.linefasta import RecordWriter, read_records, record_id
from plmscale.errors import PlmscaleError

log = logging.getLogger(__name__)
SEPARATOR = "|"


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("ascii"), digest_size=16).digest()


def dedup(clean_fastas: dict, out_fasta, out_provenance, out_stats) -> dict:
    """clean_fastas: {source: path} in priority order. Writes the unique FASTA, provenance and stats."""
    sources = list(clean_fastas)
    first_copy = {}          # sequence digest -> [unique_id, source bit mask, n_copies]
    seen_ids = set()         # digests of unique ids, to catch an id repeated within a source
    per_source = {}
    with RecordWriter(out_fasta) as writer:
        for index, (source, path) in enumerate(clean_fastas.items()):
            counts = {"seen": 0, "kept": 0, "duplicates": 0, "duplicates_within_source": 0}
            for header, sequence in read_records(path):
                counts["seen"] += 1
                key = _digest(sequence)
                entry = first_copy.get(key)
                if entry is not None:
                    counts["duplicates"] += 1
                    if entry[1] & (1 << index):
                        counts["duplicates_within_source"] += 1
                    entry[1] |= 1 << index
                    entry[2] += 1
                    continue
                unique_id = f"{source}{SEPARATOR}{record_id(header)}"
                id_key = _digest(unique_id)
                if id_key in seen_ids:
                    raise PlmscaleError(f"{path}: id {record_id(header)!r} occurs twice with different "
                                        "sequences; ids must be unique within a source — rerun the clean "
                                        "step, or fix the source file")
                seen_ids.add(id_key)
                first_copy[key] = [unique_id, 1 << index, 1]
                writer.write(unique_id, sequence)
                counts["kept"] += 1
            per_source[source] = counts
            log.info("dedup %s: %d seen, %d kept, %d duplicates", source, counts["seen"], counts["kept"],
                     counts["duplicates"])
        if writer.n_records == 0:  # raised inside the writer: no output file appears
            raise PlmscaleError(
                f"no sequence survived the clean step in any source ({', '.join(sources)}): every record was "
                f"dropped as invalid or outside the length limits — see results/data/clean/<source>.stats.json "
                f"for why, then fix data.sources or data.clean in the config")
    empty = [s for s, c in per_source.items() if c["seen"] == 0]
    for source in empty:
        log.warning("source %r has no sequence left after the clean step while other sources do: its weight "
                    "in data.sources will have nothing to draw from; see results/data/clean/%s.stats.json",
                    source, source)

    with write_gzip_text(out_provenance) as handle:
        handle.write("unique_id\tsources\tn_copies\n")
        for unique_id, mask, copies in first_copy.values():  # insertion order = unique FASTA order
            holders = ",".join(s for i, s in enumerate(sources) if mask & (1 << i))
            handle.write(f"{unique_id}\t{holders}\t{copies}\n")

    n_seen = sum(c["seen"] for c in per_source.values())
    stats = {
        "sources": sources,
        "per_source": per_source,
        "n_seen": n_seen,
        "n_unique": writer.n_records,
        "n_duplicates": n_seen - writer.n_records,
        "n_residues_unique": writer.n_residues,
        "empty_sources": empty,
        "n_shared_across_sources": sum(1 for _, mask, _ in first_copy.values() if mask & (mask - 1)),
        "identity": "per source: seen = kept + duplicates; n_seen = n_unique + n_duplicates",
    }
    assert all(c["seen"] == c["kept"] + c["duplicates"] for c in per_source.values())
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
