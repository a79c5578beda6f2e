"""The FASTA between stages: gzip, one header line and one sequence line per record.

The clean step writes this format, and dedup/split read and write it (a block of records at a time:
plmscale.data.recordblocks). Because each record is exactly two lines, reading needs no parser state and
no buffering of a record — a plain loop over line pairs.
"""

import io

from plmscale.data.gzio import open_read
from plmscale.errors import PlmscaleError


def read_records(path):
    """Yield (header, sequence) pairs; header is the line without '>' and without the newline."""
    with io.TextIOWrapper(open_read(path), encoding="ascii", newline=None) as handle:
        line_no = 0
        while True:
            header = handle.readline()
            if not header:
                return
            sequence = handle.readline()
            line_no += 2
            if not header.startswith(">") or not sequence or sequence.startswith(">"):
                raise PlmscaleError(
                    f"{path}, line {line_no - 1}: expected a '>' header followed by one sequence line "
                    "(the one-line-per-sequence FASTA the clean step writes); rerun the clean step "
                    "or delete this file so Snakemake regenerates it")
            yield header[1:].rstrip("\n"), sequence.rstrip("\n")


def record_id(header: str) -> str:
    """The id is the header's first word, as in every FASTA tool (MMseqs2 included)."""
    return header.split(None, 1)[0] if header else ""
