"""The generated demo corpus: deterministic, the planted structure present, malformed records present."""

import csv
import gzip
import json

import pytest

from plmscale.cli import main as cli_main
from plmscale.data.demo import MALFORMED, generate, write_demo_corpus, write_demo_floor

SMALL = dict(seed=3, n_families=10, members_per_family=6, n_exact_duplicates=8, n_malformed=7)
NO_FLOOR = dict(floor_sequences=0)   # the floor has its own tests; files without it are quick


def test_same_seed_same_bytes_other_seed_other_corpus(tmp_path):
    write_demo_corpus(tmp_path / "a", **SMALL, **NO_FLOOR)
    write_demo_corpus(tmp_path / "b", **SMALL, **NO_FLOOR)
    write_demo_corpus(tmp_path / "c", **{**SMALL, "seed": 4}, **NO_FLOOR)
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
                     "--n-exact-duplicates", "2", "--n-malformed", "7", "--floor-sequences", "0"]) == 0
    with gzip.open(tmp_path / "metagenomic.fasta.gz", "rb") as handle:
        raw = handle.read()
    assert b"\r\n" in raw and b"*" in raw and b"J" in raw
    with open(tmp_path / "metagenomic.truth.tsv") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert raw.count(b">") == len(rows)
    assert {"kept", "dropped_invalid", "dropped_length", "duplicate"} == {r["expected"] for r in rows}


def test_indels_keep_order_and_rates():
    import numpy as np
    from plmscale.data.demo import _Evolver
    evolver = _Evolver(np.random.default_rng(0), 0.2, 30, 1022)
    parent = np.arange(20_000) % 20
    child = evolver.indels(parent)
    # ~10% of positions deleted, ~10% followed by 1-3 inserted residues (mean 2): length grows ~10%.
    assert 1.05 < len(child) / len(parent) < 1.15
    assert not np.array_equal(child[:len(parent)], parent)


def test_library_is_zipf_and_families_are_motif_chains():
    import numpy as np
    from plmscale.data.demo import MotifLibrary, _indices
    library = MotifLibrary.draw(SMALL["seed"], n_motifs=500, motif_zipf=1.2, motif_min_length=8, motif_max_length=12)
    assert len(library.motifs) == 500 and all(8 <= len(m) <= 12 for m in library.motifs)
    assert library.usage[0] / library.usage[9] == pytest.approx(10 ** 1.2)
    corpus = generate(**{**SMALL, "n_motifs": 500, "motif_zipf": 1.2, "motif_min_length": 8,
                         "motif_max_length": 12, "indel_rate": 0.0, "family_divergence": 0.0})
    text = "".join(r.sequence for r in corpus["reference"] if r.kind == "member")
    top = "".join(np.array(list("ARNDCQEGHILKMFPSTWYV"))[library.motifs[0]])
    rare = "".join(np.array(list("ARNDCQEGHILKMFPSTWYV"))[library.motifs[-1]])
    assert text.count(top) > 20 * max(text.count(rare), 1)
    assert np.all(_indices(top) == library.motifs[0])


def test_floor_hmm_is_a_distribution_and_its_conditionals_agree():
    """The floor's HMM: next-residue probabilities of all length-3 windows sum to 1, and the forward-backward
    conditional of a masked middle residue equals P(x1, x2, x3) / sum over x2 of the same."""
    import itertools

    import numpy as np
    from plmscale.data.demo import MotifLibrary, _MotifHMM
    library = MotifLibrary.draw(3, n_motifs=4, motif_zipf=1.0, motif_min_length=2, motif_max_length=3,
                                linker_mean=1.0)
    hmm = _MotifHMM(library, family_divergence=0.2)
    windows = np.array(list(itertools.product(range(20), repeat=3)))
    joint = np.exp(-hmm.next_residue_losses(windows).sum(axis=1))
    assert joint.sum() == pytest.approx(1.0, abs=1e-9)
    table = joint.reshape(20, 20, 20)
    masked = np.zeros(windows.shape, dtype=bool)
    masked[:, 1] = True
    conditional = np.exp(-hmm.masked_losses(windows, masked)[:, 1])
    expected = (table / table.sum(axis=1, keepdims=True)).reshape(-1)
    assert np.allclose(conditional, expected, rtol=1e-4)


def test_floor_is_below_the_residue_entropy_and_written(tmp_path):
    write_demo_floor(tmp_path / "floor.json", **{**SMALL, "n_motifs": 200, "floor_sequences": 8})
    floor = json.loads((tmp_path / "floor.json").read_text())
    # Motif structure is learnable: the Bayes loss sits well under the background entropy; MLM sees both
    # sides, so it sits lower still.
    assert floor["mlm_floor_nats"] < floor["clm_floor_nats"] < floor["residue_entropy_nats"] - 0.3
    assert floor["settings"]["n_motifs"] == 200


def test_unknown_setting_is_named(tmp_path):
    with pytest.raises(ValueError, match="n_motif"):
        write_demo_corpus(tmp_path, n_motif=3)
    with pytest.raises(ValueError, match="n_motif"):
        write_demo_floor(tmp_path / "floor.json", n_motif=3)
