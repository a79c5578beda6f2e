"""The streaming FASTA reader: normalisation, chunk boundaries, and every kind of bad input."""

import gzip

import numpy as np
import pytest
from Bio import SeqIO

from plmscale.data.fasta import read_fasta, read_fasta_batches
from plmscale.errors import PlmscaleError


def write(path, data: bytes, gz=False):
    if gz:
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def records(path, **kw):
    return [(i.decode(), s.decode()) for i, s in read_fasta(path, **kw)]


def test_plain_and_gzip_give_the_same_records_whatever_the_file_name(tmp_path):
    data = b">a first\nMKV\nLLA\n>b\nQQ\n"
    plain = write(tmp_path / "looks.gz", data)            # plain text with a .gz name
    gz = write(tmp_path / "looks.fasta", data, gz=True)   # gzip without a .gz name
    assert records(plain) == records(gz) == [("a", "MKVLLA"), ("b", "QQ")]


def test_crlf_lowercase_wrapping_and_one_trailing_star(tmp_path):
    path = write(tmp_path / "x.fa", b">a desc\r\nmkv\r\nLla*\r\n>b\r\nQQ**\r\n>c\nA*C\n")
    assert records(path) == [("a", "MKVLLA"), ("b", "QQ*"), ("c", "A*C")]


def test_headers_keep_the_full_line_and_ids_are_the_first_word(tmp_path):
    path = write(tmp_path / "x.fa", b">sp|P1|X some\tthing here\r\nMK\n")
    batch = next(read_fasta_batches(path))
    assert batch.ids == [b"sp|P1|X"]
    assert batch.headers == [b"sp|P1|X some\tthing here"]
    assert batch.lines.tolist() == [1]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 16, 64])
def test_records_spanning_chunk_boundaries(tmp_path, chunk_size):
    data = b"".join(b">seq%d d\n%s\n%s\n" % (i, b"ACDEFGHIK" * (i % 5 + 1), b"LMNPQ" * i) for i in range(40))
    path = write(tmp_path / "x.fa.gz", data, gz=True)
    expected = records(path, chunk_size=1 << 20)
    assert len(expected) == 40 and expected[3] == ("seq3", "ACDEFGHIK" * 4 + "LMNPQ" * 3)
    assert records(path, chunk_size=chunk_size) == expected


def test_line_numbers_count_across_chunks(tmp_path):
    path = write(tmp_path / "x.fa", b"\n\n>a\nMK\nMK\n>b\nQ\n>c\nW\n")
    lines = [n for b in read_fasta_batches(path, chunk_size=4) for n in b.lines.tolist()]
    assert lines == [3, 6, 8]


def test_last_record_without_final_newline(tmp_path):
    assert records(write(tmp_path / "x.fa", b">a\nMK\n>b\nQW")) == [("a", "MK"), ("b", "QW")]


def test_empty_file(tmp_path):
    for name, data in (("empty.fa", b""), ("blank.fa", b"\n \n")):
        with pytest.raises(PlmscaleError, match=rf"{name} is empty"):
            records(write(tmp_path / name, data))
    with pytest.raises(PlmscaleError, match="empty"):
        records(write(tmp_path / "empty.fa.gz", b"", gz=True))


def test_html_error_page(tmp_path):
    page = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n"
    with pytest.raises(PlmscaleError, match=r"page\.fa.*HTML.*download it again"):
        records(write(tmp_path / "page.fa", page))
    with pytest.raises(PlmscaleError, match="HTML"):
        records(write(tmp_path / "page2.fa.gz", b"  <html><body>error</body></html>", gz=True))


def test_binary_junk(tmp_path):
    junk = bytes(range(256)) * 20
    with pytest.raises(PlmscaleError, match=r"junk\.bin is not FASTA: it holds binary data"):
        records(write(tmp_path / "junk.bin", junk))


def test_truncated_gzip_says_download_is_incomplete(tmp_path):
    full = gzip.compress(b"".join(b">s%d\n%s\n" % (i, b"MKVLA" * 50) for i in range(2000)), mtime=0)
    path = tmp_path / "cut.fa.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(PlmscaleError, match=r"cut\.fa\.gz.*truncated or corrupt.*download it again"):
        records(path)


def test_sequence_before_the_first_header(tmp_path):
    with pytest.raises(PlmscaleError, match=r"noheader\.fa, line 2: sequence data before the first header"):
        records(write(tmp_path / "noheader.fa", b"\nMKVLLA\n>a\nMK\n"))


def test_header_without_id(tmp_path):
    with pytest.raises(PlmscaleError, match=r"x\.fa, line 3: header without an id"):
        records(write(tmp_path / "x.fa", b">a\nMK\n> desc only\nMK\n"))


def test_duplicate_ids_name_the_id_and_both_lines(tmp_path):
    data = b">a\nMK\n>dup x\nMK\n>b\nQQ\n>dup y\nWW\n"
    with pytest.raises(PlmscaleError, match=r"dups\.fa: duplicate record id 'dup' at lines 3 and 7"):
        records(write(tmp_path / "dups.fa", data), chunk_size=5)


def test_duplicate_check_spills_to_disk_and_still_finds_them(tmp_path):
    from plmscale.data import fasta
    data = b"".join(b">id%d\nMK\n" % i for i in range(3000)) + b">id17\nMK\n"
    path = write(tmp_path / "many.fa", data)
    original = fasta._IdRegistry.__init__.__defaults__
    fasta._IdRegistry.__init__.__defaults__ = (None, 500)  # spill every 500 ids
    try:
        with pytest.raises(PlmscaleError, match=r"'id17' at lines 35 and 6001"):
            records(path, chunk_size=1000)
        ok = write(tmp_path / "ok.fa", b"".join(b">id%d\nMK\n" % i for i in range(3000)))
        assert len(records(ok, chunk_size=1000)) == 3000
    finally:
        fasta._IdRegistry.__init__.__defaults__ = original


@pytest.mark.parametrize("chunk_size", [3, 7, 1 << 20])
def test_cr_only_and_mixed_line_endings_read_like_lf(tmp_path, chunk_size):
    """Old-Mac CR-only files, and CR-only records inside an LF file, must not merge records."""
    lf = b"".join(b">p%d d\nMKV%d\nLL\n" % (i, i) for i in range(20)).replace(b"0", b"A").replace(b"1", b"C")
    expected = records(write(tmp_path / "lf.fa", lf))
    assert len(expected) == 20
    cr_only = write(tmp_path / "cr.fa", lf.replace(b"\n", b"\r"))
    assert records(cr_only, chunk_size=chunk_size) == expected
    lines = lf.split(b"\n")
    mixed = b"\n".join(lines[:30]) + b"\r" + b"\r".join(lines[30:39]) + b"\r\n" + b"\n".join(lines[39:])
    got = records(write(tmp_path / "mixed.fa", mixed), chunk_size=chunk_size)
    assert got == expected
    batches = list(read_fasta_batches(cr_only, chunk_size=chunk_size))
    assert [line for b in batches for line in b.lines.tolist()] == list(range(1, 60, 3))


def test_utf8_byte_order_mark_is_skipped_and_utf16_is_named(tmp_path):
    path = write(tmp_path / "bom.fa", b"\xef\xbb\xbf>a\nMKV\n>b\nLL\n")
    assert records(path) == [("a", "MKV"), ("b", "LL")]
    assert [line for b in read_fasta_batches(path) for line in b.lines.tolist()] == [1, 3]
    utf16 = write(tmp_path / "u16.fa", ">a\nMKV\n".encode("utf-16"))
    with pytest.raises(PlmscaleError, match="UTF-16"):
        records(utf16)


def test_non_ascii_id_is_refused_with_file_and_line(tmp_path):
    path = write(tmp_path / "x.fa", ">a café\nMKV\n>bé\nLL\n".encode())
    batches = list(read_fasta_batches(path))
    batches[0].check_ascii_ids()  # a non-ASCII description is fine: only ids travel downstream
    path = write(tmp_path / "y.fa", ">a\nMKV\n>prot_é\nLL\n".encode())
    with pytest.raises(PlmscaleError, match=r"y\.fa, line 3: record id 'prot_é'.*ASCII"):
        for batch in read_fasta_batches(path):
            batch.check_ascii_ids()


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"])
def test_records_agree_with_biopython_as_reference_parser(tmp_path, line_end):
    """Biopython's SeqIO is the reference: same ids, descriptions and sequences on a wrapped, mixed-case
    corpus with descriptions, whatever the line endings (Biopython reads the file with universal newlines)."""
    rng = np.random.default_rng(0)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWYacdefghik"))
    text = b""
    for i in range(300):
        seq = "".join(rng.choice(letters, size=int(rng.integers(1, 400))))
        wrapped = [seq[j:j + 60] for j in range(0, len(seq), 60)]
        text += f">seq{i} description {i} n=1".encode() + line_end + line_end.join(w.encode() for w in wrapped) + line_end
    path = write(tmp_path / "corpus.fasta.gz", text, gz=True)
    ours = [(h.decode(), s) for batch in read_fasta_batches(path, chunk_size=4096)
            for h, s in zip(batch.headers, (batch.seq[a:b] for a, b in zip(batch.offsets[:-1], batch.offsets[1:])))]
    with gzip.open(path, "rt", newline=None) as handle:
        reference = [(record.description, str(record.seq).upper().encode()) for record in SeqIO.parse(handle, "fasta")]
    assert ours == reference
