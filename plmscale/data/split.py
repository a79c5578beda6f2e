"""Whole clusters to train / valid / test by a stable hash, so no validation sequence has a near-twin in
training.

A cluster goes to a split by u = sha256(salt, cluster_id) read as a number in [0, 1): test below
test_fraction, valid below test_fraction + valid_fraction, train otherwise. The same cluster lands in the
same split whatever else is in the corpus (adding a source moves no existing cluster), and changing the
salt draws a new split. Cluster ids are canonical (each cluster's smallest member id, see mmseqs.py), so
reruns put every cluster where it was.

Output per split (the tokenizer's input):
- `{split}.fasta.gz`: gzip FASTA, `>{seq_id}` and one sequence line per record;
- `{split}.cluster_ids.npy` (int64) and `{split}.source_ids.npy` (int16), one entry per record in file
  order: the cluster as a dense int (0..K-1 over the whole corpus, in sorted cluster-id order) and the
  first source holding the sequence, as an index into `sources` (the config's order).
A split whose fraction is 0 is written empty; an empty split whose fraction is positive is an error that
says what to change.

Bounded memory at any corpus size, in two passes:
1. DuckDB (plmscale.data.engine, memory_limit from the job's memory, spilling to a scratch folder, on the
   rule's threads) numbers the clusters, hashes them to their splits and joins the members to the records of
   the provenance table (dedup writes it in the unique FASTA's order, with each record's sources): one
   (split, cluster, source) row per record, in FASTA order, written to a Parquet file in the scratch
   folder. DuckDB does not read the FASTA, and its connection is closed before the second pass, so its
   buffers are not held beside that pass's;
2. Python streams the unique FASTA, a block of records at a time (numpy, no call per record:
   plmscale.data.recordblocks), checks its ids against the provenance table's, line for line, and writes
   each sequence to its split and the id sidecars. The gzip writer cuts its blocks where one write per
   record would have, so the bytes do not change.
"""

import hashlib
import logging
import shutil
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from plmscale.data import engine, recordblocks
from plmscale.data.atomic import scratch_dir, temporary_name, write_binary, write_json
from plmscale.data.gzio import open_read, read_block
from plmscale.data.recordblocks import GzipBatchWriter, RowStream, keep_segments, read_record_blocks
from plmscale.errors import PlmscaleError

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
FASTA_SUFFIX = ".fasta.gz"


def sidecar_paths(fasta_path) -> tuple:
    """(cluster_ids.npy, source_ids.npy) written next to a split FASTA: `x.fasta.gz` -> `x.cluster_ids.npy`."""
    fasta_path = Path(fasta_path)
    name = fasta_path.name
    stem = name[:-len(FASTA_SUFFIX)] if name.endswith(FASTA_SUFFIX) else fasta_path.stem
    return (fasta_path.with_name(f"{stem}.cluster_ids.npy"), fasta_path.with_name(f"{stem}.source_ids.npy"))


def split_of(cluster_id: str, salt: str, valid_fraction: float, test_fraction: float) -> str:
    digest = hashlib.sha256(f"{salt}\0{cluster_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


def _split_sql(cluster_id: str, salt: str, valid_fraction: float, test_fraction: float) -> str:
    """split_of in SQL (the index into SPLITS): the same sha256 and the same float comparison."""
    u = f"(('0x' || left(sha256({engine.quote(salt)} || chr(0) || {cluster_id}), 16))::UBIGINT::DOUBLE " \
        f"/ 18446744073709551616.0)"
    return (f"CASE WHEN {u} < {float(test_fraction)!r} THEN 2 "
            f"WHEN {u} < {float(test_fraction) + float(valid_fraction)!r} THEN 1 ELSE 0 END")


def _clusters_table(clusters_tsv) -> str:
    """SQL reading clusters.tsv: (cluster_id, member_id), from one or two levels."""
    with open(clusters_tsv) as handle:
        header = handle.readline().rstrip("\n").split("\t")
    if header not in (["cluster_id", "member_id"], ["cluster_id", "subcluster_id", "member_id"]):
        raise PlmscaleError(f"{clusters_tsv}: not a plmscale clusters table (header {header}); delete it and "
                            "rerun the cluster step")
    columns = {name: "VARCHAR" for name in header}
    return f"(SELECT cluster_id, member_id FROM {engine.read_tsv(clusters_tsv, columns, header=True)})"


def _assign(con, unique_fasta, clusters_tsv, provenance_tsv, sources, valid_fraction, test_fraction,
            salt) -> tuple:
    """Table assign(idx, split, cluster, source): each record (idx: its place in the provenance table, which
    dedup writes in the unique FASTA's order; the write pass checks that the ids agree) with the index of its
    split, its dense cluster number and its source's index. Returns (sources, clusters per split, number of
    clusters). The FASTA itself is not read here: the provenance table already lists its ids in order."""
    columns = {"unique_id": "VARCHAR", "sources": "VARCHAR", "n_copies": "BIGINT"}
    provenance = engine.read_tsv(provenance_tsv, columns, header=True)
    first_source = "split_part(sources, ',', 1)"
    if sources is None:
        sources = [name for (name,) in con.execute(f"SELECT DISTINCT {first_source} AS source FROM {provenance} "
                                                   "ORDER BY source").fetchall()]
    # The source as its index (NULL: not a configured source), so the table holds no second string per record.
    # rowid: the line's place in the file (CREATE TABLE AS keeps the reader's order).
    index_of = " ".join(f"WHEN {engine.quote(name)} THEN {i}" for i, name in enumerate(sources))
    con.execute(f"CREATE TABLE records AS SELECT unique_id AS id, CASE {first_source} {index_of} END AS source, "
                f"CASE WHEN source IS NULL THEN {first_source} END AS unknown_source FROM {provenance}")
    unknown = con.execute("SELECT unknown_source FROM records WHERE unknown_source IS NOT NULL LIMIT 1").fetchone()
    if unknown:
        raise PlmscaleError(f"{provenance_tsv}: source {unknown[0]!r} is not one of {list(sources)}; the dedup "
                            "output does not match the config — rerun the dedup step")
    n_records = engine.scalar(con, "SELECT count(*) FROM records")

    con.execute(f"CREATE TABLE members AS SELECT * FROM {_clusters_table(clusters_tsv)}")
    con.execute(f"CREATE TABLE clusters AS SELECT cluster_id, row_number() OVER (ORDER BY cluster_id) - 1 AS cluster, "
                f"{_split_sql('cluster_id', salt, valid_fraction, test_fraction)} AS split "
                "FROM (SELECT DISTINCT cluster_id FROM members)")
    # One join, then the checks on its counts: a record without a member row has a NULL cluster, a member
    # listed twice adds a row, and a member that is no record is what is left of the members.
    con.execute("CREATE TABLE assign AS SELECT r.rowid AS idx, c.split, c.cluster, r.source FROM records r "
                "LEFT JOIN members m ON r.id = m.member_id "
                "LEFT JOIN clusters c USING (cluster_id)")
    n_assigned, n_absent = con.execute("SELECT count(*), count(*) - count(cluster) FROM assign").fetchone()
    n_members = engine.scalar(con, "SELECT count(*) FROM members")
    if n_absent or n_assigned != n_records or n_members != n_records:
        # A provenance table that is not the FASTA's would show up here first: say that, it is the cause.
        _check_ids_agree(unique_fasta, provenance_tsv)
    if n_absent:
        (absent,) = con.execute("SELECT r.id FROM records r JOIN assign a ON r.rowid = a.idx WHERE a.cluster "
                                "IS NULL ORDER BY a.idx LIMIT 1").fetchone()
        raise PlmscaleError(f"{absent!r} from {unique_fasta} is not in {clusters_tsv}; rerun the cluster step")
    if n_assigned != n_records:
        raise PlmscaleError(f"{clusters_tsv} lists a member of {unique_fasta} more than once; rerun the cluster step")
    if n_members != n_records:
        extra = con.execute("SELECT count(*), min(member_id) FROM members ANTI JOIN records ON id = member_id"
                            ).fetchone()
        raise PlmscaleError(f"{clusters_tsv} lists {extra[0]} ids missing from {unique_fasta} (e.g. {extra[1]!r}); "
                            "rerun the cluster step")
    per_split = dict.fromkeys(SPLITS, 0)
    for split, count in con.execute("SELECT split, count(*) FROM clusters GROUP BY split").fetchall():
        per_split[SPLITS[split]] = count
    n_clusters = engine.scalar(con, "SELECT count(*) FROM clusters")
    for table in ("records", "members", "clusters"):   # their memory to the sort of assign
        con.execute(f"DROP TABLE {table}")
    return list(sources), per_split, n_clusters


def _check_ids_agree(unique_fasta, provenance_tsv) -> None:
    """Every record of the unique FASTA has its id on the same line of the provenance table, and no more."""
    provenance_ids = ProvenanceIds(provenance_tsv)
    for block in read_record_blocks(unique_fasta):
        _check_block_ids(block, provenance_ids, unique_fasta, provenance_tsv)
    provenance_ids.check_exhausted(unique_fasta)


def _check_block_ids(block, provenance_ids, unique_fasta, provenance_tsv) -> None:
    """The ids of `block` against the next ones of the provenance table: both as newline-joined bytes, equal
    exactly when every id is (ids hold no newline)."""
    mine = block.id_lines()
    theirs = provenance_ids.take(len(block))
    if len(mine) != len(theirs) or not np.array_equal(mine, theirs):
        ours = mine.tobytes().split(b"\n")[:-1]
        listed = theirs.tobytes().split(b"\n")[:-1]
        k = next((k for k, (a, b) in enumerate(zip(ours, listed)) if a != b), min(len(ours), len(listed)))
        seq_id = ours[k].decode("ascii") if k < len(ours) else None
        unique_id = listed[k].decode("ascii", "backslashreplace") if k < len(listed) else None
        raise PlmscaleError(f"{provenance_tsv} does not match {unique_fasta} at {seq_id!r} (found {unique_id!r}); "
                            "rerun the dedup step")


class ProvenanceIds:
    """The first column (unique_id) of dedup's provenance table, read a block at a time and taken in runs of
    records as newline-joined bytes."""

    def __init__(self, path, block_bytes=None):
        self.path = path
        self._blocks = self._read(block_bytes or recordblocks.BLOCK_BYTES)
        self._pending = np.zeros(0, np.uint8)
        self._pending_ends = np.zeros(0, np.int64)   # offset past each pending id's newline

    def _read(self, block_bytes):
        carry = b""
        header = True
        # A smaller read-ahead than the FASTA's: the threaded reader holds several of its blocks.
        with open_read(self.path, block_size=1 << 20) as stream:
            while True:
                chunk = read_block(stream, block_bytes, self.path)
                data = carry + chunk
                if not chunk and data and not data.endswith(b"\n"):
                    data += b"\n"
                used = data.rfind(b"\n") + 1
                carry = data[used:]
                array = np.frombuffer(data, np.uint8, used)
                ends = np.flatnonzero(array == ord("\n"))
                if header and len(ends):
                    array, ends, header = array[ends[0] + 1:], ends[1:] - ends[0] - 1, False
                if len(ends):
                    starts = np.concatenate(([0], ends[:-1] + 1))
                    tabs = np.flatnonzero(array == ord("\t"))
                    field_end = np.minimum(np.append(tabs, len(array))[np.searchsorted(tabs, starts)], ends)
                    lengths = np.stack([field_end - starts, ends - field_end, np.ones(len(ends), np.int64)], axis=1)
                    yield keep_segments(array, lengths, np.broadcast_to(np.array([True, False, True]), lengths.shape))
                if not chunk:
                    return

    def take(self, count: int):
        """The next `count` ids (fewer at the end), each followed by a newline, one uint8 array."""
        while len(self._pending_ends) < count:
            block = next(self._blocks, None)
            if block is None:
                break
            self._pending_ends = np.concatenate((self._pending_ends,
                                                 len(self._pending) + np.flatnonzero(block == ord("\n")) + 1))
            self._pending = np.concatenate((self._pending, block))
        taken = min(count, len(self._pending_ends))
        cut = int(self._pending_ends[taken - 1]) if taken else 0
        ids, self._pending = self._pending[:cut], self._pending[cut:]
        self._pending_ends = self._pending_ends[taken:] - cut
        return ids

    def check_exhausted(self, unique_fasta) -> None:
        extra = self.take(1)
        if len(extra):
            raise PlmscaleError(f"{self.path} does not match {unique_fasta} at None (found "
                                f"{extra[:-1].tobytes().decode('ascii', 'backslashreplace')!r}); rerun the dedup step")


def split_by_cluster(unique_fasta, clusters_tsv, provenance_tsv, out_fastas: dict, out_stats, *,
                     valid_fraction=0.05, test_fraction=0.05, salt="plmscale-split-v1", sources=None,
                     threads=1, mem_mb=None) -> dict:
    """Write out_fastas[split] with its sidecars for each split, and a stats JSON; return the stats.

    sources: the source names in config order (source ids index it); None takes them sorted by name.
    threads and mem_mb: the job's, for DuckDB (see plmscale.data.engine)."""
    if valid_fraction + test_fraction >= 1:
        raise PlmscaleError("data.split: valid_fraction + test_fraction must be below 1")
    settings = {"valid_fraction": valid_fraction, "test_fraction": test_fraction, "salt": salt}
    fractions = {"train": 1 - valid_fraction - test_fraction, "valid": valid_fraction, "test": test_fraction}
    per_split = {split: {"n_sequences": 0, "n_residues": 0, "per_source": None} for split in SPLITS}
    work = scratch_dir(out_fastas["train"])
    try:
        with engine.connect(work, threads=threads, mem_mb=mem_mb) as con:
            sources, clusters_per_split, n_clusters = _assign(
                con, unique_fasta, clusters_tsv, provenance_tsv, sources, valid_fraction, test_fraction, salt)
            # To disk, and the connection closed, before the FASTA is read: see the module docstring.
            engine.copy_to_parquet(con, "SELECT split, cluster, source FROM assign ORDER BY idx",
                                   work / "assign.parquet")
        source_counts = np.zeros((len(SPLITS), len(sources)), np.int64)
        residues = [0] * len(SPLITS)
        rows = RowStream(engine.parquet_numpy_batches(work / "assign.parquet"))
        with ExitStack() as stack:  # all three files complete, or none of them
            writers = [stack.enter_context(GzipBatchWriter(out_fastas[split])) for split in SPLITS]
            sidecars = [[stack.enter_context(_NpyStream(path, dtype))
                         for path, dtype in zip(sidecar_paths(out_fastas[split]), ("<i8", "<i2"))]
                        for split in SPLITS]
            provenance_ids = ProvenanceIds(provenance_tsv)
            for block in read_record_blocks(unique_fasta):
                _check_block_ids(block, provenance_ids, unique_fasta, provenance_tsv)
                batch = rows.take(len(block), ("split", "cluster", "source"))
                if len(batch["split"]) != len(block):
                    raise PlmscaleError(f"{unique_fasta} changed while the split read it; rerun the split stage")
                _write_block(block, batch, writers, sidecars, residues, source_counts)
            provenance_ids.check_exhausted(unique_fasta)
            if not rows.exhausted():
                raise PlmscaleError(f"{unique_fasta} changed while the split read it; rerun the split stage")
            for index, split in enumerate(SPLITS):
                per_split[split] = {"n_sequences": int(source_counts[index].sum()), "n_residues": residues[index],
                                    "per_source": {sources[k]: int(n) for k, n in enumerate(source_counts[index])
                                                   if n}}
            _check_not_empty(per_split, fractions, n_clusters, unique_fasta)
            # Closed (and renamed into place) before the FASTA files, as the tokenizer expects.
            for streams in sidecars:
                for stream in streams:
                    stream.finish()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {"settings": settings, "sources": list(sources),
              "n_sequences": sum(s["n_sequences"] for s in per_split.values()),
              "n_clusters": n_clusters, "splits": {}}
    for split, stats in per_split.items():
        result["splits"][split] = {"n_sequences": stats["n_sequences"], "n_residues": stats["n_residues"],
                                   "n_clusters": clusters_per_split[split],
                                   "per_source": dict(sorted(stats["per_source"].items()))}
        log.info("%s: %d sequences, %d clusters, %d residues", split, stats["n_sequences"],
                 clusters_per_split[split], stats["n_residues"])
    write_json(out_stats, result)
    return result


def _write_block(block, batch, writers, sidecars, residues, source_counts) -> None:
    """Each record of `block` to its split as `>id` and its sequence line, with its ids to the sidecars."""
    # A record keeps '>', its id and its sequence line in its split's file (RecordBlock.record_segments).
    lengths = block.record_segments()
    pattern = np.array([True, False, True, False, True])
    split_of_record = batch["split"].astype(np.int64)
    sequence_lengths = block.sequence_lengths()
    for split in range(len(SPLITS)):
        mine = split_of_record == split
        if mine.any():
            kept = mine[:, None] & pattern
            writers[split].write(keep_segments(block.data, lengths, kept),
                                 np.cumsum((lengths * kept).sum(axis=1)[mine]))
            residues[split] += int(sequence_lengths[mine].sum())
        sidecars[split][0].extend(batch["cluster"][mine])
        sidecars[split][1].extend(batch["source"][mine])
        source_counts[split] += np.bincount(batch["source"][mine].astype(np.int64), minlength=source_counts.shape[1])


class _NpyStream:
    """A 1-D .npy file written from batches of ints in bounded memory: the values go to a temporary raw
    file, and finish() writes the .npy (the same bytes as np.save) atomically."""

    def __init__(self, path, dtype):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self._n = 0

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw_path = temporary_name(self.path.with_name(self.path.name + ".raw"))
        self._raw = open(self._raw_path, "wb", buffering=1 << 20)
        return self

    def extend(self, values) -> None:
        self._raw.write(np.asarray(values).astype(self.dtype).tobytes())
        self._n += len(values)

    def finish(self) -> None:
        self._raw.close()
        with write_binary(self.path) as out, open(self._raw_path, "rb") as raw:
            np.lib.format.write_array_header_1_0(
                out, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": (self._n,)})
            shutil.copyfileobj(raw, out, 1 << 20)

    def __exit__(self, *exc):
        self._raw.close()
        Path(self._raw_path).unlink(missing_ok=True)
        return False


def _check_not_empty(per_split, fractions, n_clusters, unique_fasta) -> None:
    """An empty split is fine where its fraction is 0 (the config asks for none); otherwise say what to do."""
    for split in SPLITS:
        if per_split[split]["n_sequences"] or fractions[split] == 0:
            continue
        if split == "train":
            raise PlmscaleError(
                f"no cluster of {unique_fasta} landed in the train split ({n_clusters} clusters, "
                f"valid_fraction {fractions['valid']}, test_fraction {fractions['test']}): add sequences or "
                f"lower data.split.valid_fraction / test_fraction")
        raise PlmscaleError(
            f"the {split} split is empty: {n_clusters} clusters are too few for data.split.{split}_fraction "
            f"{fractions[split]} — add sequences, raise data.split.{split}_fraction or change "
            f"data.split.salt, or set data.split.{split}_fraction: 0 to have no {split} split")


def read_split_ids(fasta_path, n_expected=None, mmap_mode=None) -> tuple:
    """(cluster ids int64, source ids int16) of a split FASTA, from its sidecars, checked for size.
    mmap_mode "r" maps them instead of reading them (SplitIdStream reads them in bounded memory)."""
    arrays = []
    for path, dtype in zip(sidecar_paths(fasta_path), (np.int64, np.int16)):
        try:
            values = np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
        except FileNotFoundError:
            raise PlmscaleError(f"{path} is missing: the split stage writes it next to {fasta_path}; "
                                "rerun the split stage") from None
        except ValueError as error:
            raise PlmscaleError(f"{path} is not a readable .npy file ({error}); rerun the split stage") from None
        if values.dtype != dtype or values.ndim != 1:
            raise PlmscaleError(f"{path}: expected a 1-D {np.dtype(dtype).name} array, found {values.dtype} "
                                f"{values.shape}; rerun the split stage")
        arrays.append(values)
    if len(arrays[0]) != len(arrays[1]) or (n_expected is not None and len(arrays[0]) != n_expected):
        raise PlmscaleError(f"the id sidecars of {fasta_path} disagree with it in length; rerun the split stage")
    return arrays[0], arrays[1]


class SplitIdStream:
    """The id sidecars of a split FASTA read front to back, a batch at a time: the tokenizer's memory then
    does not grow with the split (loading them whole costs 10 bytes per sequence)."""

    def __init__(self, fasta_path):
        self.fasta_path = fasta_path
        mapped = read_split_ids(fasta_path, mmap_mode="r")   # checks the headers; reads no data
        self.n = len(mapped[0])
        self._files = []
        for path, values in zip(sidecar_paths(fasta_path), mapped):
            # np.load maps an empty array as a plain array (no offset): nothing to read then.
            offset = getattr(values, "offset", None)
            handle = open(path, "rb")
            if offset is not None:
                handle.seek(offset)
            self._files.append((handle, values.dtype))
        self._done = 0

    def __len__(self):
        return self.n

    def take(self, count: int) -> tuple:
        """The next `count` (cluster ids, source ids)."""
        if self._done + count > self.n:
            raise PlmscaleError(f"{self.fasta_path} holds more records than its id sidecars ({self.n}); "
                                "rerun the split stage")
        arrays = tuple(np.fromfile(handle, dtype=dtype, count=count) for handle, dtype in self._files)
        if any(len(values) != count for values in arrays):
            raise PlmscaleError(f"the id sidecars of {self.fasta_path} are shorter than their headers say; "
                                "rerun the split stage")
        self._done += count
        return arrays

    def close(self):
        for handle, _ in self._files:
            handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
