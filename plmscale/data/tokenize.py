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
