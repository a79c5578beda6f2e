"""The generated demo corpus: deterministic, the planted structure present, malformed records present."""

import csv
import gzip

from plmscale.cli import main as cli_main
from plmscale.data.demo import MALFORMED, generate, write_demo_corpus

SMALL = dict(seed=3, n_families=10, members_per_family=6, n_exact_duplicates=8, n_malformed=7)


def test_same_seed_same_bytes_other_seed_other_corpus(tmp_path):
    write_demo_corpus(tmp_path / "a", **SMALL)
    write_demo_corpus(tmp_path / "b", **SMALL)
    write_demo_corpus(tmp_path / "c", **{**SMALL, "seed": 4})
    for name in ("reference.fasta.gz", "metagenomic.fasta.gz", "reference.truth.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "reference.fasta.gz").read_bytes() != (tmp_path / "c" / "reference.fasta.gz").read_bytes()


def test_counts_families_duplicates_and_malformed():
    corpus = generate(**SMALL)
    members = {s: [r for r in rs if r.kind == "member"] for s, rs in corpus.items()}
    # 5 shared families + 2 reference-only (reference), 5 shared + 3 metagenomic-only (metagenomic).
    assert len(members["reference"]) == 7 * 6
    assert len(members["metagenomic"]) == 8 * 6
    assert len({r.family for r in members["metagenomic"]}) > len({r.family for r in members["reference"]}) - 1
    duplicates = [r for r in corpus["metagenomic"] if r.kind == "duplicate"]
    assert len(duplicates) == 8
    all_sequences = {r.sequence for s in corpus for r in corpus[s] if r.kind == "member"}
    assert all(d.sequence in all_sequences for d in duplicates)
    reference_ids = {r.seq_id for r in corpus["reference"]}
    assert any(d.seq_id in reference_ids for d in duplicates), "some ids must collide across sources"
    for source, records in corpus.items():
        ids = [r.seq_id for r in records]
        assert len(ids) == len(set(ids)), f"ids unique within {source}"
        kinds = {r.kind for r in records}
        assert {kind for kind, _ in MALFORMED} <= kinds  # 7 malformed per source: every kind once


def test_subfamilies_are_close_families_are_not():
    corpus = generate(**{**SMALL, "indel_rate": 0.0})
    by_sub = {}
    for r in corpus["reference"]:
        if r.kind == "member":
            by_sub.setdefault(r.subfamily, []).append(r.sequence)

    def identity(a, b):
        n = min(len(a), len(b))
        return sum(x == y for x, y in zip(a[:n], b[:n])) / n

    sub_a, sub_b = sorted(by_sub)[:2]   # fam0000.s0, fam0000.s1: same family, different subfamilies
    within = identity(by_sub[sub_a][0], by_sub[sub_a][1])
    across_sub = identity(by_sub[sub_a][0], by_sub[sub_b][0])
    assert within > 0.9 > across_sub > 0.5


def test_files_truth_and_cli(tmp_path):
    assert cli_main(["demo-corpus", "--out", str(tmp_path), "--n-families", "4", "--members-per-family", "3",
                     "--n-exact-duplicates", "2", "--n-malformed", "7"]) == 0
    with gzip.open(tmp_path / "metagenomic.fasta.gz", "rb") as handle:
        raw = handle.read()
    assert b"\r\n" in raw and b"*" in raw and b"J" in raw
    with open(tmp_path / "metagenomic.truth.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert raw.count(b">") == len(rows)
    assert {"kept", "dropped_invalid", "dropped_length", "duplicate"} == {r["expected"] for r in rows}
