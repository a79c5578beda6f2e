"""Clean one source's FASTA: the alphabet policy, length limits, and an exact account.

Kept: the 20 standard residues plus X B U Z O (ESM-2 has tokens for them). A record holding any other
letter is dropped and counted (or, in strict mode, is an error naming file, line and id). A record
shorter than min_length, or longer than max_length when a cap is set, is dropped and counted. By default
there is no cap: long proteins are kept and the training sampler crops them to a random window (as ESM-2
does). One trailing `*` (a stop codon, as translated proteomes write it) is removed by the reader and
counted in stripped_stop_codons (records seen with one; such a record is otherwise treated as any other);
a `*` anywhere else is an invalid letter. Record ids must be ASCII (an error naming file and line
otherwise).
Output: gzip FASTA, `>id` (first word of the header only), one line per sequence, byte-identical on
reruns. Every record read is accounted for: seen == kept + dropped_invalid + dropped_length.
"""

import logging
import os
import time

import numpy as np

from plmscale.alphabet import ENCODE_TABLE, INVALID
from plmscale.data.fasta import DEFAULT_CHUNK_SIZE, read_fasta_batches
from plmscale.data.atomic import remove_stale_temporaries, write_gzip_bytes, write_json
from plmscale.errors import PlmscaleError

log = logging.getLogger("plmscale.clean")

N_EXAMPLES = 5
PROGRESS_EVERY_S = 5.0


class BatchVerdict:
    """Which records of a batch are kept, and why the others are not."""

    def __init__(self, batch, min_length, max_length, strict):
        n = len(batch)
        lengths = batch.lengths
        tokens = batch.seq.translate(ENCODE_TABLE)
        self.tokens = tokens
        self.invalid = np.zeros(n, dtype=bool)
        self.bad_letters = {}
        if bytes([INVALID]) in tokens:  # memchr: the common all-valid case costs nothing more
            positions = np.flatnonzero(np.frombuffer(tokens, dtype=np.uint8) == INVALID)
            records = np.searchsorted(batch.offsets, positions, side="right") - 1
            if strict:
                i, letter = int(records[0]), chr(batch.seq[positions[0]])
                raise PlmscaleError(
                    f"{batch.path}, line {int(batch.lines[i])}: record "
                    f"{batch.ids[i].decode(errors='replace')!r} contains {letter!r}, which is not in the "
                    f"ESM-2 residue alphabet (20 standard + X B U Z O) — fix the record, or set "
                    f"data.clean.strict: false to drop such records and count them")
            self.invalid[records] = True
            letters, counts = np.unique(np.frombuffer(batch.seq, dtype=np.uint8)[positions],
                                        return_counts=True)
            self.bad_letters = {chr(c): int(k) for c, k in zip(letters.tolist(), counts.tolist())}
        too_long = lengths > max_length if max_length is not None else False
        self.bad_length = ~self.invalid & ((lengths < min_length) | too_long)
        self.keep = ~(self.invalid | self.bad_length)
        self.all_kept = bool(self.keep.all())


def clean_fasta(in_path, out_path, stats_path, source, min_length, max_length, strict,
                chunk_size=DEFAULT_CHUNK_SIZE, origin=None) -> dict:
    """Write the cleaned gzip FASTA and the stats JSON (both atomically); return the stats.

    max_length None keeps every length. origin: the source's url or path as the user gave it; errors
    name it, since the raw copy in_path is an internal file the user never wrote."""
    try:
        return _clean(in_path, out_path, stats_path, source, min_length, max_length, strict, chunk_size)
    except PlmscaleError as error:
        if origin is None or str(origin) == str(in_path):
            raise
        named = f"source {source!r} ({origin}; local copy {in_path})"
        raise PlmscaleError(str(error).replace(str(in_path), named, 1)) from None


def _clean(in_path, out_path, stats_path, source, min_length, max_length, strict, chunk_size) -> dict:
    if max_length is not None and min_length > max_length:
        raise PlmscaleError(f"clean settings for source {source!r}: min_length {min_length} is larger "
                            f"than max_length {max_length} — fix data.clean in the config")
    counts = {"seen": 0, "kept": 0, "dropped_invalid": 0, "dropped_length": 0, "kept_residues": 0,
              "stripped_stop_codons": 0}
    examples = {"dropped_invalid": [], "dropped_length": []}
    bad_letters = {}
    min_len, max_len = None, None
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    remove_stale_temporaries(out_dir)
    started = last_report = time.monotonic()
    # The FASTA is renamed into place only after the stats are written: both or neither.
    with write_gzip_bytes(out_path) as out:
        for batch in read_fasta_batches(in_path, chunk_size=chunk_size, spill_dir=out_dir):
            batch.check_ascii_ids()
            verdict = BatchVerdict(batch, min_length, max_length, strict)
            lengths = batch.lengths
            kept_lengths = lengths if verdict.all_kept else lengths[verdict.keep]
            counts["seen"] += len(batch)
            counts["kept"] += len(kept_lengths)
            counts["dropped_invalid"] += int(verdict.invalid.sum())
            counts["dropped_length"] += int(verdict.bad_length.sum())
            counts["kept_residues"] += int(kept_lengths.sum())
            counts["stripped_stop_codons"] += batch.n_stripped_stops
            if len(kept_lengths):
                lo, hi = int(kept_lengths.min()), int(kept_lengths.max())
                min_len = lo if min_len is None else min(min_len, lo)
                max_len = hi if max_len is None else max(max_len, hi)
            for key, mask in (("dropped_invalid", verdict.invalid), ("dropped_length", verdict.bad_length)):
                room = N_EXAMPLES - len(examples[key])
                if room > 0 and mask.any():
                    examples[key] += [batch.ids[i].decode(errors="replace")
                                      for i in np.flatnonzero(mask)[:room].tolist()]
            for letter, k in verdict.bad_letters.items():
                bad_letters[letter] = bad_letters.get(letter, 0) + k
            out.write(_fasta_text(batch, verdict))
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                _log_progress(in_path, counts, now - started)
        stats = _stats(source, in_path, counts, min_len, max_len, examples, bad_letters,
                       min_length, max_length, strict)
        _log_progress(in_path, counts, time.monotonic() - started)
        if counts["kept"] == 0:
            log.warning("source %r: no sequence survived clean (%d seen, %d dropped invalid, %d dropped "
                        "length); its sampling weight will have nothing to draw from", source,
                        counts["seen"], counts["dropped_invalid"], counts["dropped_length"])
        write_json(stats_path, stats, sort_keys=False)
    return stats


def _fasta_text(batch, verdict) -> bytes:
    """'>id\\nSEQ\\n' for every kept record, built from slices of what the reader already holds (the
    '>id' slices of the chunk, the unwrapped sequences) and joined once per batch."""
    offsets, seq = batch.offsets, batch.seq
    tagged = batch.tagged_ids
    if verdict.all_kept:
        starts, ends = offsets[:-1].tolist(), offsets[1:].tolist()
    else:
        index = np.flatnonzero(verdict.keep)
        if not len(index):
            return b""
        starts, ends = offsets[index].tolist(), offsets[index + 1].tolist()
        tagged = [tagged[i] for i in index.tolist()]
    pieces = [None] * (2 * len(starts) + 1)
    pieces[0:-1:2] = tagged
    pieces[1::2] = [seq[a:b] for a, b in zip(starts, ends)]
    pieces[-1] = b""
    return b"\n".join(pieces)


def _stats(source, in_path, counts, min_len, max_len, examples, bad_letters, min_length, max_length,
           strict) -> dict:
    identity = counts["kept"] + counts["dropped_invalid"] + counts["dropped_length"]
    # Every record read must land in exactly one bucket; anything else is a bug, not bad input.
    assert counts["seen"] == identity, f"record accounting is off for {in_path}: {counts}"
    return {
        "source": source,
        "input": str(in_path),
        "settings": {"min_length": min_length, "max_length": max_length, "strict": strict},
        **counts,
        "min_length": min_len,
        "mean_length": round(counts["kept_residues"] / counts["kept"], 3) if counts["kept"] else None,
        "max_length": max_len,
        "invalid_letters": dict(sorted(bad_letters.items())),
        "examples": examples,
        "accounting": {"identity": "seen == kept + dropped_invalid + dropped_length",
                       "holds": counts["seen"] == identity},
    }


def _log_progress(in_path, counts, elapsed):
    elapsed = max(elapsed, 1e-9)
    log.info("%s: %d records (%.0f/s), %d residues kept (%.1f M/s), %d dropped invalid, %d dropped length",
             in_path, counts["seen"], counts["seen"] / elapsed, counts["kept_residues"],
             counts["kept_residues"] / elapsed / 1e6, counts["dropped_invalid"], counts["dropped_length"])
