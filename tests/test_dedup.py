"""Exact dedup across sources: first copy kept, ids prefixed by source, provenance and counts right."""

import gzip
import hashlib
import random
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


def _reference_dedup(sources: dict):
    """The single in-memory pass dedup replaced: the expected records, provenance and per-source counts."""
    first, records, per_source = {}, [], {}
    for index, (source, records_of_source) in enumerate(sources.items()):
        counts = {"seen": 0, "kept": 0, "duplicates": 0, "duplicates_within_source": 0}
        for seq_id, sequence in records_of_source:
            counts["seen"] += 1
            if sequence in first:
                entry = first[sequence]
                counts["duplicates"] += 1
                counts["duplicates_within_source"] += source in entry[1]
                entry[1].add(source)
                entry[2] += 1
                continue
            first[sequence] = [f"{source}|{seq_id}", {source}, 1]
            records.append((f"{source}|{seq_id}", sequence))
            counts["kept"] += 1
        per_source[source] = counts
    order = list(sources)
    provenance = [(uid, sorted(holders, key=order.index), n) for uid, holders, n in first.values()]
    return records, provenance, per_source


@pytest.fixture
def corpus_with_duplicates(tmp_path):
    """Three sources drawing from one pool: copies within a source, across sources and across partitions."""
    rng = random.Random(3)
    pool = ["".join(rng.choices("ACDEFGHIKLMNPQRSTVWY", k=rng.randint(5, 40))) for _ in range(400)]
    sources = {name: [(f"{name[0]}{i}", rng.choice(pool)) for i in range(300)] for name in ("ref", "meta", "env")}
    paths = {name: _fasta(tmp_path / f"{name}.fa.gz", records) for name, records in sources.items()}
    return sources, paths


@pytest.mark.parametrize("threads", [1, 2])
def test_engine_dedup_equals_the_in_memory_pass(tmp_path, corpus_with_duplicates, threads):
    sources, paths = corpus_with_duplicates
    records, provenance, per_source = _reference_dedup(sources)
    out = tmp_path / "out"
    stats = dedup(paths, out / "u.fa.gz", out / "p.tsv.gz", out / "s.json", threads=threads)
    assert list(read_records(out / "u.fa.gz")) == records
    assert list(read_provenance(out / "p.tsv.gz")) == provenance
    assert stats["per_source"] == per_source
    n_input = sum(len(r) for r in sources.values())
    assert stats["n_seen"] == n_input == stats["n_unique"] + stats["n_duplicates"]
    assert all(c["seen"] == c["kept"] + c["duplicates"] for c in stats["per_source"].values())
    assert stats["n_shared_across_sources"] == sum(1 for _, holders, _ in provenance if len(holders) > 1) > 0


# sha256 of what the hand-written partitioned dedup (before DuckDB, commit 1b09185) wrote for
# corpus_with_duplicates: DuckDB must give the same bytes, at any thread count and memory.
BYTES_BEFORE_DUCKDB = {
    "u.fa.gz": "145d96046f55d7dda4644f07fce1893360f8ab57f2e5f4ac9b680170dcf949d3",
    "p.tsv.gz": "0bc9d59921f9eba316d40c7dbbda18a86faed48cc3a50b46d970ed326ac49d22",
    "s.json": "7390fa2eaee6575a1d7ef4b3b5efec2ac18c5d2bfc5acc7c7f2360f0cbd8b808",
}


def test_same_bytes_as_before_at_any_threads_and_memory(tmp_path, corpus_with_duplicates):
    _, paths = corpus_with_duplicates
    for threads, mem_mb in ((1, 256), (2, 4000)):
        out = tmp_path / f"{threads}"
        dedup(paths, out / "u.fa.gz", out / "p.tsv.gz", out / "s.json", threads=threads, mem_mb=mem_mb)
        assert {name: hashlib.sha256((out / name).read_bytes()).hexdigest()
                for name in BYTES_BEFORE_DUCKDB} == BYTES_BEFORE_DUCKDB
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name], "scratch folders must be removed"


def test_same_bytes_when_records_come_in_many_small_blocks(tmp_path, corpus_with_duplicates, monkeypatch):
    """Blocks of a few records each: every block boundary, and the gzip writer's chunks across them."""
    monkeypatch.setattr("plmscale.data.recordblocks.BLOCK_BYTES", 301)
    _, paths = corpus_with_duplicates
    dedup(paths, tmp_path / "u.fa.gz", tmp_path / "p.tsv.gz", tmp_path / "s.json", threads=2)
    assert {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
            for name in BYTES_BEFORE_DUCKDB} == BYTES_BEFORE_DUCKDB


def test_gzip_is_recognised_by_content_not_by_name(tmp_path, two_sources):
    """Plain text named .gz and gzip named .fa, as every plmscale reader accepts them."""
    plain = tmp_path / "plain.fa.gz"
    plain.write_bytes(gzip.decompress(two_sources["ref"].read_bytes()))
    zipped = tmp_path / "zipped.fa"
    zipped.write_bytes(two_sources["meta"].read_bytes())
    out = tmp_path / "out"
    stats = dedup({"ref": plain, "meta": zipped}, out / "u.fa.gz", out / "p.tsv.gz", out / "s.json")
    assert stats["n_seen"] == 8 and stats["n_unique"] == 4


def test_repeated_id_far_apart_is_found(tmp_path):
    bad = _fasta(tmp_path / "bad.fa.gz", [(f"x{i}", "MKV" + "A" * i) for i in range(20)] + [("x3", "GGGWWW")])
    with pytest.raises(PlmscaleError, match=r"bad.fa.gz: id 'x3' occurs twice"):
        dedup({"s": bad}, tmp_path / "u.fa.gz", tmp_path / "p.tsv.gz", tmp_path / "s.json")
    assert not (tmp_path / "u.fa.gz").exists()


def test_ids_are_first_words_and_a_broken_layout_names_its_line(tmp_path):
    with gzip.open(tmp_path / "a.fa.gz", "wt") as handle:
        handle.write(">x1 desc\tmore\nMKV\n> \x1fx2\x0bdesc\nGGG\n>\nWWW\n")
    dedup({"s": tmp_path / "a.fa.gz"}, tmp_path / "u.fa.gz", tmp_path / "p.tsv.gz", tmp_path / "s.json")
    assert [h for h, _ in read_records(tmp_path / "u.fa.gz")] == ["s|x1", "s|x2", "s|"]
    with gzip.open(tmp_path / "b.fa.gz", "wt") as handle:
        handle.write(">x1\nMKV\n>x2\n>x3\nGGG\n")
    with pytest.raises(PlmscaleError, match=r"b.fa.gz, line 4: expected a '>' header"):
        dedup({"s": tmp_path / "b.fa.gz"}, tmp_path / "v.fa.gz", tmp_path / "q.tsv.gz", tmp_path / "t.json")


def test_a_source_emptied_by_dedup_warns_and_is_listed(tmp_path, caplog):
    """Issue 27: every record of `copy` is also in `first`: dedup kept none of them, silently."""
    caplog.set_level("WARNING")
    clean = {"first": _fasta(tmp_path / "first.fa.gz", [("a", "MKVL"), ("b", "GGHH")]),
             "copy": _fasta(tmp_path / "copy.fa.gz", [("x", "GGHH"), ("y", "MKVL")])}
    stats = dedup(clean, tmp_path / "u.fa.gz", tmp_path / "p.tsv.gz", tmp_path / "s.json")
    assert stats["per_source"]["copy"]["kept"] == 0 and stats["per_source"]["copy"]["seen"] == 2
    assert stats["empty_sources"] == ["copy"] and stats["emptied_by_dedup"] == ["copy"]
    assert "source 'copy' is empty after dedup: all 2 of its sequences are also in a source" in caplog.text


def test_ids_whose_hashes_meet_are_compared_as_ids(tmp_path, corpus_with_duplicates, monkeypatch):
    """Ids are compared by a 64-bit hash first; where hashes meet (here: all of them), the ids are read
    again and compared: no false error, the same bytes, and a real repeat is still found."""
    monkeypatch.setattr("plmscale.data.dedup.id_hash_sql", lambda id_sql: f"length({id_sql}) % 3")
    _, paths = corpus_with_duplicates
    dedup(paths, tmp_path / "u.fa.gz", tmp_path / "p.tsv.gz", tmp_path / "s.json", threads=2)
    assert {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
            for name in BYTES_BEFORE_DUCKDB} == BYTES_BEFORE_DUCKDB
    bad = _fasta(tmp_path / "bad.fa.gz", [(f"x{i}", "MKV" + "A" * i) for i in range(20)] + [("x3", "GGGWWW")])
    with pytest.raises(PlmscaleError, match=r"bad.fa.gz: id 'x3' occurs twice"):
        dedup({"ok": paths[next(iter(paths))], "s": bad}, tmp_path / "u2.fa.gz", tmp_path / "p2.tsv.gz",
              tmp_path / "s2.json")
