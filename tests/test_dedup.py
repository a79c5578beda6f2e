"""Exact dedup across sources: first copy kept, ids prefixed by source, provenance and counts right."""

import gzip
import json

import pytest

from plmscale.data.dedup import dedup, read_provenance
from plmscale.data.linefasta import read_records
from plmscale.errors import PlmscaleError


def _fasta(path, records):
    with gzip.open(path, "wt") as handle:
        for seq_id, seq in records:
            handle.write(f">{seq_id}\n{seq}\n")
    return path


@pytest.fixture
def two_sources(tmp_path):
    a = _fasta(tmp_path / "a.fa.gz", [("x1", "MKV"), ("x2", "ACDE"), ("x3", "MKV"), ("x4", "WWW")])
    b = _fasta(tmp_path / "b.fa.gz", [("x1", "GGGG"), ("y2", "ACDE"), ("y3", "WWW"), ("y4", "ACDE")])
    return {"ref": a, "meta": b}


def test_first_copy_kept_with_source_prefixed_ids(tmp_path, two_sources):
    out = tmp_path / "out"
    stats = dedup(two_sources, out / "u.fa.gz", out / "p.tsv.gz", out / "s.json")
    records = list(read_records(out / "u.fa.gz"))
    assert records == [("ref|x1", "MKV"), ("ref|x2", "ACDE"), ("ref|x4", "WWW"), ("meta|x1", "GGGG")]
    provenance = list(read_provenance(out / "p.tsv.gz"))
    assert provenance == [("ref|x1", ["ref"], 2), ("ref|x2", ["ref", "meta"], 3),
                          ("ref|x4", ["ref", "meta"], 2), ("meta|x1", ["meta"], 1)]
    assert stats["per_source"]["ref"] == {"seen": 4, "kept": 3, "duplicates": 1, "duplicates_within_source": 1}
    assert stats["per_source"]["meta"] == {"seen": 4, "kept": 1, "duplicates": 3, "duplicates_within_source": 1}
    assert stats["n_seen"] == 8 and stats["n_unique"] == 4 and stats["n_duplicates"] == 4
    assert json.loads((out / "s.json").read_text()) == stats


def test_source_order_decides_which_copy_is_kept(tmp_path, two_sources):
    reordered = {"meta": two_sources["meta"], "ref": two_sources["ref"]}
    dedup(reordered, tmp_path / "u.fa.gz", tmp_path / "p.tsv.gz", tmp_path / "s.json")
    ids = [h for h, _ in read_records(tmp_path / "u.fa.gz")]
    assert ids == ["meta|x1", "meta|y2", "meta|y3", "ref|x1"]


def test_reproducible_bytes(tmp_path, two_sources):
    for run in ("1", "2"):
        dedup(two_sources, tmp_path / run / "u.fa.gz", tmp_path / run / "p.tsv.gz", tmp_path / run / "s.json")
    for name in ("u.fa.gz", "p.tsv.gz", "s.json"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()


def test_repeated_id_with_other_sequence_is_an_error(tmp_path):
    bad = _fasta(tmp_path / "bad.fa.gz", [("x1", "MKV"), ("x1", "GGG")])
    with pytest.raises(PlmscaleError, match=r"bad.fa.gz: id 'x1' occurs twice"):
        dedup({"s": bad}, tmp_path / "u.fa.gz", tmp_path / "p.tsv.gz", tmp_path / "s.json")
    assert not (tmp_path / "u.fa.gz").exists()


def test_not_one_line_fasta_is_an_error(tmp_path):
    wrapped = tmp_path / "w.fa"
    wrapped.write_text(">a\nMKV\nMKV\n>b\nGG\n")
    with pytest.raises(PlmscaleError, match="w.fa, line 3"):
        dedup({"s": wrapped}, tmp_path / "u.fa.gz", tmp_path / "p.tsv.gz", tmp_path / "s.json")


def test_no_sequence_left_in_any_source_says_so(tmp_path):
    clean = {"only": _fasta(tmp_path / "only.fa.gz", [])}
    with pytest.raises(PlmscaleError, match=r"no sequence survived the clean step in any source \(only\)"):
        dedup(clean, tmp_path / "u.fa.gz", tmp_path / "p.tsv.gz", tmp_path / "s.json")
    assert not (tmp_path / "u.fa.gz").exists()


def test_a_source_left_empty_warns_and_is_listed(tmp_path, caplog):
    caplog.set_level("WARNING")
    clean = {"full": _fasta(tmp_path / "full.fa.gz", [("a", "MKVL")]),
             "gone": _fasta(tmp_path / "gone.fa.gz", [])}
    stats = dedup(clean, tmp_path / "u.fa.gz", tmp_path / "p.tsv.gz", tmp_path / "s.json")
    assert stats["empty_sources"] == ["gone"]
    assert "'gone' has no sequence left" in caplog.text
