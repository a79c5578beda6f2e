"""The FASTA between stages: gzip, one header line and one sequence line per record.

The clean step writes this format, and dedup/split read and write it. Because each record is exactly two
lines, reading needs no parser state and no buffering of a record — a plain loop over line pairs.
"""

import io

from plmscale.data.atomic import write_gzip_text
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


class RecordWriter:
    """Context manager writing records in the two-line format as deterministic gzip."""

    def __init__(self, path):
        self._context = write_gzip_text(path)
        self.n_records = 0
        self.n_residues = 0

    def __enter__(self):
        self._handle = self._context.__enter__()
        return self

    def write(self, header: str, sequence: str) -> None:
        self._handle.write(f">{header}\n{sequence}\n")
        self.n_records += 1
        self.n_residues += len(sequence)

    def __exit__(self, *exc):
        return self._context.__exit__(*exc)
