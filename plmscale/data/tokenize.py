"""Tokenize one split: its FASTA and id sidecars (from the split stage) -> token shards + manifest.

Input contract (written by the split stage, see split.py): gzip FASTA `>{seq_id}` + one sequence line
per record, and `{split}.cluster_ids.npy` / `{split}.source_ids.npy` holding each record's dense cluster
int and source index, in file order. Residues become ESM-2 token ids with one `bytes.translate` per chunk;
nothing is done per residue in Python, and no header text is parsed.
"""

import logging
import time

import numpy as np

from plmscale.alphabet import ENCODE_TABLE, INVALID
from plmscale.data.fasta import DEFAULT_CHUNK_SIZE, read_fasta_batches
from plmscale.data.gzio import open_read, read_block
from plmscale.data.shards import ShardWriter
from plmscale.data.split import SplitIdStream
from plmscale.errors import PlmscaleError

log = logging.getLogger("plmscale.tokenize")
PROGRESS_EVERY_S = 5.0


def tokenize_split(fasta_path, out_dir, split, sources, max_tokens_per_shard,
                   chunk_size=DEFAULT_CHUNK_SIZE) -> dict:
    """Write shards for one split; sources fixes the order of source ids. Returns the manifest."""
    sources = list(sources)
    started = last_report = time.monotonic()
    done = 0
    # The id sidecars are read a batch at a time, next to the FASTA: memory does not grow with the split.
    with ShardWriter(out_dir, split, sources, max_tokens_per_shard) as writer, SplitIdStream(fasta_path) as ids:
        n_ids = len(ids)
        # An empty split (its fraction is 0) is an empty file: nothing to read, an empty manifest.
        batches = (read_fasta_batches(fasta_path, chunk_size=chunk_size, check_duplicate_ids=False)
                   if n_ids or not _is_empty(fasta_path) else ())
        # Ids are unique by construction upstream (dedup, split); the check would cost time here.
        for batch in batches:
            n = len(batch)
            if done + n > n_ids:
                raise PlmscaleError(f"{fasta_path} holds more records than its id sidecars ({n_ids}); "
                                    "rerun the split stage")
            cluster_ids, source_ids = ids.take(n)
            if len(source_ids) and (source_ids.min() < 0 or source_ids.max() >= len(sources)):
                raise PlmscaleError(f"the source ids of {fasta_path} go beyond the {len(sources)} configured "
                                    f"sources {sources}: the split files do not match the config; rerun the "
                                    "split stage")
            tokens = batch.seq.translate(ENCODE_TABLE)
            if bytes([INVALID]) in tokens:
                _raise_invalid(batch, tokens)
            writer.add(tokens, batch.lengths, cluster_ids, source_ids)
            done += n
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                _log_progress(fasta_path, writer, now - started, n_ids)
        if done != n_ids:
            raise PlmscaleError(f"{fasta_path} holds {done} records but its id sidecars {n_ids}; "
                                "rerun the split stage")
        manifest = writer.close()
    _log_progress(fasta_path, writer, time.monotonic() - started)
    return manifest


def _is_empty(path) -> bool:
    stream = open_read(path)
    try:
        return not read_block(stream, 1, path)
    finally:
        stream.close()


def _raise_invalid(batch, tokens):
    position = tokens.index(bytes([INVALID]))
    i = int(np.searchsorted(batch.offsets, position, side="right")) - 1
    raise PlmscaleError(f"{batch.path}, line {int(batch.lines[i])}: record "
                        f"{batch.ids[i].decode(errors='replace')!r} has letter {chr(batch.seq[position])!r} "
                        f"outside the ESM-2 alphabet — the input should be cleaned; rerun the clean stage")


def _log_progress(path, writer, elapsed, total=None):
    """Sequences and tokens so far with their rates; with the split's record count, its share and an ETA."""
    elapsed = max(elapsed, 1e-9)
    rate = writer.n_sequences / elapsed
    share = ""
    if total and rate > 0:
        share = f", {100 * writer.n_sequences / total:.0f}% of {total}, ETA {(total - writer.n_sequences) / rate:.0f} s"
    log.info("%s: %d sequences (%.0f/s%s), %d tokens (%.1f M/s), %d shards", path, writer.n_sequences, rate, share,
             writer.n_tokens, writer.n_tokens / elapsed / 1e6, len(writer.shards) + (writer.bin is not None))
