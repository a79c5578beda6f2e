"""Identity of every valid and test sequence to the training split (MMseqs2 search), binned for
out-of-distribution evaluation: the paper's held-out sets at < 0.9 and < 0.5 identity to training.

The split keeps whole clusters apart, but clustering is a greedy cover, not an all-pairs guarantee: a
held-out sequence can still have a training sequence above the clustering threshold. This step measures
that. Each valid/test sequence is searched against the train split (`mmseqs search`, exact sequence
identity: --alignment-mode 3, prefilter sensitivity and alignment coverage from data.identity); its best
hit is the alignment with the highest fraction identity (fident; ties: higher bit score, then the earlier
train record), and it falls into one bin of the edges e1 < e2 < ...:
    no_hit            no alignment passes the e-value and coverage thresholds
    <e1, e1-e2, ...   best-hit identity in [0, e1), [e1, e2), ...
    >=ek              identity of at least the last edge
With the default edges [0.5, 0.9]: no_hit, <0.5, 0.5-0.9, >=0.9.

Cost at scale: the search is linear in the number of queries (each is prefiltered against one k-mer index of
the train split and aligned to its candidates), and every training job waits for it. data.identity.max_queries
bounds it: a split with more records searches a deterministic sample of that many (the records whose ids have
the smallest 64-bit blake2b hashes, so the same ones on every rerun and whatever the order); the others get
the bin `not_searched`, and summary.json gives n_searched and max_queries per split. A few thousand queries
per bin estimate a bin's share to within ~1%; the training's per-bin losses use the searched ones only.

Outputs: one table per split, rows in the split FASTA's order (so also the token shards' order, which the
training's per-bin evaluation relies on and checks through `length`):
    seq_id  length  best_hit  identity  bin      (best_hit and identity empty for no_hit)
and summary.json with the count per bin of each split; the counts add up to the split's records.

MMseqs2 sees records under numbers, never their ids (it parses ids such as `sp|x`), as in mmseqs.py. Memory:
a few numbers per query (~40 bytes: identity, bit score, hit, length, bin), plus the ids of the distinct
train records that are some query's best hit; nothing per train record, whose ids go to a file read back once.
"""

import hashlib
import logging
import os
import shutil
from array import array
from pathlib import Path

import numpy as np

from plmscale.data.atomic import write_json, write_text
from plmscale.data.linefasta import read_records, record_id
from plmscale.data.mmseqs import _Runner, fresh_work_dir
from plmscale.errors import PlmscaleError
from plmscale.provenance import mmseqs_version

log = logging.getLogger(__name__)

NO_HIT = "no_hit"
NOT_SEARCHED = "not_searched"   # outside the sample of data.identity.max_queries
TABLE_COLUMNS = ("seq_id", "length", "best_hit", "identity", "bin")
QUERY_SPLITS = ("valid", "test")
DEFAULT_EDGES = (0.5, 0.9)
RESULT_CHUNK_ROWS = 1 << 20  # rows of MMseqs2's hit table parsed at a time


# ---- bins ------------------------------------------------------------------------------------------------

def check_edges(edges, key="data.identity.bins") -> list:
    edges = [float(e) for e in edges]
    if not edges or any(not 0 < e <= 1 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise PlmscaleError(f"{key} must be increasing identities in (0, 1], e.g. [0.5, 0.9]; got {edges}")
    return edges


def bin_labels(edges) -> list:
    """Labels in order, lowest identity first after no_hit: [no_hit, <0.5, 0.5-0.9, >=0.9] for [0.5, 0.9]."""
    edges = check_edges(edges)
    text = [f"{e:g}" for e in edges]
    return [NO_HIT, f"<{text[0]}", *(f"{a}-{b}" for a, b in zip(text, text[1:])), f">={text[-1]}"]


def bin_order(label: str) -> tuple:
    """Sort key that puts labels written by bin_labels back in their order (no_hit, then by lower edge)."""
    if label == NO_HIT:
        return (0, 0.0)
    if label == NOT_SEARCHED:
        return (3, 0.0)
    if label.startswith("<"):
        return (1, 0.0)
    if label.startswith(">="):
        return (2, float(label[2:]))
    try:
        return (2, float(label.split("-", 1)[0]))
    except ValueError:
        raise PlmscaleError(f"{label!r} is not an identity bin label (no_hit, <a, a-b or >=b)") from None


def assign_bins(identity: np.ndarray, edges) -> np.ndarray:
    """Bin label of each identity (NaN = no hit) as an object array."""
    labels = np.array(bin_labels(edges), dtype=object)
    identity = np.asarray(identity, dtype=np.float64)
    index = np.searchsorted(np.asarray(check_edges(edges)), identity, side="right") + 1
    index[np.isnan(identity)] = 0
    return labels[index]


# ---- numbering -------------------------------------------------------------------------------------------

def _number_records(fasta, numbered, ids_out, first=0, lengths=None, searched=None) -> int:
    """Append fasta's records to `numbered` as `>first`, `>first+1`, ..., their ids to `ids_out` (one a
    line), and their lengths to `lengths` (an array("q"), or None to keep nothing); return how many were
    numbered. searched: a boolean array, one per record; only those records are numbered (None: all)."""
    count = 0
    for index, (header, sequence) in enumerate(read_records(fasta)):
        ids_out.write(record_id(header) + "\n")
        if lengths is not None:
            lengths.append(len(sequence))
        if searched is None or searched[index]:
            numbered.write(f">{first + count}\n{sequence}\n")
            count += 1
    return count


def query_sample(fasta, max_queries):
    """The records of `fasta` to search: None (all) when max_queries is None or the file holds no more,
    else a boolean array marking the max_queries records whose ids hash lowest (blake2b, 64 bits; ties by
    place), which depends on the ids only."""
    if max_queries is None:
        return None
    hashes = np.fromiter((int.from_bytes(hashlib.blake2b(record_id(header).encode(), digest_size=8).digest(), "big")
                          for header, _ in read_records(fasta)), dtype=np.uint64)
    if len(hashes) <= max_queries:
        return None
    searched = np.zeros(len(hashes), dtype=bool)
    searched[np.lexsort((np.arange(len(hashes)), hashes))[:max_queries]] = True
    return searched


# ---- hits ------------------------------------------------------------------------------------------------

def best_hits(hits_tsv, n_queries: int):
    """(identity, target) per query number from MMseqs2's `query target fident bits` table: the highest
    fident, ties to the higher bit score, then the lower target number. NaN / -1 where a query has no hit."""
    import pandas as pd  # here, not at the top: training imports this module, and GPU nodes may lack pandas

    best_identity = np.full(n_queries, np.nan)
    best_bits = np.full(n_queries, -np.inf)
    best_target = np.full(n_queries, -1, dtype=np.int64)
    if os.path.getsize(hits_tsv) == 0:
        return best_identity, best_target
    chunks = pd.read_csv(hits_tsv, sep="\t", header=None, names=["query", "target", "fident", "bits"],
                         dtype={"query": np.int64, "target": np.int64, "fident": np.float64, "bits": np.float64},
                         chunksize=RESULT_CHUNK_ROWS)
    for chunk in chunks:
        q, t = chunk["query"].to_numpy(), chunk["target"].to_numpy()
        if len(q) and (q.min() < 0 or q.max() >= n_queries):
            raise PlmscaleError(f"{hits_tsv}: MMseqs2 reported query numbers outside 0..{n_queries - 1}; "
                                "check the MMseqs2 version (14+ expected) and data.identity.extra_args")
        ident, bits = chunk["fident"].to_numpy(), chunk["bits"].to_numpy()
        # The chunk's best per query, then merged with what earlier chunks found.
        order = np.lexsort((t, -bits, -ident, q))
        q, t, ident, bits = q[order], t[order], ident[order], bits[order]
        first = np.ones(len(q), dtype=bool)
        first[1:] = q[1:] != q[:-1]
        q, t, ident, bits = q[first], t[first], ident[first], bits[first]
        old_ident, old_bits, old_t = best_identity[q], best_bits[q], best_target[q]
        better = (np.isnan(old_ident) | (ident > old_ident) |
                  ((ident == old_ident) & ((bits > old_bits) | ((bits == old_bits) & (t < old_t)))))
        best_identity[q[better]], best_bits[q[better]], best_target[q[better]] = ident[better], bits[better], t[better]
    return best_identity, best_target


def _target_names(ids_path, numbers: np.ndarray) -> dict:
    """{number: id} for the given train record numbers, reading the ids file once."""
    wanted = np.unique(numbers[numbers >= 0])
    names, k = {}, 0
    if len(wanted) == 0:
        return names
    with open(ids_path) as handle:
        for number, line in enumerate(handle):
            if number == wanted[k]:
                names[number] = line.rstrip("\n")
                k += 1
                if k == len(wanted):
                    break
    if k != len(wanted):
        raise PlmscaleError(f"MMseqs2 reported train record {int(wanted[k])}, beyond the train split's records")
    return names


# ---- the step --------------------------------------------------------------------------------------------

def search_identity(train_fasta, query_fastas: dict, out_tables: dict, out_summary, *, edges=DEFAULT_EDGES,
                    sensitivity=4.0, coverage=0.8, cov_mode=2, evalue=1e-3, extra_args=(), threads=1,
                    mem_mb=None, tmp_root=None, mmseqs_log=None, binary="mmseqs", max_queries=None) -> dict:
    """Search each query split's FASTA (query_fastas: {"valid": path, "test": path}) against train_fasta;
    write one table per split (out_tables, same keys) and the summary JSON; return the summary.
    max_queries: search at most this many records per split (a deterministic sample, see query_sample)."""
    if max_queries is not None and max_queries < 1:
        raise PlmscaleError(f"data.identity.max_queries must be at least 1 (or null: every record), not {max_queries}")
    edges = check_edges(edges)
    labels = bin_labels(edges)
    splits = list(query_fastas)
    if set(out_tables) != set(splits):
        raise ValueError("query_fastas and out_tables must name the same splits")
    mmseqs_log = Path(mmseqs_log or Path(out_summary).with_name("mmseqs.log"))
    work = fresh_work_dir(tmp_root, beside=out_summary)
    run = _Runner(binary, mmseqs_log, work, settings_key="data.identity", mem_mb=mem_mb)
    try:
        with open(work / "target.fasta", "w") as numbered, open(work / "target.ids", "w") as ids:
            n_train = _number_records(train_fasta, numbered, ids)
        if n_train == 0:
            raise PlmscaleError(f"{train_fasta}: the train split is empty; nothing to search against")
        lengths, offsets, samples, n_searched = {}, {}, {}, 0
        with open(work / "query.fasta", "w") as numbered, open(work / "query.ids", "w") as ids:
            for split in splits:  # one query set, numbered on: split k starts where split k-1 ended
                offsets[split] = sum(len(v) for v in lengths.values())
                lengths[split] = array("q")  # 8 bytes a query
                samples[split] = query_sample(query_fastas[split], max_queries)
                n_searched += _number_records(query_fastas[split], numbered, ids, first=n_searched,
                                              lengths=lengths[split], searched=samples[split])
        n_queries = sum(len(v) for v in lengths.values())
        hits = work / "hits.tsv"
        if n_searched:
            run(["createdb", work / "target.fasta", work / "targetDB"])
            (work / "target.fasta").unlink()  # the database holds the sequences now: half the disk
            run(["createdb", work / "query.fasta", work / "queryDB"])
            args = ["search", work / "queryDB", work / "targetDB", work / "resultDB", work / "tmp",
                    "-s", sensitivity, "-c", coverage, "--cov-mode", cov_mode, "-e", evalue,
                    "--alignment-mode", 3, "--threads", max(1, int(threads))]
            if mem_mb:
                args += ["--split-memory-limit", f"{max(64, int(mem_mb * 0.8))}M"]
            run(args + list(extra_args))
            run(["convertalis", work / "queryDB", work / "targetDB", work / "resultDB", hits,
                 "--format-output", "query,target,fident,bits", "--threads", max(1, int(threads))])
        else:
            hits.write_text("")
        identity, target = best_hits(hits, n_searched)
        searched = np.concatenate([np.ones(len(lengths[split]), dtype=bool) if samples[split] is None
                                   else samples[split] for split in splits]) if splits else np.ones(0, bool)
        if n_searched < n_queries:   # back to one row per record, the unsearched ones without a hit
            identity, target = _spread(identity, searched, np.nan), _spread(target, searched, -1)
        names = _target_names(work / "target.ids", target)
        bins = assign_bins(identity, edges)
        bins[~searched] = NOT_SEARCHED
        summary_splits = {}
        with open(work / "query.ids") as query_ids:
            for split in splits:
                start, n = offsets[split], len(lengths[split])
                part = slice(start, start + n)
                _write_table(out_tables[split], query_ids, lengths[split], target[part], identity[part],
                             bins[part], names)
                sampled = samples[split] is not None
                counts = {label: int(np.sum(bins[part] == label)) for label in labels + [NOT_SEARCHED] * sampled}
                _check_counts(split, counts, n, query_fastas[split])
                n_split_searched = int(searched[part].sum())
                summary_splits[split] = {"n_sequences": n, "counts": counts, "fractions": {
                    k: (v / n_split_searched if n_split_searched else None) for k, v in counts.items()
                    if k != NOT_SEARCHED}}
                if max_queries is not None:   # the sample size, where the config asks for one
                    summary_splits[split].update(n_searched=n_split_searched, max_queries=max_queries)
                log.info("%s: %d sequences by identity to train: %s", split, n, counts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "bins": labels, "edges": edges, "n_train_sequences": n_train, "splits": summary_splits,
        "settings": {"sensitivity": sensitivity, "coverage": coverage, "cov_mode": cov_mode, "evalue": evalue,
                     "alignment_mode": 3, "extra_args": list(extra_args),
                     "best_hit": "highest fident; ties: higher bits, then earlier train record"},
        "mmseqs_version": mmseqs_version(run.binary),
        "commands": run.commands,
    }
    write_json(out_summary, summary)
    return summary


def _spread(values, searched, missing):
    """values of the searched records placed at their rows, `missing` elsewhere."""
    full = np.full(len(searched), missing, dtype=values.dtype)
    full[searched] = values
    return full


def _write_table(path, query_ids, lengths, target, identity, bins, names) -> None:
    with write_text(path) as handle:
        handle.write("\t".join(TABLE_COLUMNS) + "\n")
        for length, t, ident, label in zip(lengths, target, identity, bins):
            seq_id = query_ids.readline().rstrip("\n")
            hit = names[int(t)] if t >= 0 else ""
            value = "" if np.isnan(ident) else f"{ident:.4g}"
            handle.write(f"{seq_id}\t{int(length)}\t{hit}\t{value}\t{label}\n")


def _check_counts(split, counts, n, fasta) -> None:
    if sum(counts.values()) != n:
        raise PlmscaleError(f"identity bins of the {split} split hold {sum(counts.values())} sequences but "
                            f"{fasta} has {n}; this is a bug — please report it")


# ---- reading -----------------------------------------------------------------------------------------------

def read_identity_table(path):
    """A table written by search_identity (a pandas DataFrame), checked: its columns, and bins that are bin
    labels."""
    import pandas as pd

    try:
        table = pd.read_csv(path, sep="\t", dtype={"seq_id": str, "best_hit": str, "bin": str},
                            keep_default_na=False, na_values={"identity": [""]})
    except FileNotFoundError:
        raise PlmscaleError(f"{path} does not exist; run the identity step of the workflow") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise PlmscaleError(f"{path}: not a readable identity table ({error}); delete it and rerun the "
                            "identity step") from None
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise PlmscaleError(f"{path}: column(s) {', '.join(missing)} missing (expected {', '.join(TABLE_COLUMNS)}); "
                            "delete it and rerun the identity step")
    for label in table["bin"].unique():
        bin_order(label)  # raises on a label that is not a bin
    return table


def ordered_bins(labels) -> list:
    return sorted(set(labels), key=bin_order)
