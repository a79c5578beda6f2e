"""A streaming FASTA reader that works on multi-megabyte chunks, not on residues.

Why not Biopython: its parser builds Python objects line by line (~1 M residues/s); a protein corpus
has hundreds of billions of residues. Here each chunk is parsed with a few bytes/numpy calls:
newline positions with numpy, one boolean-mask compaction that drops header lines and newlines, an uppercase
`bytes.translate` only where lowercase occurs. Python work is per record (ids, for the duplicate check),
never per residue, and memory is one chunk (plus 8 bytes per id
for the duplicate-id check, spilled to disk every SPILL_AT ids so it stays small).

Normalisation done here, so every consumer sees the same sequence: LF, CRLF and old-Mac CR-only line
endings are one and the same (each CR or CRLF becomes LF as the chunk is read), a UTF-8 byte order mark
is skipped, lowercase uppercased,
sequences joined across wrapped lines, one trailing `*` (stop codon) removed. Alphabet policy is not
applied here (see clean.py).
"""

import os
import shutil
import tempfile
import numpy as np

from plmscale.data.gzio import open_read, read_block
from plmscale.errors import PlmscaleError

DEFAULT_CHUNK_SIZE = 8 << 20
# Id hashes held in memory before they go to bucket files: 2 MB here, and the spill's temporaries
# (sort, reorder) are a few times that, so peak memory does not grow with the corpus.
SPILL_AT = 250_000

UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_NEWLINE, _SPACE, _GT, _STAR = 10, 32, ord(">"), ord("*")
_UPPER = bytes.maketrans(bytes(range(ord("a"), ord("z") + 1)), bytes(range(ord("A"), ord("Z") + 1)))


class RecordBatch:
    """The complete records of one chunk, sequences concatenated (no per-record sequence objects).

    ids and headers are built on first use: a consumer that needs neither pays nothing for them.
    """

    def __init__(self, path, buf, header_starts, header_ends, seq, offsets, lines):
        self.path = path
        self.seq = seq            # bytes: all sequences back to back, uppercase, unwrapped, no final '*'
        self.offsets = offsets    # int64, n + 1: record i is seq[offsets[i]:offsets[i + 1]]
        self.lines = lines        # int64: 1-based line number of each header in the file
        self._buf, self._starts, self._ends = buf, header_starts, header_ends
        self.n_newlines = 0       # line endings in this batch's text, for line numbers
        self.n_stripped_stops = 0  # records whose one trailing '*' (a stop codon) was removed
        self.text_end = len(buf)  # the batch's text is buf[:text_end]; the rest belongs to later batches
        self._headers = self._ids = self._tagged = None

    def __len__(self):
        return len(self.offsets) - 1

    @property
    def headers(self) -> list:
        """bytes: the whole header line after '>' (no line ending)."""
        if self._headers is None:
            buf = self._buf
            self._headers = [buf[a:b] for a, b in zip((self._starts + 1).tolist(), self._ends.tolist())]
        return self._headers

    @property
    def tagged_ids(self) -> list:
        """bytes: '>' + id for each record, one slice of the chunk each: ready to be written as an output
        header, and as good as the id for hashing (the duplicate check uses these)."""
        if self._tagged is None:
            buf, starts = self._buf, self._starts.tolist()
            self._tagged = [buf[a:b] for a, b in zip(starts, self._id_ends().tolist())]
        return self._tagged

    @property
    def ids(self) -> list:
        """bytes: the first word of each header."""
        if self._ids is None:
            self._ids = [t[1:] for t in self.tagged_ids]
        return self._ids

    def _id_ends(self) -> np.ndarray:
        """Where each id ends: the first space of its header, found for all headers with one numpy
        scan instead of splitting every header in Python."""
        buf, end = self._buf, self.text_end
        if any(buf.find(c, 0, end) >= 0 for c in (b"\t", b"\x0b", b"\x0c")):
            # Rare whitespace: let bytes.split decide, header by header.
            return self._starts + 1 + np.fromiter((len(h.split(None, 1)[0]) for h in self.headers),
                                                  dtype=np.int64, count=len(self))
        arr = np.frombuffer(buf, dtype=np.uint8, count=end)
        is_space = arr == _SPACE  # no CR is left: _batches turned every line ending into LF
        spaces = np.flatnonzero(is_space)
        first_space = np.append(spaces, end)[np.searchsorted(spaces, self._starts)]
        return np.minimum(first_space, self._ends)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, i) -> bytes:
        return self.seq[self.offsets[i]:self.offsets[i + 1]]

    def check_ascii_ids(self, where=None) -> None:
        """The stage's id policy: record ids are ASCII (MMseqs2, the TSV tables and the JSON stats
        downstream all assume it). A non-ASCII id is an error naming file, line and id."""
        if self._buf.isascii():  # one C-level scan: the common case costs nothing more
            return
        for record_id, line in zip(self.ids, self.lines.tolist()):
            if not record_id.isascii():
                raise PlmscaleError(
                    f"{where or self.path}, line {line}: record id {record_id.decode(errors='replace')!r} "
                    f"holds non-ASCII characters; record ids must be ASCII — rename the record in the "
                    f"source file")


def read_fasta(path, chunk_size=DEFAULT_CHUNK_SIZE):
    """(id, sequence) pairs as bytes: convenient for small files and tests; batches are the fast path."""
    for batch in read_fasta_batches(path, chunk_size=chunk_size):
        for i, record_id in enumerate(batch.ids):
            yield record_id, batch.sequence(i)


EMPTY_SOURCE_HINT = "check the source (URL or path) and download it again"


def read_fasta_batches(path, chunk_size=DEFAULT_CHUNK_SIZE, check_duplicate_ids=True, spill_dir=None,
                       empty_hint=EMPTY_SOURCE_HINT):
    """Yield RecordBatch objects for a gzip or plain FASTA file; bad input raises PlmscaleError.

    empty_hint: what the error for a file without records tells the user to do (default: a data source's).

    The duplicate-id check completes when the last batch has been consumed: a consumer that writes
    its output atomically after the loop therefore never publishes a file with duplicate ids.
    """
    path = str(path)
    registry = _IdRegistry(spill_dir) if check_duplicate_ids else None
    try:
        yield from _batches(path, chunk_size, registry, empty_hint)
        if registry is not None:
            suspects = registry.duplicate_hashes()
            if suspects:
                _raise_for_duplicates(path, suspects, chunk_size)
    finally:
        if registry is not None:
            registry.close()


def _batches(path, chunk_size, registry, empty_hint=EMPTY_SOURCE_HINT):
    stream = open_read(path)
    try:
        carry, lines_before, first = b"", 0, True
        while True:
            block = read_block(stream, chunk_size, path)
            at_eof = not block
            if b"\r" in block:
                if block.endswith(b"\r"):  # a CRLF cut between two blocks stays one line ending
                    block += read_block(stream, 1, path)
                block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            buf = carry + block if carry else block
            if first:
                checked = _check_start(path, buf, at_eof, empty_hint)
                if checked is None:  # only blank lines so far, and more to come
                    carry = buf
                    continue
                buf, lines_before = checked
                first = False
            if at_eof:
                end = len(buf)
            else:
                # Complete records end where the last header starts; the rest waits for more data.
                cut = buf.rfind(b"\n>")
                if cut <= 0:
                    carry = buf  # one record longer than the chunk: keep reading
                    continue
                end = cut + 1
            if end:
                batch = _parse(path, buf, end, lines_before)
                if registry is not None:
                    registry.add(batch.tagged_ids)
                yield batch
                lines_before += batch.n_newlines
            if at_eof:
                return
            carry = buf[end:]
    finally:
        stream.close()


def _check_start(path, buf, at_eof, empty_hint=EMPTY_SOURCE_HINT):
    """Reject what is not FASTA before parsing; returns the buffer without leading blank lines."""
    if buf.startswith(UTF8_BOM):
        buf = buf[len(UTF8_BOM):]  # editors on Windows write one; it carries no content
    elif buf.startswith(UTF16_BOMS):
        raise PlmscaleError(f"{path} is UTF-16 text (it starts with a UTF-16 byte order mark): save it as "
                            f"ASCII or UTF-8, then give it as the source again")
    stripped = buf.lstrip()
    if not stripped:
        if at_eof:
            raise PlmscaleError(f"{path} is empty: it holds no FASTA records — {empty_hint}")
        return None
    head = stripped[:4096]
    lowered = head.lower()
    if lowered.startswith((b"<!doctype", b"<html", b"<?xml")) or b"<html" in lowered:
        raise PlmscaleError(f"{path} is an HTML/XML page, not FASTA: the server probably returned an "
                            f"error or login page — check the source URL, then download it again")
    codes = np.frombuffer(head, dtype=np.uint8)
    control = ((codes < 9) | ((codes > 13) & (codes < 32))).sum()
    if not _is_utf8(head):  # UTF-8 text (an accented description) is text; other high bytes are not
        control += (codes > 126).sum()
    if control > max(1, len(codes) // 100):
        raise PlmscaleError(f"{path} is not FASTA: it holds binary data (is it compressed with "
                            f"something other than gzip, or corrupt?) — provide a FASTA or .fasta.gz file")
    skipped = buf[:len(buf) - len(stripped)]
    line = skipped.count(b"\n") + 1
    if stripped[:1] != b">":
        raise PlmscaleError(f"{path}, line {line}: sequence data before the first header — every FASTA "
                            f"record must start with a '>id' line; check that this is a FASTA file")
    return stripped, line - 1


def _is_utf8(head) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start >= len(head) - 3 and error.reason == "unexpected end of data"
    return True


def _parse(path, buf, end, lines_before) -> RecordBatch:
    """Parse buf[:end], which starts with '>' and holds only complete records."""
    arr = np.frombuffer(buf, dtype=np.uint8, count=end)
    is_newline = arr == _NEWLINE
    newlines = np.flatnonzero(is_newline)
    line_starts = newlines + 1
    line_starts = line_starts[line_starts < end]
    starts = np.concatenate(([0], line_starts[arr[line_starts] == _GT]))
    # A header ends at the first newline at or after its '>' (or at `end` for a last line without one).
    nl_index = np.searchsorted(newlines, starts)
    header_ends = np.append(newlines, end)[nl_index]
    header_lines = lines_before + nl_index + 1
    text_ends = header_ends  # line endings are LF only by now (see _batches)
    empty_id = (text_ends == starts + 1) | np.isin(arr[np.minimum(starts + 1, end - 1)], (9, 32))
    if empty_id.any():
        line = int(header_lines[np.argmax(empty_id)])
        raise PlmscaleError(f"{path}, line {line}: header without an id ('>' must be followed by the "
                            f"record id) — fix or remove this record")

    # Sequences: drop header lines and line endings in one numpy compaction (no per-record slicing).
    next_starts = np.append(starts[1:], end)
    drop = np.repeat(np.tile(np.array([True, False]), len(starts)),
                     np.column_stack((header_ends + 1 - starts, next_starts - header_ends - 1)).ravel()
                     .clip(min=0))[:end]
    drop |= is_newline
    np.logical_not(drop, out=drop)
    residues = arr[drop]
    # Per-record lengths: the region after the header minus its newlines.
    region_starts = np.minimum(header_ends + 1, end)
    cum_drop = np.searchsorted(newlines, next_starts) - np.searchsorted(newlines, region_starts)
    lengths = next_starts - region_starts - cum_drop
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if len(residues) and residues.max() >= ord("a"):
        residues = np.frombuffer(residues.tobytes().translate(_UPPER), dtype=np.uint8)
    n_stripped_stops = 0
    if b"*" in buf and len(residues):
        ends = offsets[1:]
        has_star = (lengths > 0) & (residues[np.maximum(ends - 1, 0)] == _STAR)
        if has_star.any():
            residues = np.delete(residues, ends[has_star] - 1)
            lengths = lengths - has_star
            np.cumsum(lengths, out=offsets[1:])
            n_stripped_stops = int(has_star.sum())
    batch = RecordBatch(path, buf, starts, text_ends, residues.tobytes(), offsets,
                        header_lines.astype(np.int64))
    batch.n_newlines, batch.text_end = len(newlines), end
    batch.n_stripped_stops = n_stripped_stops
    return batch


class _IdRegistry:
    """Finds duplicate ids with 8 bytes per id: 64-bit hashes in memory, spilled to 256 bucket files
    beyond `spill_at` ids so memory stays bounded; hash collisions are ruled out by a second pass."""

    def __init__(self, spill_dir=None, spill_at=SPILL_AT):
        self.spill_dir, self.spill_at = spill_dir, spill_at
        self.pending, self.n_pending, self.tmpdir = [], 0, None

    def add(self, ids):
        self.pending.append(np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids)))
        self.n_pending += len(ids)
        if self.n_pending >= self.spill_at:
            self._spill()

    def _spill(self):
        if self.tmpdir is None:
            # Named like every data-stage temporary, so a killed run's spill is removed on the next run.
            self.tmpdir = tempfile.mkdtemp(prefix=".plmscale-ids-", suffix=f".tmp-{os.getpid()}",
                                           dir=self.spill_dir)
        hashes = np.concatenate(self.pending) if self.pending else np.zeros(0, np.int64)
        self.pending, self.n_pending = [], 0
        buckets = (hashes.view(np.uint64) >> np.uint64(56)).astype(np.uint8)
        order = np.argsort(buckets, kind="stable")
        hashes, bounds = hashes[order], np.searchsorted(buckets[order], np.arange(257))
        for b in range(256):
            if bounds[b + 1] > bounds[b]:
                with open(os.path.join(self.tmpdir, f"{b:03d}.bin"), "ab") as handle:
                    hashes[bounds[b]:bounds[b + 1]].tofile(handle)

    def duplicate_hashes(self, limit=1000) -> set:
        if self.tmpdir is None:
            groups = [np.concatenate(self.pending)] if self.pending else []
        else:
            self._spill()
            groups = (np.fromfile(os.path.join(self.tmpdir, name), dtype=np.int64)
                      for name in sorted(os.listdir(self.tmpdir)))
        found = set()
        for hashes in groups:
            hashes.sort()
            found.update(hashes[1:][hashes[1:] == hashes[:-1]][:limit].tolist())
            if len(found) >= limit:
                break
        return found

    def close(self):
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


def _raise_for_duplicates(path, suspects, chunk_size):
    """Second pass, only when the hashes say a duplicate is likely: find the real id and its lines."""
    seen = {}
    for batch in read_fasta_batches(path, chunk_size=chunk_size, check_duplicate_ids=False):
        for tagged, line in zip(batch.tagged_ids, batch.lines.tolist()):
            if hash(tagged) in suspects:  # the registry hashed '>' + id
                record_id = tagged[1:]
                if record_id in seen:
                    raise PlmscaleError(
                        f"{path}: duplicate record id {record_id.decode(errors='replace')!r} at lines "
                        f"{seen[record_id]} and {line} — ids must be unique within a file; remove or "
                        f"rename the duplicate records")
                seen[record_id] = line
