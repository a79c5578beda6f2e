"""The two-line FASTA a block of records at a time: numpy instead of a Python call per record.

Reading: `read_record_blocks` yields `RecordBlock`s, each the bytes of whole records with the offsets of
their headers and sequences, checked for the layout `linefasta.read_records` checks.

Writing: `GzipBatchWriter` takes many records in one call and writes the bytes `atomic.write_gzip_text`
gives for one write per record. Those bytes depend on where the writes fall: the threaded ISA-L writer
(gzio.open_write) compresses each block it is handed on its own, and the blocks are cut by the buffers above
it from the sizes of the writes, the first of them `io.TextIOWrapper`'s pending-bytes chunk. So this writer
cuts its batches into exactly the chunks the TextIOWrapper would have passed down for the same records one
at a time, and hands those to the same buffered writer below (tests/test_recordblocks.py checks the bytes
against write_gzip_text's). zlib's stream without flushes would not care, but the ISA-L blocks do.

Output records are byte ranges of a block: `keep_segments` cuts them out with one byte mask, `insert_at`
adds a constant (dedup's source prefix), and `concat_segments` assembles short records (provenance lines)
from ranges of the block and of small tables with one numpy take.
"""

import io
import sys

import numpy as np

from plmscale.data.atomic import atomic_path
from plmscale.data.gzio import open_read, open_write, read_block
from plmscale.errors import PlmscaleError

BLOCK_BYTES = 2 << 20   # decompressed bytes per block: concat_segments' index arrays are 16 bytes a byte
# io.TextIOWrapper's write chunk (its _CHUNK_SIZE): it passes its pending bytes down once they would pass this.
TEXT_CHUNK = 8192
# The buffer between the text layer and the gzip writer in atomic.write_gzip_text.
BUFFER_BYTES = 1 << 20
# Python's str.split() whitespace within ASCII, the ids' separator (linefasta.record_id).
STR_SPACE = np.zeros(256, bool)
STR_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
_NEWLINE, _GT, _CR = ord("\n"), ord(">"), ord("\r")
_LAYOUT_HINT = ("expected a '>' header followed by one sequence line (the one-line-per-sequence FASTA the clean "
                "step writes); rerun the clean step or delete this file so Snakemake regenerates it")


# Of id_lines' five segments per record, the id and the newline.
ID_LINE = np.array([False, True, False, True, False])


class RecordBlock:
    """Whole records of a two-line FASTA: `data` (uint8), and per record the offsets of its '>'
    (`header_start`), of the newline ending the header (`header_end`) and of the one ending the sequence
    (`sequence_end`). `first` is the index of its first record in the file."""

    def __init__(self, data, header_start, header_end, sequence_end, first):
        self.data, self.first = data, first
        self.header_start, self.header_end, self.sequence_end = header_start, header_end, sequence_end
        self._id_ranges = None

    def __len__(self):
        return len(self.header_start)

    def sequence_lengths(self, rows=slice(None)):
        return self.sequence_end[rows] - self.header_end[rows] - 1

    def id_ranges(self, rows=slice(None)):
        """(start, end) offsets of each record's id, the header's first word as linefasta.record_id takes it.
        Those of the whole block are found once (the split's id check and its writer both ask)."""
        if isinstance(rows, slice) and rows == slice(None):
            if self._id_ranges is None:
                self._id_ranges = first_words(self.data, self.header_start + 1, self.header_end)
            return self._id_ranges
        return first_words(self.data, self.header_start[rows] + 1, self.header_end[rows])

    def record_segments(self):
        """(records, 5) lengths of each record's segments: '>', the blanks before the id, the id, the rest of the
        header, then the header's newline with the sequence line and its newline. A writer keeps some of them
        (`keep_segments`): `>id` and the sequence line is the pattern (True, False, True, False, True)."""
        id_start, id_end = self.id_ranges()
        return np.stack([np.ones(len(self), np.int64), id_start - self.header_start - 1, id_end - id_start,
                         self.header_end - id_end, self.sequence_end + 1 - self.header_end], axis=1)

    def id_lines(self):
        """Each record's id followed by a newline, one uint8 array (the block's ids as lines of text): of each
        record, the id and its header's newline are kept of the segments before the id, the id, the rest of
        the header, the newline, and the sequence line."""
        id_start, id_end = self.id_ranges()
        lengths = np.stack([id_start - self.header_start, id_end - id_start, self.header_end - id_end,
                            np.ones(len(self), np.int64), self.sequence_end - self.header_end], axis=1)
        return keep_segments(self.data, lengths, np.broadcast_to(ID_LINE, lengths.shape))


def first_words(data, start, end):
    """(start, end) offsets of the first word of each data[start:end] (which ends at a newline), as
    str.split() takes it."""
    start = np.array(start, np.int64)
    # Every line's newline is a space: a search always ends. Whitespace is at most 32, so a comparison (fast)
    # finds the candidates and the table keeps the real ones (a lookup of every byte costs 6x more).
    low = np.flatnonzero(data <= 32)
    space = low[STR_SPACE[data[low]]]
    word_end = space[np.searchsorted(space, start)]
    # A header starting with whitespace (or empty): its first word, found the slow way (rare).
    for k in np.flatnonzero(word_end == start).tolist():
        text = data[start[k]:end[k]].tobytes().decode("ascii")
        word = text.split(None, 1)
        start[k] += len(text) - len(text.lstrip())
        word_end[k] = start[k] + (len(word[0]) if word else 0)
    return start, word_end


def read_record_blocks(path, block_bytes=None):
    """Yield RecordBlocks of the two-line FASTA at path (gzip or plain), in file order; blocks of about
    `block_bytes` decompressed bytes (None: BLOCK_BYTES)."""
    block_bytes = block_bytes or BLOCK_BYTES
    carry = b""
    first = 0
    with open_read(path) as stream:
        while True:
            chunk = read_block(stream, block_bytes, path)
            at_end = not chunk
            data = carry + chunk
            if at_end and data and not data.endswith(b"\n"):
                data += b"\n"   # a last line without its newline, as the line readers take it
            array = np.frombuffer(data, np.uint8)
            newlines = np.flatnonzero(array == _NEWLINE)
            n_lines = len(newlines) if at_end else len(newlines) - len(newlines) % 2
            if n_lines:
                used = int(newlines[n_lines - 1]) + 1
                yield _parse(array[:used], newlines[:n_lines], first, path)
                first += n_lines // 2
                carry = data[used:]
            else:
                carry = data
            if at_end:
                return


def _parse(array, newlines, first, path) -> RecordBlock:
    """The records of `array`, whose lines end at `newlines`; the layout checked as read_records does."""
    if len(newlines) % 2 or (array >= 0x80).any() or (array == _CR).any():
        line_starts = np.concatenate(([0], newlines[:-1] + 1))
        problem = "a header without its sequence line"
        if (array >= 0x80).any() or (array == _CR).any():
            line = int(np.searchsorted(newlines, np.flatnonzero((array >= 0x80) | (array == _CR))[0]))
            problem = "a byte that is not ASCII text or a carriage return"
        else:
            line = len(line_starts) - 1
        raise PlmscaleError(f"{path}, line {2 * first + line - line % 2 + 1}: {problem}; {_LAYOUT_HINT}")
    header_end, sequence_end = newlines[0::2], newlines[1::2]
    header_start = np.concatenate(([0], sequence_end[:-1] + 1))
    bad = (array[header_start] != _GT) | (array[header_end + 1] == _GT)
    if bad.any():
        record = int(np.flatnonzero(bad)[0])
        raise PlmscaleError(f"{path}, line {2 * (first + record) + 1}: {_LAYOUT_HINT}")
    return RecordBlock(array, header_start, header_end, sequence_end, first)


def constant(text: bytes, n: int) -> tuple:
    """A segment column repeating `text` for n records."""
    return np.frombuffer(text, np.uint8), np.zeros(n, np.int64), np.full(n, len(text), np.int64)


def decimals(values) -> tuple:
    """A segment column of each value (non-negative ints) in decimal, as str(int) writes it."""
    values = np.asarray(values, np.int64)
    # As many digit columns as the largest value needs (record numbers and copy counts need few of 19).
    columns = len(str(int(values.max()))) if len(values) else 1
    digits = np.empty((len(values), columns), np.uint8)
    rest = values.copy()
    for column in range(columns - 1, -1, -1):
        digits[:, column] = 48 + rest % 10
        rest //= 10
    width = np.ones(len(values), np.int64)
    for power in range(1, columns):
        width += values >= 10 ** power
    return digits.ravel(), np.arange(len(values), dtype=np.int64) * columns + columns - width, width


def concat_segments(columns) -> tuple:
    """Records made of segments: `columns` is a list of (source uint8 array, starts, lengths), one entry per
    record each; record k is the concatenation of its segment in every column. Returns (uint8 array of the
    records one after the other, each record's end offset). For short records (an index entry per byte);
    `keep_segments` is the cheaper way to cut pieces out of a block."""
    sources = [source for source, _, _ in columns]
    bases = np.cumsum([0] + [len(source) for source in sources[:-1]])
    pool = np.concatenate(sources) if len(sources) > 1 else sources[0]
    starts = np.stack([start + base for (_, start, _), base in zip(columns, bases)], axis=1).ravel()
    lengths = np.stack([length for _, _, length in columns], axis=1)
    flat = lengths.ravel()
    out_starts = np.cumsum(flat) - flat
    index = np.repeat(starts - out_starts, flat) + np.arange(int(flat.sum()), dtype=np.int64)
    return pool[index], np.cumsum(lengths.sum(axis=1))


def keep_segments(data, lengths, keep):
    """The bytes of `data` cut into consecutive segments (`lengths`, row by row, covering data from its
    start) where `keep` (same shape) is true, one after the other: one byte mask, no index per byte."""
    return data[np.repeat(keep.ravel(), lengths.ravel())]


def insert_at(array, positions, text: bytes):
    """`array` with `text` inserted before each of `positions` (ascending offsets into array)."""
    n = len(positions)
    return insert_segments(array, positions, np.tile(np.frombuffer(text, np.uint8), n),
                           np.full(n, len(text), np.int64))


def insert_segments(array, positions, texts, text_lengths):
    """`array` with text k (the bytes `texts` holds one after the other, text k `text_lengths[k]` long)
    inserted before positions[k] (ascending offsets into array). Indexes the inserted bytes only."""
    text_lengths = np.asarray(text_lengths, np.int64)
    out = np.empty(len(array) + len(texts), np.uint8)
    inserted = np.zeros(len(out), bool)
    before = np.cumsum(text_lengths) - text_lengths   # inserted bytes ahead of text k
    first = np.asarray(positions, np.int64) + before
    inserted[np.repeat(first - before, text_lengths) + np.arange(len(texts), dtype=np.int64)] = True
    out[inserted] = texts
    out[~inserted] = array
    return out


class GzipBatchWriter:
    """Context manager: deterministic gzip at `path`, written a batch of records at a time, with the bytes
    atomic.write_gzip_text gives for the same records written one per call."""

    def __init__(self, path):
        self._path = path
        self.n_records = 0
        self._pending, self._pending_bytes = [], 0

    def __enter__(self):
        self._context = atomic_path(self._path)
        tmp = self._context.__enter__()
        self._buffer = io.BufferedWriter(open_write(tmp), BUFFER_BYTES)
        return self

    def write(self, data, ends) -> None:
        """Write records that lie one after the other in `data` (bytes-like), record k ending at ends[k]."""
        data = memoryview(data).cast("B")
        ends = np.asarray(ends, np.int64)
        n = len(ends)
        self.n_records += n
        record, offset = 0, 0
        while record < n:
            # The first record that brings the pending chunk to TEXT_CHUNK bytes or past it.
            k = int(np.searchsorted(ends, TEXT_CHUNK - self._pending_bytes + offset))
            if k == n:
                self._hold(data[offset:])
                return
            end, start = int(ends[k]), int(ends[k - 1]) if k else 0
            if self._pending_bytes + end - offset == TEXT_CHUNK or (k == record and not self._pending_bytes):
                # Exactly full, or one record alone past the chunk: passed down with what is pending.
                self._pass_down(data[offset:end])
                record, offset = k + 1, end
            else:
                # Record k would overflow the chunk: what is pending goes down first, record k starts anew.
                self._pass_down(data[offset:start])
                record, offset = k, start

    def write_lines(self, text: bytes) -> None:
        """Write lines given as one bytes object (each line is one record)."""
        array = np.frombuffer(text, np.uint8)
        self.write(text, np.flatnonzero(array == _NEWLINE) + 1)

    def _hold(self, piece) -> None:
        if len(piece):
            self._pending.append(piece)
            self._pending_bytes += len(piece)

    def _pass_down(self, piece) -> None:
        self._hold(piece)
        if self._pending_bytes:
            self._buffer.write(b"".join(self._pending))
        self._pending, self._pending_bytes = [], 0

    def __exit__(self, *exc):
        try:
            if exc[0] is None:
                self._pass_down(b"")   # what the text layer holds goes down on close
            self._buffer.close()
        except BaseException:
            if not self._context.__exit__(*sys.exc_info()):
                raise
            return False
        return self._context.__exit__(*exc)


class RowStream:
    """The rows of a query's numpy batches ({column: array}, engine.parquet_numpy_batches) taken in runs
    whose length the FASTA blocks decide rather than the engine's batches."""

    def __init__(self, batches):
        self._batches = iter(batches)
        self._head, self._at = None, 0

    def _next_head(self) -> bool:
        while self._head is None or self._at == len(next(iter(self._head.values()))):
            self._head, self._at = next(self._batches, None), 0
            if self._head is None:
                return False
        return True

    def _take(self, count_in_head) -> list:
        parts = []
        while self._next_head():
            n = count_in_head(self._head, self._at)
            parts.append({name: values[self._at:self._at + n] for name, values in self._head.items()})
            self._at += n
            if self._at < len(next(iter(self._head.values()))):
                break
        return parts

    @staticmethod
    def _join(parts, columns) -> dict:
        if not parts:
            return {name: np.zeros(0, np.int64) for name in columns}
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def take(self, count: int, columns=()) -> dict:
        """The next `count` rows (fewer at the end of the query)."""
        left = [count]

        def in_head(head, at):
            n = min(left[0], len(next(iter(head.values()))) - at)
            left[0] -= n
            return n
        parts = self._take(in_head) if count else []
        return self._join(parts, columns)

    def take_below(self, column: str, bound: int, columns=()) -> dict:
        """The next rows whose `column` (ascending) is below `bound`."""
        def in_head(head, at):
            return int(np.searchsorted(head[column][at:], bound))
        return self._join(self._take(in_head), columns)

    def exhausted(self) -> bool:
        return not self._next_head()
