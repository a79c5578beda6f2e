"""clean_fasta: alphabet policy, length limits, exact accounting, deterministic gzip output."""

import gzip
import json

import pytest

from plmscale.data.clean import clean_fasta
from plmscale.errors import PlmscaleError

RAW = (b">ok1 some description\r\nmkvLLA\r\nQQ*\r\n"
       b">amb ambiguous letters are kept\nXBUZOACD\n"
       b">bad1 J is not a residue\nMKJLL\n"
       b">short\nMK\n"
       b">long\n" + b"A" * 50 + b"\n"
       b">bad2\nMK1LL\n"
       b">ok2\nWWWWW\n")


def run(tmp_path, data=RAW, strict=False, gz=True, **kw):
    raw = tmp_path / "raw.fasta.gz"
    raw.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    out, stats = tmp_path / "clean" / "src.fasta.gz", tmp_path / "clean" / "src.stats.json"
    settings = dict(min_length=3, max_length=20, strict=strict) | kw
    result = clean_fasta(raw, out, stats, "src", **settings)
    return out, stats, result


def test_policy_and_output_format(tmp_path):
    out, _, _ = run(tmp_path)
    text = gzip.decompress(out.read_bytes()).decode()
    assert text == ">ok1\nMKVLLAQQ\n>amb\nXBUZOACD\n>ok2\nWWWWW\n"


def test_stats_account_for_every_record(tmp_path):
    _, stats_path, result = run(tmp_path)
    stats = json.loads(stats_path.read_text())
    assert stats == result
    assert (stats["seen"], stats["kept"], stats["dropped_invalid"], stats["dropped_length"]) == (7, 3, 2, 2)
    assert stats["seen"] == stats["kept"] + stats["dropped_invalid"] + stats["dropped_length"]
    assert stats["accounting"]["holds"] is True
    assert stats["kept_residues"] == 8 + 8 + 5
    assert (stats["min_length"], stats["max_length"], stats["mean_length"]) == (5, 8, 7.0)
    assert stats["examples"] == {"dropped_invalid": ["bad1", "bad2"], "dropped_length": ["short", "long"]}
    assert stats["invalid_letters"] == {"1": 1, "J": 1}


def test_too_long_is_dropped_not_an_error(tmp_path):
    _, _, stats = run(tmp_path, data=b">long\n" + b"M" * 5000 + b"\n>fine\nMKV\n")
    assert (stats["kept"], stats["dropped_length"]) == (1, 1)


def test_strict_mode_names_file_line_and_record(tmp_path):
    with pytest.raises(PlmscaleError, match=r"raw\.fasta\.gz, line 6: record 'bad1' contains 'J'.*strict"):
        run(tmp_path, strict=True)
    assert not (tmp_path / "clean" / "src.fasta.gz").exists()
    assert not list((tmp_path / "clean").glob("*tmp*"))


def test_reruns_are_byte_identical(tmp_path):
    out, _, _ = run(tmp_path)
    first = out.read_bytes()
    out.unlink()
    out2, _, _ = run(tmp_path)
    assert out2.read_bytes() == first
    assert first[4:8] == b"\0\0\0\0"  # gzip mtime field is zero
    assert not first[3] & 0x08          # no file name stored in the header


def test_bad_input_leaves_no_output(tmp_path):
    with pytest.raises(PlmscaleError, match="duplicate record id 'x'"):
        run(tmp_path, data=b">x\nMKV\n>x\nMKV\n")
    assert not (tmp_path / "clean" / "src.fasta.gz").exists()
    assert not (tmp_path / "clean" / "src.stats.json").exists()
    with pytest.raises(PlmscaleError, match="HTML"):
        run(tmp_path, data=b"<html>oops</html>", gz=False)


def test_large_file_over_many_chunks_matches_single_chunk(tmp_path):
    data = b"".join(b">r%d\n%s\n" % (i, (b"MKVLAQ" if i % 7 else b"MKJ") * (i % 9 + 1)) for i in range(500))
    raw = tmp_path / "raw.fa"
    raw.write_bytes(data)
    a = clean_fasta(raw, tmp_path / "a.fa.gz", tmp_path / "a.json", "s", 3, 40, False, chunk_size=37)
    b = clean_fasta(raw, tmp_path / "b.fa.gz", tmp_path / "b.json", "s", 3, 40, False)
    assert (tmp_path / "a.fa.gz").read_bytes() == (tmp_path / "b.fa.gz").read_bytes()
    assert {k: a[k] for k in ("seen", "kept", "dropped_invalid", "dropped_length")} == \
        {k: b[k] for k in ("seen", "kept", "dropped_invalid", "dropped_length")}
    assert a["seen"] == 500 and a["dropped_invalid"] == 72


def test_long_proteins_are_kept_without_a_cap(tmp_path):
    out, _, stats = run(tmp_path, max_length=None)
    assert stats["dropped_length"] == 1 and stats["examples"]["dropped_length"] == ["short"]
    assert b">long\n" + b"A" * 50 in gzip.decompress(out.read_bytes())
    assert stats["max_length"] == 50 and stats["settings"]["max_length"] is None


def test_default_schema_keeps_long_proteins():
    from plmscale.config import load_config
    assert load_config({})["data"]["clean"]["max_length"] is None


def test_errors_name_the_source_not_the_internal_copy(tmp_path):
    with pytest.raises(PlmscaleError) as caught:
        run(tmp_path, data=b"MKV\n>a\nMK\n", origin="https://example.org/db.fasta")
    message = str(caught.value)
    assert "https://example.org/db.fasta" in message and "source 'src'" in message


def test_non_ascii_id_is_an_error_naming_the_line(tmp_path):
    data = ">ok1\nMKVLL\n>caf\u00e9\nMKVLL\n".encode()
    with pytest.raises(PlmscaleError, match=r"line 3: record id 'caf\u00e9'.*ASCII"):
        run(tmp_path, data=data)
    assert not (tmp_path / "clean" / "src.fasta.gz").exists()


def test_a_source_with_nothing_kept_warns(tmp_path, caplog):
    caplog.set_level("WARNING")
    _, _, stats = run(tmp_path, data=b">bad\nMKJLL\n>bad2\nMK1L\n")
    assert stats["kept"] == 0
    assert "no sequence survived clean" in caplog.text and "'src'" in caplog.text


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path):
    import subprocess
    child = subprocess.Popen(["true"])
    child.wait()
    (tmp_path / "clean").mkdir()
    leftover = tmp_path / "clean" / f".src.fasta.gz.tmp-{child.pid}"
    leftover.write_bytes(b"half")
    run(tmp_path)
    assert not leftover.exists()


def test_a_trailing_stop_codon_is_stripped_and_counted(tmp_path):
    """Issue 27: a trailing `*` was removed silently; stats now count the records that had one."""
    data = b">a\nMKV*\n>b\nMKVL\n>c\nMK\nVL*\n>d\nMK*VL\n>e\nMKVLA**\n"
    out, _, stats = run(tmp_path, data=data)
    assert gzip.decompress(out.read_bytes()).decode() == ">a\nMKV\n>b\nMKVL\n>c\nMKVL\n"
    assert stats["stripped_stop_codons"] == 3  # a, c and e (whose remaining `*` makes it invalid)
    assert stats["dropped_invalid"] == 2 and stats["invalid_letters"] == {"*": 2}
    (tmp_path / "again").mkdir()
    _, _, plain = run(tmp_path / "again", data=b">a\nMKV\n")
    assert plain["stripped_stop_codons"] == 0


def test_a_full_disk_names_the_file_being_written(tmp_path):
    """Issue 27: a write failure ended in a raw OSError with no path."""
    import os

    from plmscale.data.atomic import temporary_name

    out = tmp_path / "clean" / "src.fasta.gz"
    out.parent.mkdir()
    os.symlink("/dev/full", temporary_name(out))  # the temporary the output goes to: writes get ENOSPC
    with pytest.raises(PlmscaleError, match=r"could not write .*clean/src.fasta.gz: No space left on device; "
                                            r"free disk space there, then run again"):
        run(tmp_path)
    assert not out.exists() and not os.path.lexists(temporary_name(out))
