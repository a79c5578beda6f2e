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

Bounded memory at any corpus size: the member -> cluster join is hash-partitioned (see partition.py), in
three steps, each a Snakemake job:
1. scatter: clusters.tsv (member, dense cluster index, split) and the unique FASTA's records (place in the
   FASTA, id, source) go to P partition files by a hash of the member id;
2. join, one job per partition: a dict of that partition's members (~BYTES_PER_ENTRY each; a partition
   over the job's memory stops saying which data.partitions.count fits) gives each record its cluster;
3. gather: the joined records, merged back into FASTA order, route each sequence of a second pass over the
   unique FASTA to its split; the id sidecars are streamed to disk. The outputs are the same bytes whatever
   P is.
"""

import hashlib
import json
import logging
import shutil
from array import array
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from plmscale.data.atomic import temporary_name, write_binary, write_json, write_text
from plmscale.data.dedup import read_provenance
from plmscale.data.linefasta import RecordWriter, read_records, record_id
from plmscale.data.mmseqs import read_clusters
from plmscale.data.partition import (KEY_WIDTH, PartitionWriter, check_budget, entry_budget, key_digest,
                                     merge_sorted, order_key, partition_names, partition_of, read_lines,
                                     scratch_dir)
from plmscale.errors import PlmscaleError

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
FASTA_SUFFIX = ".fasta.gz"
# Measured with tracemalloc on ids like `metagenomic|MGYP000123456789`: the id, the "cluster\tsplit" text
# and the dict slot (~200 bytes), with room for longer ids.
BYTES_PER_ENTRY = 300


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


def scatter(unique_fasta, clusters_tsv, provenance_tsv, out_dir, n_partitions: int, *, valid_fraction=0.05,
            test_fraction=0.05, salt="plmscale-split-v1", sources=None) -> dict:
    """Step 1: members and records to partition files under out_dir (see scatter_paths), plus
    `clusters.json` (the clusters per split). Returns what it wrote to clusters.json."""
    if valid_fraction + test_fraction >= 1:
        raise PlmscaleError("data.split: valid_fraction + test_fraction must be below 1")
    paths = scatter_paths(out_dir, n_partitions)
    if sources is None:
        sources = sorted({holders[0] for _, holders, _ in read_provenance(provenance_tsv)})
    source_index = {name: i for i, name in enumerate(sources)}

    n_clusters, per_split, previous = 0, dict.fromkeys(SPLITS, 0), None
    with PartitionWriter(paths["members"]) as writer:
        for row in read_clusters(clusters_tsv):   # sorted by cluster id: dense ints in that order
            cluster_id, member = row[0], row[-1]
            if cluster_id != previous:
                if previous is not None and cluster_id < previous:
                    raise PlmscaleError(f"{clusters_tsv}: not sorted by cluster id; rerun the cluster step")
                split = SPLITS.index(split_of(cluster_id, salt, valid_fraction, test_fraction))
                per_split[SPLITS[split]] += 1
                n_clusters += 1
                previous = cluster_id
            writer.write(partition_of(key_digest(member), n_partitions), f"{member}\t{n_clusters - 1}\t{split}\n")

    provenance = read_provenance(provenance_tsv)
    with PartitionWriter(paths["records"]) as writer:
        for index, (header, _) in enumerate(read_records(unique_fasta)):
            seq_id = record_id(header)
            unique_id, holders, _ = next(provenance, (None, None, None))
            if unique_id != seq_id:
                raise PlmscaleError(f"{provenance_tsv} does not match {unique_fasta} at {seq_id!r} "
                                    f"(found {unique_id!r}); rerun the dedup step")
            source = holders[0]   # the first source holding it, as dedup kept it
            if source not in source_index:
                raise PlmscaleError(f"{provenance_tsv}: source {source!r} is not one of {sources}; the dedup "
                                    "output does not match the config — rerun the dedup step")
            writer.write(partition_of(key_digest(seq_id), n_partitions),
                         f"{order_key(0, index)}\t{seq_id}\t{source_index[source]}\n")
    summary = {"n_clusters": n_clusters, "clusters_per_split": per_split, "sources": list(sources),
               "settings": {"valid_fraction": valid_fraction, "test_fraction": test_fraction, "salt": salt}}
    write_json(paths["clusters"], summary)
    return summary


def scatter_paths(directory, n_partitions: int) -> dict:
    """The scatter step's outputs: {members: [...], records: [...], clusters: json path}."""
    directory = Path(directory)
    names = partition_names(n_partitions)
    return {"members": [directory / "members" / f"{name}.tsv" for name in names],
            "records": [directory / "records" / f"{name}.tsv" for name in names],
            "clusters": directory / "clusters.json"}


def join_partition(members_tsv, records_tsv, out_tsv, *, n_partitions: int, mem_mb: int,
                   unique_fasta="the unique FASTA", clusters_tsv="clusters.tsv") -> int:
    """Step 2: give each record of one partition its cluster and split: writes `KEY\\tcluster\\tsplit\\tsource`
    lines in FASTA order; returns how many. unique_fasta and clusters_tsv name the inputs in messages."""
    budget = entry_budget(mem_mb, BYTES_PER_ENTRY)
    member_cluster = {}
    for line in read_lines(members_tsv):
        member, cluster_and_split = line.rstrip("\n").split("\t", 1)
        member_cluster[member] = cluster_and_split
        if len(member_cluster) > budget:
            check_budget(len(member_cluster), budget, what="cluster members", inputs=[members_tsv],
                         n_partitions=n_partitions, mem_mb=mem_mb, bytes_per_entry=BYTES_PER_ENTRY)
    n_records = 0
    with write_text(out_tsv) as out:
        for line in read_lines(records_tsv):
            key, seq_id, source = line.rstrip("\n").split("\t")
            cluster_and_split = member_cluster.pop(seq_id, None)
            if cluster_and_split is None:
                raise PlmscaleError(f"{seq_id!r} from {unique_fasta} is not in {clusters_tsv}; rerun the "
                                    "cluster step")
            out.write(f"{key}\t{cluster_and_split}\t{source}\n")
            n_records += 1
        if member_cluster:
            raise PlmscaleError(f"{clusters_tsv} lists {len(member_cluster)} ids missing from "
                                f"{unique_fasta} (e.g. {next(iter(member_cluster))!r}); rerun the cluster step")
    return n_records


def gather(unique_fasta, clusters_json, joined: list, out_fastas: dict, out_stats) -> dict:
    """Step 3: the unique FASTA's sequences to their splits, in FASTA order, with their id sidecars; writes
    and returns the stats."""
    summary = json.loads(Path(clusters_json).read_text())
    sources, settings = summary["sources"], summary["settings"]
    fractions = {"train": 1 - settings["valid_fraction"] - settings["test_fraction"],
                 "valid": settings["valid_fraction"], "test": settings["test_fraction"]}
    per_split = {split: {"n_sequences": 0, "n_residues": 0, "per_source": {}} for split in SPLITS}
    assignments = merge_sorted(joined)
    with ExitStack() as stack:  # all three files complete, or none of them
        writers = {split: stack.enter_context(RecordWriter(out_fastas[split])) for split in SPLITS}
        sidecars = {split: [stack.enter_context(_NpyStream(path, dtype))
                            for path, dtype in zip(sidecar_paths(out_fastas[split]), ("<i8", "<i2"))]
                    for split in SPLITS}
        for index, (header, sequence) in enumerate(read_records(unique_fasta)):
            seq_id = record_id(header)
            line = next(assignments, None)
            if line is None or line[:KEY_WIDTH] != order_key(0, index):
                raise PlmscaleError(f"the split partitions do not match {unique_fasta} at {seq_id!r}; delete "
                                    "results/data/split and rerun the split stage")
            _, cluster, split_index, source_index = line.rstrip("\n").split("\t")
            split = SPLITS[int(split_index)]
            source = sources[int(source_index)]
            writers[split].write(seq_id, sequence)
            sidecars[split][0].append(int(cluster))
            sidecars[split][1].append(int(source_index))
            stats = per_split[split]
            stats["n_sequences"] += 1
            stats["n_residues"] += len(sequence)
            stats["per_source"][source] = stats["per_source"].get(source, 0) + 1
        if next(assignments, None) is not None:
            raise PlmscaleError(f"the split partitions hold more records than {unique_fasta}; delete "
                                "results/data/split and rerun the split stage")
        _check_not_empty(per_split, fractions, summary["n_clusters"], unique_fasta)
        # Closed (and renamed into place) before the FASTA files, as the tokenizer expects.
        for split in SPLITS:
            for stream in sidecars[split]:
                stream.finish()

    result = {"settings": settings, "sources": list(sources),
              "n_sequences": sum(s["n_sequences"] for s in per_split.values()),
              "n_clusters": summary["n_clusters"], "splits": {}}
    for split, stats in per_split.items():
        n_clusters = summary["clusters_per_split"][split]
        result["splits"][split] = {"n_sequences": stats["n_sequences"], "n_residues": stats["n_residues"],
                                   "n_clusters": n_clusters,
                                   "per_source": dict(sorted(stats["per_source"].items()))}
        log.info("%s: %d sequences, %d clusters, %d residues", split, stats["n_sequences"], n_clusters,
                 stats["n_residues"])
    write_json(out_stats, result)
    return result


def split_by_cluster(unique_fasta, clusters_tsv, provenance_tsv, out_fastas: dict, out_stats, *,
                     valid_fraction=0.05, test_fraction=0.05, salt="plmscale-split-v1", sources=None,
                     n_partitions=1, mem_mb=4000) -> dict:
    """All three steps in one process (what the Snakemake jobs do, for tests and single-machine use): write
    out_fastas[split] with its sidecars for each split, and a stats JSON; return the stats.

    sources: the source names in config order (source ids index it); None takes them sorted by name."""
    work = scratch_dir(out_fastas["train"])
    try:
        scatter(unique_fasta, clusters_tsv, provenance_tsv, work, n_partitions, valid_fraction=valid_fraction,
                test_fraction=test_fraction, salt=salt, sources=sources)
        paths = scatter_paths(work, n_partitions)
        joined = [work / "joined" / path.name for path in paths["members"]]
        for members, records, out in zip(paths["members"], paths["records"], joined):
            join_partition(members, records, out, n_partitions=n_partitions, mem_mb=mem_mb,
                           unique_fasta=unique_fasta, clusters_tsv=clusters_tsv)
        return gather(unique_fasta, paths["clusters"], joined, out_fastas, out_stats)
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _NpyStream:
    """A 1-D .npy file written from a stream of ints in bounded memory: the values go to a temporary raw
    file in batches, and finish() writes the .npy (the same bytes as np.save) atomically."""

    BATCH = 1 << 16

    def __init__(self, path, dtype):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self._batch = array("q")
        self._n = 0

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw_path = temporary_name(self.path.with_name(self.path.name + ".raw"))
        self._raw = open(self._raw_path, "wb")
        return self

    def append(self, value: int) -> None:
        self._batch.append(value)
        if len(self._batch) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        self._raw.write(np.frombuffer(self._batch, dtype=np.int64).astype(self.dtype).tobytes())
        self._n += len(self._batch)
        self._batch = array("q")

    def finish(self) -> None:
        self._flush()
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
