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

Memory: a dict member -> cluster index (~100 bytes per sequence); fine to ~10^7 sequences. Beyond that,
sort the unique FASTA and clusters.tsv by member id and merge-join them instead.
"""

import hashlib
import logging
from array import array
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from plmscale.data.atomic import write_binary, write_json
from plmscale.data.dedup import read_provenance
from plmscale.data.linefasta import RecordWriter, read_records, record_id
from plmscale.data.mmseqs import read_clusters
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


def split_by_cluster(unique_fasta, clusters_tsv, provenance_tsv, out_fastas: dict, out_stats, *,
                     valid_fraction=0.05, test_fraction=0.05, salt="plmscale-split-v1", sources=None) -> dict:
    """Write out_fastas[split] with its sidecars for each split, and a stats JSON; return the stats.

    sources: the source names in config order (source ids index it); None takes them sorted by name."""
    if valid_fraction + test_fraction >= 1:
        raise PlmscaleError("data.split: valid_fraction + test_fraction must be below 1")
    if sources is None:
        sources = sorted({holders[0] for _, holders, _ in read_provenance(provenance_tsv)})
    source_index = {name: i for i, name in enumerate(sources)}
    member_cluster, cluster_names = {}, []
    for row in read_clusters(clusters_tsv):   # sorted by cluster id: dense ints in that order
        cluster_id, member = row[0], row[-1]
        if not cluster_names or cluster_names[-1] != cluster_id:
            if cluster_names and cluster_id < cluster_names[-1]:
                raise PlmscaleError(f"{clusters_tsv}: not sorted by cluster id; rerun the cluster step")
            cluster_names.append(cluster_id)
        member_cluster[member] = len(cluster_names) - 1
    cluster_split = [split_of(name, salt, valid_fraction, test_fraction) for name in cluster_names]
    fractions = {"train": 1 - valid_fraction - test_fraction, "valid": valid_fraction, "test": test_fraction}

    per_split = {split: {"n_sequences": 0, "n_residues": 0, "clusters": set(), "per_source": {}}
                 for split in SPLITS}
    ids = {split: (array("q"), array("h")) for split in SPLITS}  # 10 bytes per sequence
    provenance = read_provenance(provenance_tsv)
    with ExitStack() as stack:  # all three files complete, or none of them
        writers = {split: stack.enter_context(RecordWriter(out_fastas[split])) for split in SPLITS}
        for header, sequence in read_records(unique_fasta):
            seq_id = record_id(header)
            unique_id, holders, _ = next(provenance, (None, None, None))
            if unique_id != seq_id:
                raise PlmscaleError(f"{provenance_tsv} does not match {unique_fasta} at {seq_id!r} "
                                    f"(found {unique_id!r}); rerun the dedup step")
            cluster = member_cluster.pop(seq_id, None)
            if cluster is None:
                raise PlmscaleError(f"{seq_id!r} from {unique_fasta} is not in {clusters_tsv}; rerun the "
                                    "cluster step")
            split = cluster_split[cluster]
            source = holders[0]   # the first source holding it, as dedup kept it
            if source not in source_index:
                raise PlmscaleError(f"{provenance_tsv}: source {source!r} is not one of {sources}; the dedup "
                                    "output does not match the config — rerun the dedup step")
            writers[split].write(seq_id, sequence)
            ids[split][0].append(cluster)
            ids[split][1].append(source_index[source])
            stats = per_split[split]
            stats["n_sequences"] += 1
            stats["n_residues"] += len(sequence)
            stats["clusters"].add(cluster)
            stats["per_source"][source] = stats["per_source"].get(source, 0) + 1
        if member_cluster:
            raise PlmscaleError(f"{clusters_tsv} lists {len(member_cluster)} ids missing from "
                                f"{unique_fasta} (e.g. {next(iter(member_cluster))!r}); rerun the cluster step")
        _check_not_empty(per_split, fractions, len(cluster_names), unique_fasta)
        for split in SPLITS:  # inside the stack: the sidecars land before the FASTA files are renamed
            cluster_path, source_path = sidecar_paths(out_fastas[split])
            _write_npy(cluster_path, np.frombuffer(ids[split][0], dtype=np.int64).astype("<i8"))
            _write_npy(source_path, np.frombuffer(ids[split][1], dtype=np.int16).astype("<i2"))

    result = {"settings": {"valid_fraction": valid_fraction, "test_fraction": test_fraction, "salt": salt},
              "sources": list(sources),
              "n_sequences": sum(s["n_sequences"] for s in per_split.values()),
              "n_clusters": len(cluster_names), "splits": {}}
    for split, stats in per_split.items():
        result["splits"][split] = {"n_sequences": stats["n_sequences"], "n_residues": stats["n_residues"],
                                   "n_clusters": len(stats["clusters"]),
                                   "per_source": dict(sorted(stats["per_source"].items()))}
        log.info("%s: %d sequences, %d clusters, %d residues", split, stats["n_sequences"],
                 len(stats["clusters"]), stats["n_residues"])
    write_json(out_stats, result)
    return result


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


def _write_npy(path, values) -> None:
    with write_binary(path) as handle:
        np.save(handle, values, allow_pickle=False)


def read_split_ids(fasta_path, n_expected=None) -> tuple:
    """(cluster ids int64, source ids int16) of a split FASTA, from its sidecars, checked for size."""
    arrays = []
    for path, dtype in zip(sidecar_paths(fasta_path), (np.int64, np.int16)):
        try:
            values = np.load(path, allow_pickle=False)
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
