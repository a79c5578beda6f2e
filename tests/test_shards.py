"""Shards: FASTA -> clean -> tokenize -> ShardReader round trip, byte-identical reruns, inspect CLI."""

import gzip
import json
import re

import numpy as np
import pytest

from plmscale.alphabet import TOKENS, decode
from plmscale.cli import main as cli_main
from plmscale.data.clean import clean_fasta
from plmscale.data.fasta import read_fasta
from plmscale.data.shards import ShardReader, ShardWriter
from plmscale.data.split import sidecar_paths
from plmscale.data.tokenize import tokenize_split
from plmscale.errors import PlmscaleError
from plmscale.provenance import sha256_file

SOURCES = ["ref", "meta"]


def make_split_input(tmp_path, n=300, seed=0):
    """Raw FASTA -> clean_fasta -> the split stage's format (>id lines, cluster/source id sidecars)."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWYXBUZO", dtype=np.uint8)
    raw = b""
    for i in range(n):
        seq = letters[rng.integers(0, 25, rng.integers(5, 120))].tobytes()
        lines = b"\n".join(seq[k:k + 13] for k in range(0, len(seq), 13))
        raw += b">p%d some text\r\n%s\r\n" % (i, lines.lower() if i % 3 == 0 else lines)
    (tmp_path / "raw.fa").write_bytes(raw)
    clean = tmp_path / "clean.fa.gz"
    clean_fasta(tmp_path / "raw.fa", clean, tmp_path / "stats.json", "ref", 10, 100, False)
    cleaned = list(read_fasta(clean))
    text = b"".join(b">%s\n%s\n" % (i, s) for i, s in cleaned)
    split = tmp_path / "train.fasta.gz"
    split.write_bytes(gzip.compress(text, mtime=0))
    write_sidecars(split, [k // 3 for k in range(len(cleaned))], [k % 2 for k in range(len(cleaned))])
    return split, cleaned


def write_sidecars(fasta, clusters, sources):
    cluster_path, source_path = sidecar_paths(fasta)
    np.save(cluster_path, np.array(clusters, dtype=np.int64))
    np.save(source_path, np.array(sources, dtype=np.int16))


def test_round_trip_equals_cleaned_input(tmp_path):
    split, cleaned = make_split_input(tmp_path)
    manifest = tokenize_split(split, tmp_path / "shards", "train", SOURCES, max_tokens_per_shard=1000)
    reader = ShardReader(tmp_path / "shards")
    assert len(reader) == len(cleaned) == manifest["n_sequences"]
    assert [decode(reader[i]).encode() for i in range(len(reader))] == [s for _, s in cleaned]
    assert reader.lengths.tolist() == [len(s) for _, s in cleaned]
    assert reader[-1].dtype == np.uint8 and isinstance(reader[0], np.memmap)  # a view, no copy
    assert reader.cluster_ids.dtype == np.int64 and reader.source_ids.dtype == np.int16
    assert reader.cluster_ids.tolist() == [k // 3 for k in range(len(cleaned))]
    assert [reader.sources[s] for s in reader.source_ids] == [SOURCES[k % 2] for k in range(len(cleaned))]
    assert manifest["n_tokens"] == sum(len(s) for _, s in cleaned) == int(reader.lengths.sum())
    assert manifest["n_clusters"] == len({k // 3 for k in range(len(cleaned))})
    assert manifest["vocabulary"] == list(TOKENS) and manifest["sources"] == SOURCES
    assert sum(v["n_sequences"] for v in manifest["per_source"].values()) == len(cleaned)
    assert len(manifest["shards"]) > 3  # rolled over at 1000 tokens
    assert all(s["n_tokens"] <= 1000 for s in manifest["shards"])
    assert "time" not in manifest["created_by"] and "host" not in manifest["created_by"]
    assert reader.verify() == []
    with pytest.raises(IndexError):
        reader[len(reader)]


def test_idx_holds_n_plus_one_offsets(tmp_path):
    split, _ = make_split_input(tmp_path, n=50)
    manifest = tokenize_split(split, tmp_path / "s", "valid", SOURCES, max_tokens_per_shard=10**6)
    shard = manifest["shards"][0]
    idx = np.fromfile(tmp_path / "s" / shard["idx"], dtype="<i8")
    assert len(idx) == shard["n_sequences"] + 1 and idx[0] == 0
    assert idx[-1] == (tmp_path / "s" / shard["bin"]).stat().st_size == shard["n_tokens"]
    assert shard["sha256_bin"] == sha256_file(tmp_path / "s" / shard["bin"])
    for entry in manifest["arrays"].values():
        assert entry["sha256"] == sha256_file(tmp_path / "s" / entry["file"])


def test_tokenizing_twice_is_byte_identical(tmp_path):
    split, _ = make_split_input(tmp_path)
    a = tokenize_split(split, tmp_path / "a", "train", SOURCES, 1000)
    b = tokenize_split(split, tmp_path / "b", "train", SOURCES, 1000)
    assert a == b
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    # and a rerun into the same directory, with a smaller chunk size, changes nothing
    c = tokenize_split(split, tmp_path / "a", "train", SOURCES, 1000, chunk_size=101)
    assert c == a
    assert not [p for p in (tmp_path / "a").iterdir() if "tmp" in p.name]


def test_oversized_sequence_gets_its_own_shard(tmp_path):
    with ShardWriter(tmp_path / "s", "train", ["x"], max_tokens_per_shard=10) as writer:
        writer.add(np.full(3 + 25 + 4, 5, np.uint8), [3, 25, 4], [0, 1, 2], [0, 0, 0])
        manifest = writer.close()
    assert [s["n_tokens"] for s in manifest["shards"]] == [3, 25, 4]
    assert ShardReader(tmp_path / "s").lengths.tolist() == [3, 25, 4]


def test_stale_shards_from_a_bigger_earlier_run_are_removed(tmp_path):
    split, _ = make_split_input(tmp_path)
    tokenize_split(split, tmp_path / "s", "train", SOURCES, 1000)
    many = len(list((tmp_path / "s").glob("shard_*.bin")))
    manifest = tokenize_split(split, tmp_path / "s", "train", SOURCES, 10**6)
    assert many > 1 and len(manifest["shards"]) == 1
    assert len(list((tmp_path / "s").glob("shard_*"))) == 2


def test_bad_split_input_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.fasta.gz"
    bad.write_bytes(gzip.compress(b">a\nMKV\n>b\nMKV\n", mtime=0))
    write_sidecars(bad, [0], [0])
    with pytest.raises(PlmscaleError, match=r"bad\.fasta\.gz holds more records than its id sidecars \(1\).*split stage"):
        tokenize_split(bad, tmp_path / "s", "train", SOURCES, 1000)
    write_sidecars(bad, [0, 1], [0, 5])
    with pytest.raises(PlmscaleError, match=r"go beyond the 2 configured sources"):
        tokenize_split(bad, tmp_path / "s", "train", SOURCES, 1000)
    sidecar_paths(bad)[0].unlink()
    with pytest.raises(PlmscaleError, match=r"bad\.cluster_ids\.npy is missing.*split stage"):
        tokenize_split(bad, tmp_path / "s", "train", SOURCES, 1000)
    bad.write_bytes(gzip.compress(b">a\nMKJ\n", mtime=0))
    write_sidecars(bad, [0], [0])
    with pytest.raises(PlmscaleError, match=r"line 1: record 'a' has letter 'J'.*clean stage"):
        tokenize_split(bad, tmp_path / "s", "train", SOURCES, 1000)
    assert not (tmp_path / "s" / "manifest.json").exists()
    assert not [p for p in (tmp_path / "s").iterdir() if "tmp" in p.name]


def test_an_empty_split_gives_an_empty_readable_manifest(tmp_path):
    empty = tmp_path / "valid.fasta.gz"
    empty.write_bytes(gzip.compress(b"", mtime=0))
    write_sidecars(empty, [], [])
    manifest = tokenize_split(empty, tmp_path / "s", "valid", SOURCES, 1000)
    assert manifest["n_sequences"] == 0 and manifest["shards"] == []
    reader = ShardReader(tmp_path / "s")
    assert len(reader) == 0 and reader.verify() == []


def test_temporaries_of_a_killed_tokenize_are_removed_on_the_next_run(tmp_path):
    import subprocess
    child = subprocess.Popen(["true"])
    child.wait()
    split, _ = make_split_input(tmp_path)
    (tmp_path / "s").mkdir()
    leftovers = [tmp_path / "s" / f".shard_00000.bin.tmp-{child.pid}",
                 tmp_path / "s" / f".cluster_ids.npy.raw.tmp-{child.pid}"]
    for path in leftovers:
        path.write_bytes(b"half")
    live = tmp_path / "s" / f".shard_00000.bin.tmp-{1}"  # pid 1 is alive: another job's file stays
    live.write_bytes(b"busy")
    tokenize_split(split, tmp_path / "s", "train", SOURCES, 1000)
    assert not any(path.exists() for path in leftovers) and live.exists()


def test_reader_on_missing_directory(tmp_path):
    with pytest.raises(PlmscaleError, match="manifest.json does not exist"):
        ShardReader(tmp_path / "nothing")


def test_inspect_shards_cli(tmp_path, capsys):
    split, cleaned = make_split_input(tmp_path)
    tokenize_split(split, tmp_path / "s", "train", SOURCES, 1000)
    assert cli_main(["inspect-shards", str(tmp_path / "s"), "-n", "2", "--verify", "--width", "500"]) == 0
    out = capsys.readouterr().out
    assert f"sequences:  {len(cleaned):,}" in out and "sha256: all" in out
    assert cleaned[0][1].decode() in out and cleaned[1][1].decode() in out
    data = tmp_path / "s" / json.loads((tmp_path / "s" / "manifest.json").read_text())["shards"][0]["bin"]
    data.write_bytes(b"\x05" + data.read_bytes()[1:])
    assert cli_main(["inspect-shards", str(tmp_path / "s"), "--verify"]) == 2
    assert "sha256 differs" in capsys.readouterr().err


def test_tagged_ids_stop_at_whitespace_and_carriage_returns(tmp_path):
    from plmscale.data.fasta import read_fasta_batches

    path = tmp_path / "crlf.fasta"
    path.write_bytes(b">a1 description\r\nMKV\r\n>b2\r\nLLA\r\n>c3\tx\nMK\n")
    batches = list(read_fasta_batches(path))
    assert [bytes(t) for b in batches for t in b.tagged_ids] == [b">a1", b">b2", b">c3"]
    assert [i for b in batches for i in b.ids] == [b"a1", b"b2", b"c3"]


def _first_bin(directory):
    return directory / json.loads((directory / "manifest.json").read_text())["shards"][0]["bin"]


def test_a_run_refuses_shards_changed_after_tokenizing(tmp_path):
    """Issue 27: a shard corrupted after tokenizing (token values still valid) was trained on, rc 0."""
    from plmscale.train.loop import open_shards

    split, _ = make_split_input(tmp_path)
    tokenize_split(split, tmp_path / "s", "train", SOURCES, 1000)
    open_shards(tmp_path / "s")  # intact: fine
    data = _first_bin(tmp_path / "s")
    raw = bytearray(data.read_bytes())
    raw[3] = raw[4] if raw[4] != raw[3] else raw[5]  # another residue: a valid token, a different protein
    data.write_bytes(bytes(raw))
    with pytest.raises(PlmscaleError, match=rf"{data.name}: sha256 differs from .*manifest.json; .*delete "):
        open_shards(tmp_path / "s")


def test_shards_are_hashed_once_until_a_file_changes(tmp_path):
    from plmscale.data.shard_check import STAMP, verify_shard_files

    split, _ = make_split_input(tmp_path)
    manifest = tokenize_split(split, tmp_path / "s", "train", SOURCES, 1000)
    n_files = 2 * len(manifest["shards"]) + 2
    assert verify_shard_files(tmp_path / "s", manifest) == n_files
    assert (tmp_path / "s" / STAMP).exists()
    assert verify_shard_files(tmp_path / "s", manifest) == 0  # stamped: nothing hashed again
    data = _first_bin(tmp_path / "s")
    data.write_bytes(data.read_bytes())  # same bytes, new mtime: hashed again, and still fine
    assert verify_shard_files(tmp_path / "s", manifest) == 1
    assert ShardReader(tmp_path / "s").verify() == []


def test_a_byte_outside_the_vocabulary_names_the_shard_and_offset(tmp_path):
    """Issue 27: such a byte ended in `IndexError: index out of range in self` inside the embedding."""
    from plmscale.train.loop import open_shards

    split, _ = make_split_input(tmp_path)
    tokenize_split(split, tmp_path / "s", "train", SOURCES, 1000)
    data = _first_bin(tmp_path / "s")
    raw = bytearray(data.read_bytes())
    raw[7] = 200
    data.write_bytes(bytes(raw))
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    manifest["shards"][0]["sha256_bin"] = sha256_file(data)  # even with a manifest that agrees
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PlmscaleError, match=rf"{data.name}, byte offset 7: byte 200, outside the vocabulary"):
        open_shards(tmp_path / "s")
    raw[7] = TOKENS.index("<eos>")
    data.write_bytes(bytes(raw))
    with pytest.raises(PlmscaleError, match=r"byte offset 7: token id 2 \('<eos>'\) is not a residue"):
        open_shards(tmp_path / "s")


def test_a_shard_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    """Issue 27: a full disk while tokenizing ended in an OSError naming no file."""
    import os

    from plmscale.data import atomic

    split, _ = make_split_input(tmp_path)
    real_open = open

    def full_disk_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "w" in mode and str(path).endswith(".bin.tmp-%d" % os.getpid()):
            handle.close()
            return real_open("/dev/full", mode)
        return handle

    monkeypatch.setattr(atomic, "open", full_disk_open, raising=False)
    with pytest.raises(PlmscaleError, match=r"could not write .*shard_00000.bin: No space left on device"):
        tokenize_split(split, tmp_path / "s", "train", SOURCES, 1000)
    assert not [p for p in (tmp_path / "s").iterdir() if ".tmp-" in p.name]  # nothing half-written left


def test_tokenizing_logs_its_share_of_the_split_and_an_eta(tmp_path, monkeypatch, caplog):
    """Issue 25 §2: a long data step says how far it is and how long it has left."""
    from plmscale.data import tokenize

    split, _ = make_split_input(tmp_path, n=300)
    monkeypatch.setattr(tokenize, "PROGRESS_EVERY_S", 0.0)
    with caplog.at_level("INFO", logger="plmscale.tokenize"):
        manifest = tokenize_split(split, tmp_path / "s", "train", SOURCES, 1000, chunk_size=101)
    total = manifest["n_sequences"]
    shares = [r.getMessage() for r in caplog.records if f"% of {total}, ETA" in r.getMessage()]
    assert len(shares) > 1 and all(re.search(rf"\(\d+/s, \d+% of {total}, ETA \d+ s\)", s) for s in shares), shares
    assert f"100% of {total}, ETA 0 s" in shares[-1]
