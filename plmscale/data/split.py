"""Whole clusters to train / valid / test by a stable hash, so no validation sequence has a near-twin in
training.

A cluster goes to a split by u = sha256(salt, cluster_id) read as a number in [0, 1): test below
test_fraction, valid below test_fraction + valid_fraction, train otherwise. The same cluster lands in the
same split whatever else is in the corpus (adding a source moves no existing cluster), and changing the
salt draws a new split.

Output per split: gzip FASTA, one line per sequence, headers `>{seq_id} cluster={int} source={name}` — the
tokenizer's input. Cluster ints are dense (0..K-1) over the whole corpus, in sorted cluster-id order.

Memory: a dict member -> cluster index (~100 bytes per sequence); fine to ~10^7 sequences. Beyond that,
sort the unique FASTA and clusters.tsv by member id and merge-join them instead.
"""

import hashlib
import json
import logging
from contextlib import ExitStack

from plmscale.data.atomic import write_text
from plmscale.data.dedup import read_provenance
from plmscale.data.linefasta import RecordWriter, read_records, record_id
from plmscale.data.mmseqs import read_clusters
from plmscale.errors import PlmscaleError

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")


def split_of(cluster_id: str, salt: str, valid_fraction: float, test_fraction: float) -> str:
    digest = hashlib.sha256(f"{salt}\0{cluster_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


def split_by_cluster(unique_fasta, clusters_tsv, provenance_tsv, out_fastas: dict, out_stats, *,
                     valid_fraction=0.05, test_fraction=0.05, salt="plmscale-split-v1") -> dict:
    """Write out_fastas[split] for each split and a stats JSON; return the stats."""
    if valid_fraction + test_fraction >= 1:
        raise PlmscaleError("data.split: valid_fraction + test_fraction must be below 1")
    member_cluster, cluster_names = {}, []
    for row in read_clusters(clusters_tsv):   # sorted by cluster id: dense ints in that order
        cluster_id, member = row[0], row[-1]
        if not cluster_names or cluster_names[-1] != cluster_id:
            if cluster_names and cluster_id < cluster_names[-1]:
                raise PlmscaleError(f"{clusters_tsv}: not sorted by cluster id; rerun the cluster step")
            cluster_names.append(cluster_id)
        member_cluster[member] = len(cluster_names) - 1
    cluster_split = [split_of(name, salt, valid_fraction, test_fraction) for name in cluster_names]

    per_split = {split: {"n_sequences": 0, "n_residues": 0, "clusters": set(), "per_source": {}}
                 for split in SPLITS}
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
            writers[split].write(f"{seq_id} cluster={cluster} source={source}", sequence)
            stats = per_split[split]
            stats["n_sequences"] += 1
            stats["n_residues"] += len(sequence)
            stats["clusters"].add(cluster)
            stats["per_source"][source] = stats["per_source"].get(source, 0) + 1
        if member_cluster:
            raise PlmscaleError(f"{clusters_tsv} lists {len(member_cluster)} ids missing from "
                                f"{unique_fasta} (e.g. {next(iter(member_cluster))!r}); rerun the cluster step")

    result = {"settings": {"valid_fraction": valid_fraction, "test_fraction": test_fraction, "salt": salt},
              "n_sequences": sum(s["n_sequences"] for s in per_split.values()),
              "n_clusters": len(cluster_names), "splits": {}}
    for split, stats in per_split.items():
        result["splits"][split] = {"n_sequences": stats["n_sequences"], "n_residues": stats["n_residues"],
                                   "n_clusters": len(stats["clusters"]),
                                   "per_source": dict(sorted(stats["per_source"].items()))}
        if stats["n_sequences"] == 0:
            log.warning("split %s is empty: too few clusters for fraction settings %s", split,
                        result["settings"])
        log.info("%s: %d sequences, %d clusters, %d residues", split, stats["n_sequences"],
                 len(stats["clusters"]), stats["n_residues"])
    with write_text(out_stats) as handle:
        json.dump(result, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return result
