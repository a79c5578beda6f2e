"""Batched record I/O: the same gzip bytes as one write per record, and the same records as read_records."""

import gzip
import random

import numpy as np
import pytest

from plmscale.data.atomic import write_gzip_text
from plmscale.data.linefasta import read_records, record_id
from plmscale.data.recordblocks import GzipBatchWriter, concat_segments, decimals, read_record_blocks
from plmscale.errors import PlmscaleError


def _records(rng, n):
    """Record sizes around every boundary the buffers cut at: tiny, near and past the text layer's 8 KiB
    chunk, and one past the 1 MiB buffer."""
    sizes = [rng.choice([3, 40, 700, 4096, 8190, 8191, 8192, 8193, 9000, 20000]) for _ in range(n)]
    sizes[n // 2] = (1 << 20) + 5000
    return [b"x" * (size - 1) + b"\n" for size in sizes]


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_writes_give_the_bytes_of_one_write_per_record(tmp_path, seed):
    rng = random.Random(seed)
    records = _records(rng, 700)
    with write_gzip_text(tmp_path / "one.gz") as handle:
        for record in records:
            handle.write(record.decode())
    with GzipBatchWriter(tmp_path / "batched.gz") as writer:
        start = 0
        while start < len(records):   # batches of any size, cut anywhere
            batch = records[start:start + rng.randint(1, 90)]
            writer.write(b"".join(batch), np.cumsum([len(r) for r in batch]))
            start += len(batch)
    one, batched = (tmp_path / "one.gz").read_bytes(), (tmp_path / "batched.gz").read_bytes()
    assert gzip.decompress(batched) == b"".join(records)
    assert batched == one


def test_blocks_hold_the_records_read_records_reads(tmp_path):
    rng = random.Random(5)
    path = tmp_path / "a.fa.gz"
    lines = []
    for i in range(3000):
        header = rng.choice([f"id{i}", f"id{i} some words", f" \x1fid{i}\x0bx", "", "  "])
        lines.append(f">{header}\n{'ACDE' * rng.randint(0, 30)}\n")
    with gzip.open(path, "wt") as handle:
        handle.write("".join(lines))
    expected = list(read_records(path))
    seen = []
    for block in read_record_blocks(path, block_bytes=997):   # blocks that cut records anywhere
        start, end = block.id_ranges()
        for k in range(len(block)):
            seen.append((block.data[start[k]:end[k]].tobytes().decode(),
                         block.data[block.header_end[k] + 1:block.sequence_end[k]].tobytes().decode()))
    assert seen == [(record_id(h) if h.strip() else "", s) for h, s in expected]


@pytest.mark.parametrize("text, line", [(b">a\nMK\n>b\n", 3), (b">a\nMK\nMK\n>b\nMK\n", 3),
                                        (b">a\nMK\n>b\n>c\nGG\n", 3), (b">a\nMK\n>b\nM\xc3K\n", 3)])
def test_a_broken_layout_names_its_line(tmp_path, text, line):
    path = tmp_path / "bad.fa"
    path.write_bytes(text)
    with pytest.raises(PlmscaleError, match=rf"bad.fa, line {line}: "):
        list(read_record_blocks(path, block_bytes=5))


@pytest.mark.parametrize("values", [[0], [7, 3, 9], [0, 9, 10, 99, 100, 12_345], [10 ** 18 - 1, 0, 10 ** 18],
                                    list(range(0, 200_000, 7))])
def test_decimals_write_what_str_writes_whatever_the_largest_value(values):
    """Only as many digit columns as the largest value needs: one-digit batches (copy counts) included."""
    data, ends = concat_segments([decimals(values)])
    assert data.tobytes().decode() == "".join(map(str, values))
    assert ends.tolist() == np.cumsum([len(str(v)) for v in values]).tolist()
