"""Tokenize one split: its FASTA (from the split stage) -> token shards + manifest.

Input contract (written by the split stage): gzip FASTA, one record per sequence, headers
`>{seq_id} cluster={dense_int} source={source_name}`, cluster ints dense over the whole corpus.
Residues become ESM-2 token ids with one `bytes.translate` per chunk; header fields are pulled out
of a whole chunk with one regex scan; nothing is done per residue in Python.
"""

import logging
import re
import time

import numpy as np

from plmscale.alphabet import ENCODE_TABLE, INVALID
from plmscale.data.fasta import DEFAULT_CHUNK_SIZE, read_fasta_batches
from plmscale.data.shards import ShardWriter
from plmscale.errors import PlmscaleError

log = logging.getLogger("plmscale.tokenize")

# Sequences never contain spaces, so every match is inside a header.
_FIELDS = re.compile(rb" cluster=(\d+) source=(\S+)")
PROGRESS_EVERY_S = 5.0


def tokenize_split(fasta_path, out_dir, split, sources, max_tokens_per_shard,
                   chunk_size=DEFAULT_CHUNK_SIZE) -> dict:
    """Write shards for one split; sources fixes the order of source ids. Returns the manifest."""
    sources = list(sources)
    source_index = {name.encode(): i for i, name in enumerate(sources)}
    started = last_report = time.monotonic()
    with ShardWriter(out_dir, split, sources, max_tokens_per_shard) as writer:
        # Ids are unique by construction upstream (dedup, split); the check would cost time here.
        for batch in read_fasta_batches(fasta_path, chunk_size=chunk_size, check_duplicate_ids=False):
            clusters, source_ids = _header_fields(batch, source_index, sources)
            tokens = batch.seq.translate(ENCODE_TABLE)
            if bytes([INVALID]) in tokens:
                _raise_invalid(batch, tokens)
            writer.add(tokens, batch.lengths, clusters, source_ids)
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                _log_progress(fasta_path, writer, now - started)
        manifest = writer.close()
    _log_progress(fasta_path, writer, time.monotonic() - started)
    return manifest


def _header_fields(batch, source_index, sources):
    """(cluster ids, source ids) of every record, read from the headers with numpy: no Python object
    per record. Any header that does not have exactly the split stage's shape goes to the slower
    regex path, which finds it and names its line."""
    fields = _header_fields_vectorised(batch, sources)
    if fields is not None:
        return fields
    return _header_fields_regex(batch, source_index, sources)


_CLUSTER_KEY, _SOURCE_KEY = np.frombuffer(b" cluster", np.uint8), np.frombuffer(b" source", np.uint8)
_MAX_DIGITS = 18  # int64 holds any 18-digit number


def _header_fields_vectorised(batch, sources):
    """None unless every header is exactly `>id cluster=<digits> source=<configured name>`."""
    n = len(batch)
    arr, starts, ends = batch.header_spans()
    # '=' appears twice in each header (cluster=, source=) and nowhere else (sequences hold letters).
    equals = np.flatnonzero(arr == ord("="))
    if len(equals) != 2 * n or n == 0:
        return None
    first, second = equals[0::2], equals[1::2]
    if not ((first > starts) & (second < ends) & (np.searchsorted(equals, starts) == 2 * np.arange(n))).all():
        return None
    if (first < starts + 1 + len(_CLUSTER_KEY)).any() or (second - first <= 1 + len(_SOURCE_KEY)).any():
        return None
    if not ((arr[first[:, None] - len(_CLUSTER_KEY) + np.arange(len(_CLUSTER_KEY))] == _CLUSTER_KEY).all()
            and (arr[second[:, None] - len(_SOURCE_KEY) + np.arange(len(_SOURCE_KEY))] == _SOURCE_KEY).all()):
        return None
    # Cluster ids: the digits between 'cluster=' and ' source', right-aligned in an n x width grid.
    n_digits = second - len(_SOURCE_KEY) - first - 1
    width = int(n_digits.max())
    if width > _MAX_DIGITS:
        return None
    column = np.arange(width)
    pos = (second - len(_SOURCE_KEY) - width)[:, None] + column  # the last digit sits in the last column
    used = column >= (width - n_digits)[:, None]
    digits = np.where(used, arr[np.maximum(pos, 0)], ord("0")) - np.uint8(ord("0"))
    if (digits > 9).any():  # uint8: anything below '0' wrapped round to a large value
        return None
    clusters = digits.astype(np.int64) @ (10 ** np.arange(width - 1, -1, -1, dtype=np.int64))
    # Source ids: the rest of the header, compared against each configured name.
    name_starts, name_lengths = second + 1, ends - second - 1
    source_ids = np.full(n, -1, dtype=np.int16)
    for k, name in enumerate(sources):
        key = np.frombuffer(name.encode(), dtype=np.uint8)
        candidates = np.flatnonzero(name_lengths == len(key))
        if len(key) and len(candidates):
            same = (arr[name_starts[candidates][:, None] + np.arange(len(key))] == key).all(axis=1)
            source_ids[candidates[same]] = k
    if (source_ids < 0).any():
        return None
    return clusters, source_ids


def _header_fields_regex(batch, source_index, sources):
    found = batch.scan_headers(_FIELDS)
    if len(found) != len(batch):
        _raise_bad_header(batch)
    cluster_text, source_text = zip(*found)
    clusters = np.array(cluster_text).astype(np.int64)
    names, inverse = np.unique(np.array(source_text), return_inverse=True)
    lookup = np.empty(len(names), dtype=np.int16)
    for k, name in enumerate(names.tolist()):
        if name not in source_index:
            i = int(np.flatnonzero(inverse == k)[0])
            raise PlmscaleError(f"{batch.path}, line {int(batch.lines[i])}: source "
                                f"{name.decode(errors='replace')!r} is not one of the configured sources "
                                f"{sources} — the split file does not match the config; rerun the workflow")
        lookup[k] = source_index[name]
    return clusters, lookup[inverse]


def _raise_bad_header(batch):
    for header, line in zip(batch.headers, batch.lines.tolist()):
        if len(_FIELDS.findall(header)) != 1:
            raise PlmscaleError(
                f"{batch.path}, line {line}: header {header[:80].decode(errors='replace')!r} is not "
                f"'>id cluster=<int> source=<name>' — this file should come from the split stage; rerun it")
    raise PlmscaleError(f"{batch.path}: headers do not match '>id cluster=<int> source=<name>' — "
                        f"rerun the split stage")


def _raise_invalid(batch, tokens):
    position = tokens.index(bytes([INVALID]))
    i = int(np.searchsorted(batch.offsets, position, side="right")) - 1
    raise PlmscaleError(f"{batch.path}, line {int(batch.lines[i])}: record "
                        f"{batch.ids[i].decode(errors='replace')!r} has letter {chr(batch.seq[position])!r} "
                        f"outside the ESM-2 alphabet — the input should be cleaned; rerun the clean stage")


def _log_progress(path, writer, elapsed):
    elapsed = max(elapsed, 1e-9)
    log.info("%s: %d sequences (%.0f/s), %d tokens (%.1f M/s), %d shards", path, writer.n_sequences,
             writer.n_sequences / elapsed, writer.n_tokens, writer.n_tokens / elapsed / 1e6,
             len(writer.shards) + (writer.bin is not None))
