"""Split by cluster: whole clusters per split, stable hash, the tokenizer's header contract, counts add up."""

import gzip
import hashlib
import json
import re

import numpy as np
import pytest

from plmscale.data.linefasta import read_records
from plmscale.data.split import SPLITS, SplitIdStream, read_split_ids, split_by_cluster, split_of
from plmscale.errors import PlmscaleError

HEADER = re.compile(r"^(\S+)$")


def _inputs(tmp_path, n_clusters=300, members=3):
    """n_clusters clusters of `members` sequences; ids alternate between two sources."""
    unique, provenance, clusters = [], ["unique_id\tsources\tn_copies"], []
    for c in range(n_clusters):
        for m in range(members):
            source = "ref" if (c + m) % 2 else "meta"
            seq_id = f"{source}|s{c:04d}_{m}"
            unique.append((seq_id, "MKV" * (m + 1)))
            holders = f"{source},other" if m == 0 else source
            provenance.append(f"{seq_id}\t{holders}\t{2 if m == 0 else 1}")
            clusters.append((f"rep{c:04d}", seq_id))
    with gzip.open(tmp_path / "unique.fa.gz", "wt") as handle:
        handle.writelines(f">{i}\n{s}\n" for i, s in unique)
    with gzip.open(tmp_path / "prov.tsv.gz", "wt") as handle:
        handle.write("\n".join(provenance) + "\n")
    with open(tmp_path / "clusters.tsv", "w") as handle:
        handle.write("cluster_id\tmember_id\n")
        handle.writelines(f"{c}\t{m}\n" for c, m in sorted(clusters))
    return tmp_path / "unique.fa.gz", tmp_path / "clusters.tsv", tmp_path / "prov.tsv.gz"


def _split(tmp_path, inputs, name="out", **settings):
    out = {s: tmp_path / name / f"{s}.fasta.gz" for s in SPLITS}
    stats = split_by_cluster(*inputs, out, tmp_path / name / "stats.json", **settings)
    return out, stats


def test_whole_clusters_dense_ids_and_counts(tmp_path):
    inputs = _inputs(tmp_path)
    out, stats = _split(tmp_path, inputs, valid_fraction=0.1, test_fraction=0.1)
    cluster_split, total, residues = {}, 0, 0
    sources = stats["sources"]
    for split in SPLITS:
        n = 0
        cluster_ids, source_ids = read_split_ids(out[split])
        for (header, seq), cluster, source in zip(read_records(out[split]), cluster_ids, source_ids):
            (seq_id,) = HEADER.match(header).groups()
            source = sources[source]
            assert cluster_split.setdefault(int(cluster), split) == split, "a cluster straddles splits"
            assert seq_id.startswith(source + "|")  # source = the first source holding it
            n += 1
            residues += len(seq)
        assert n == stats["splits"][split]["n_sequences"]
        total += n
    assert sorted(cluster_split) == list(range(300))  # dense 0..K-1
    assert total == stats["n_sequences"] == 900
    assert residues == sum(s["n_residues"] for s in stats["splits"].values())
    assert sum(s["n_clusters"] for s in stats["splits"].values()) == stats["n_clusters"] == 300
    for split, expected in (("valid", 0.1), ("test", 0.1)):
        assert stats["splits"][split]["n_clusters"] / 300 == pytest.approx(expected, abs=0.06)
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == stats


def test_stable_reproducible_and_salted(tmp_path):
    inputs = _inputs(tmp_path)
    first, _ = _split(tmp_path, inputs, name="a")
    second, _ = _split(tmp_path, inputs, name="b")
    for split in SPLITS:
        assert first[split].read_bytes() == second[split].read_bytes()
        for a, b in zip(read_split_ids(first[split]), read_split_ids(second[split])):
            assert a.tobytes() == b.tobytes()
    # A cluster's split depends on its id and the salt only, never on the rest of the corpus.
    assignments = [split_of(f"c{i}", "salt", 0.1, 0.1) for i in range(1000)]
    assert assignments == [split_of(f"c{i}", "salt", 0.1, 0.1) for i in range(1000)]
    assert assignments != [split_of(f"c{i}", "other salt", 0.1, 0.1) for i in range(1000)]


def test_sequence_without_cluster_is_an_error(tmp_path):
    unique, clusters, provenance = _inputs(tmp_path, n_clusters=5)
    lines = clusters.read_text().splitlines()
    clusters.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(PlmscaleError, match="is not in"):
        _split(tmp_path, (unique, clusters, provenance))
    assert not any((tmp_path / "out").glob("*.fasta.gz")), "no split file may look complete after a failure"


def test_a_zero_fraction_gives_an_empty_split_and_a_too_small_corpus_says_what_to_change(tmp_path):
    inputs = _inputs(tmp_path, n_clusters=40)
    out, stats = _split(tmp_path, inputs, name="zero", valid_fraction=0, test_fraction=0.2)
    assert stats["splits"]["valid"]["n_sequences"] == 0
    assert list(read_records(out["valid"])) == [] and len(read_split_ids(out["valid"])[0]) == 0
    (tmp_path / "tiny").mkdir()
    tiny = _inputs(tmp_path / "tiny", n_clusters=2)
    with pytest.raises(PlmscaleError, match=r"valid split is empty: 2 clusters.*data\.split\.valid_fraction: 0"):
        _split(tmp_path, tiny, name="tiny_out", valid_fraction=0.01, test_fraction=0)
    assert not (tmp_path / "tiny_out" / "train.fasta.gz").exists()


def _reference_join(inputs, settings):
    """What the single in-memory join gave: per split, the (id, dense cluster, source name) in FASTA order."""
    unique, clusters, provenance = inputs
    rows = [line.split("\t") for line in clusters.read_text().splitlines()[1:]]
    names = sorted({cluster for cluster, _ in rows})
    member_cluster = {member: names.index(cluster) for cluster, member in rows}
    with gzip.open(provenance, "rt") as handle:
        first_source = {line.split("\t")[0]: line.split("\t")[1].split(",")[0] for line in handle.readlines()[1:]}
    expected = {split: [] for split in SPLITS}
    for seq_id, _ in read_records(unique):
        cluster = member_cluster[seq_id]
        split = split_of(names[cluster], settings.get("salt", "plmscale-split-v1"), settings["valid_fraction"],
                         settings["test_fraction"])
        expected[split].append((seq_id, cluster, first_source[seq_id]))
    return expected


@pytest.mark.parametrize("threads", [1, 2])
def test_engine_join_equals_the_in_memory_join(tmp_path, threads):
    inputs = _inputs(tmp_path, n_clusters=120)
    settings = {"valid_fraction": 0.2, "test_fraction": 0.1}
    out, stats = _split(tmp_path, inputs, threads=threads, **settings)
    expected = _reference_join(inputs, settings)
    for split in SPLITS:
        cluster_ids, source_ids = read_split_ids(out[split])
        found = [(header, int(c), stats["sources"][s])
                 for (header, _), c, s in zip(read_records(out[split]), cluster_ids, source_ids)]
        assert found == expected[split]
        assert stats["splits"][split]["n_clusters"] == len({c for _, c, _ in expected[split]})


# sha256 of what the hand-written partitioned split (before DuckDB, commit 1b09185) wrote for
# _inputs(n_clusters=120) at valid 0.2, test 0.1: DuckDB must give the same bytes, at any threads and memory.
BYTES_BEFORE_DUCKDB = {
    "stats.json": "1414485f107af66a998e5d739bd8f06cf0537d1edb32a2a75be411f11456b214",
    "test.cluster_ids.npy": "2c2853f896289b3b4fcc7a6008edfa781731cfb6474cb9ae05009b0411ceaa53",
    "test.fasta.gz": "a1d7e14c0172de8df6769d9b34d996d83c6347b4773a8e8653e6f9a580a3aba2",
    "test.source_ids.npy": "7684b9360b824786c69ba7ed4f9ef2ff304526cccfdc5a5d1cf7d59d6fb2a948",
    "train.cluster_ids.npy": "9dd40161e977a4ca23c5d2b67dbe4aa89201fab9fb5e59c9816d24a14a4eee42",
    "train.fasta.gz": "ab0466611eb243dec31ac40b671217739969efa7ac857d286951908424083707",
    "train.source_ids.npy": "dbde2d4a41aab615c672e86fbcde9a16a65af52becc6cb61c0b42e862b5a8dc7",
    "valid.cluster_ids.npy": "b349ba0426b401e698f0953f0abb976bfb12310dfdad487843ddd3b67d83dfa1",
    "valid.fasta.gz": "13469419fb33344bd6a519d23d07e158c35791f25dbc500d595294ef070d911d",
    "valid.source_ids.npy": "92416183bb8d5b61587cb09f183440962628bbd113076b06e55c86eea8a8387b",
}


def test_same_bytes_as_before_at_any_threads_and_memory(tmp_path):
    inputs = _inputs(tmp_path, n_clusters=120)
    for threads, mem_mb in ((1, 256), (2, 4000)):
        out, _ = _split(tmp_path, inputs, name=f"{threads}", valid_fraction=0.2, test_fraction=0.1,
                        threads=threads, mem_mb=mem_mb)
        assert {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
                for path in sorted((tmp_path / f"{threads}").iterdir())} == BYTES_BEFORE_DUCKDB
    # The streamed sidecars are exactly what np.save writes.
    cluster_ids, _ = read_split_ids(out["train"])
    np.save(tmp_path / "saved.npy", cluster_ids)
    assert (tmp_path / "saved.npy").read_bytes() == (tmp_path / "2" / "train.cluster_ids.npy").read_bytes()
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name], "scratch folders must be removed"


def test_same_bytes_when_records_come_in_many_small_blocks(tmp_path, monkeypatch):
    """Blocks of a few records each: every block boundary, and the gzip writers' chunks across them."""
    monkeypatch.setattr("plmscale.data.recordblocks.BLOCK_BYTES", 97)
    inputs = _inputs(tmp_path, n_clusters=120)
    _split(tmp_path, inputs, name="small", valid_fraction=0.2, test_fraction=0.1, threads=2)
    assert {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted((tmp_path / "small").iterdir())} == BYTES_BEFORE_DUCKDB


def test_member_missing_from_the_fasta_is_an_error(tmp_path):
    unique, clusters, provenance = _inputs(tmp_path, n_clusters=30)
    with open(clusters, "a") as handle:
        handle.write("zzz\tghost|1\n")
    with pytest.raises(PlmscaleError, match=r"lists 1 ids missing from .*'ghost\|1'"):
        _split(tmp_path, (unique, clusters, provenance))
    assert not any((tmp_path / "out").glob("*.fasta.gz"))


def test_record_missing_from_clusters_or_provenance_is_an_error(tmp_path):
    unique, clusters, provenance = _inputs(tmp_path, n_clusters=30)
    rows = clusters.read_text().splitlines(keepends=True)
    (tmp_path / "short.tsv").write_text("".join(rows[:5] + rows[6:]))
    with pytest.raises(PlmscaleError, match=r"'\S+' from .* is not in .*short.tsv; rerun the cluster step"):
        _split(tmp_path, (unique, tmp_path / "short.tsv", provenance))
    (tmp_path / "twice.tsv").write_text("".join(rows + rows[5:6]))
    with pytest.raises(PlmscaleError, match=r"lists a member of .* more than once"):
        _split(tmp_path, (unique, tmp_path / "twice.tsv", provenance))
    with gzip.open(provenance, "rt") as handle:
        lines = handle.readlines()
    with gzip.open(tmp_path / "short_prov.tsv.gz", "wt") as handle:
        handle.writelines(lines[:3] + lines[4:])
    with pytest.raises(PlmscaleError, match=r"short_prov.tsv.gz does not match .*; rerun the dedup step"):
        _split(tmp_path, (unique, clusters, tmp_path / "short_prov.tsv.gz"))


def test_id_stream_reads_the_sidecars_in_batches(tmp_path):
    inputs = _inputs(tmp_path, n_clusters=50)
    out, _ = _split(tmp_path, inputs, valid_fraction=0.2, test_fraction=0.2)
    for split in SPLITS:
        whole = read_split_ids(out[split])
        with SplitIdStream(out[split]) as ids:
            assert len(ids) == len(whole[0])
            parts = [ids.take(n) for n in (7, 0, len(ids) - 7)]
            with pytest.raises(PlmscaleError, match="more records than its id sidecars"):
                ids.take(1)
        for k in range(2):
            assert np.concatenate([p[k] for p in parts]).tobytes() == whole[k].tobytes()
    cluster_path = tmp_path / "out" / "train.cluster_ids.npy"
    cluster_path.write_bytes(cluster_path.read_bytes()[:-8])  # one id short of its header
    with pytest.raises(PlmscaleError, match="rerun the split stage"):
        with SplitIdStream(out["train"]) as ids:
            ids.take(len(ids))


def test_provenance_in_another_order_than_the_fasta_is_an_error(tmp_path):
    """The split numbers records by their provenance line (it does not read the FASTA's ids in DuckDB), so a
    provenance table whose ids are the FASTA's but in another order, or one longer, must be refused."""
    unique, clusters, provenance = _inputs(tmp_path, n_clusters=30)
    with gzip.open(provenance, "rt") as handle:
        lines = handle.readlines()
    with gzip.open(tmp_path / "swapped.tsv.gz", "wt") as handle:
        handle.writelines(lines[:40] + [lines[41], lines[40]] + lines[42:])
    with pytest.raises(PlmscaleError,
                       match=r"swapped.tsv.gz does not match .* at '\S+' \(found '\S+'\); rerun the dedup"):
        _split(tmp_path, (unique, clusters, tmp_path / "swapped.tsv.gz"))
    with gzip.open(tmp_path / "longer.tsv.gz", "wt") as handle:
        handle.writelines(lines + ["meta|extra\tmeta\t1\n"])
    with pytest.raises(PlmscaleError, match=r"longer.tsv.gz does not match .*; rerun the dedup step"):
        _split(tmp_path, (unique, clusters, tmp_path / "longer.tsv.gz"))
    assert not any((tmp_path / "out").glob("*.fasta.gz"))


def test_a_source_the_config_does_not_list_is_an_error(tmp_path):
    unique, clusters, provenance = _inputs(tmp_path, n_clusters=30)
    with pytest.raises(PlmscaleError, match=r"prov.tsv.gz: source 'meta' is not one of \['ref'\]; .* rerun the dedup"):
        _split(tmp_path, (unique, clusters, provenance), sources=["ref"])
