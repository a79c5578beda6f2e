"""Token shards: flat uint8 token streams (.bin) + int64 offsets (.idx), read back with np.memmap.

Layout of one split directory:
    shard_00000.bin   uint8 residue token ids of every sequence, back to back (no <cls>/<eos>)
    shard_00000.idx   int64 offsets, n_sequences + 1 entries: sequence j is bin[idx[j]:idx[j + 1]]
    cluster_ids.npy   int64, one per sequence (all shards, in order): dense cluster index
    source_ids.npy    int16, one per sequence: index into manifest["sources"]
    manifest.json     counts, vocabulary, sources, sha256 of every file, created_by

Writing streams: each batch goes straight to disk and into a running sha256, so memory does not grow
with the number of sequences (apart from a bitset of the clusters seen, 1 bit per cluster id). The
writes and hashing run on one background thread (both release the GIL), in order, a few batches behind
the caller, so they overlap with parsing the next chunk. Files
are written under temporary names and renamed at the end, the manifest last, so an interrupted run
never leaves a directory that looks complete; the temporaries a killed run left behind are removed when the
next writer starts.
"""

import glob
import hashlib
import io
import json
import os
import queue
import threading

import numpy as np

from plmscale.alphabet import TOKENS, encode
from plmscale.config import read_json_object
from plmscale.data.atomic import DeferredFile, remove_stale_temporaries, write_json
from plmscale.errors import PlmscaleError
from plmscale.provenance import provenance

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CLUSTER_IDS = "cluster_ids.npy"
SOURCE_IDS = "source_ids.npy"


def split_pass_tokens(manifest: dict) -> int:
    """Tokens one pass over a split feeds a run, from its manifest: the residues plus <cls> and <eos> per
    sequence (as train/subset.py frames a sequence). A run's tokens over this are its epochs."""
    return int(manifest["n_tokens"]) + 2 * int(manifest["n_sequences"])


def read_split_pass_tokens(manifest_path) -> int:
    """split_pass_tokens of a split's manifest.json file; a missing, unreadable or miscounted manifest is an
    error naming it (the one reader `plmscale plan`, `plmscale design`, the design rounds and collect share)."""
    manifest = read_json_object(manifest_path, "split manifest", hint="; rerun the tokenize step")
    for key in ("n_tokens", "n_sequences"):
        count = manifest.get(key)
        if isinstance(count, bool) or not isinstance(count, (int, float)) or count <= 0:
            raise PlmscaleError(f"{manifest_path}: {key} is {count!r}, not a positive count; rerun the tokenize step")
    return split_pass_tokens(manifest)


def _shard_names(k):
    return f"shard_{k:05d}.bin", f"shard_{k:05d}.idx"


class _WriteBehind:
    """One thread that performs file writes in submission order. The caller must not change what it
    submitted; drain() waits until everything submitted is on disk and re-raises a write error."""

    DEPTH = 4  # queued writes (one batch is 4): bounds the memory held, whatever the corpus size

    def __init__(self):
        self._queue = queue.Queue(maxsize=self.DEPTH)
        self._error = None
        self._thread = threading.Thread(target=self._run, name="shard-writer", daemon=True)
        self._thread.start()

    def submit(self, write, data):
        self._raise_error()
        self._queue.put((write, data))

    def _run(self):
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    item[0](item[1])
            except BaseException as error:  # noqa: BLE001 - handed to the caller by drain()/submit()
                self._error = error
            finally:
                self._queue.task_done()

    def drain(self):
        self._queue.join()
        self._raise_error()

    def _raise_error(self):
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def stop(self):
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class _HashedFile(DeferredFile):
    """A file written under a temporary name, hashed as it is written, renamed on commit."""

    def __init__(self, directory, name, behind=None):
        super().__init__(os.path.join(directory, name))
        self.name = name
        self.digest = hashlib.sha256()
        self.size = 0
        self.behind = behind  # a _WriteBehind, or None to write at once

    def write(self, data):
        view = memoryview(data).cast("B")
        self.size += len(view)
        if self.behind is not None:
            self.behind.submit(self._write_now, view)
        else:
            self._write_now(view)

    def _write_now(self, view):
        DeferredFile.write(self, view)  # a failure names the shard file
        self.digest.update(view)


class ShardWriter:
    """Append sequences (as token batches) to rolling shards; close() writes the manifest."""

    def __init__(self, out_dir, split, sources, max_tokens_per_shard):
        if max_tokens_per_shard < 1:
            raise PlmscaleError(f"max_tokens_per_shard must be positive, got {max_tokens_per_shard}")
        self.out_dir, self.split = str(out_dir), split
        self.sources = list(sources)
        self.max_tokens = int(max_tokens_per_shard)
        os.makedirs(self.out_dir, exist_ok=True)
        remove_stale_temporaries(self.out_dir)
        self.shards = []          # finished shard entries for the manifest
        self.files = []           # every _HashedFile, committed together at the end
        self.bin = self.idx = None
        self.shard_sequences = self.shard_tokens = 0
        self.n_sequences = self.n_tokens = 0
        self.per_source_sequences = np.zeros(len(self.sources), dtype=np.int64)
        self.per_source_tokens = np.zeros(len(self.sources), dtype=np.int64)
        self.cluster_bits = np.zeros(0, dtype=np.uint8)
        self.behind = _WriteBehind()
        # Per-sequence arrays go to raw files now; the .npy header (which needs the count) comes at close.
        self.cluster_raw = _HashedFile(self.out_dir, CLUSTER_IDS + ".raw", self.behind)
        self.source_raw = _HashedFile(self.out_dir, SOURCE_IDS + ".raw", self.behind)

    def add(self, tokens, lengths, cluster_ids, source_ids):
        """Append sequences: tokens is every sequence's uint8 ids back to back (bytes or array)."""
        if isinstance(tokens, bytes):
            tokens = np.frombuffer(tokens, dtype=np.uint8)  # immutable: written without a copy
        elif not (isinstance(tokens, np.ndarray) and isinstance(tokens.base, bytes) and tokens.dtype == np.uint8):
            # The writes happen a little later on another thread: keep a copy the caller cannot change.
            tokens = np.array(tokens, dtype=np.uint8, copy=True)
        lengths = np.asarray(lengths, dtype=np.int64)
        cluster_ids = np.asarray(cluster_ids, dtype=np.int64)
        source_ids = np.asarray(source_ids, dtype=np.int16)
        if not (len(lengths) == len(cluster_ids) == len(source_ids)) or int(lengths.sum()) != len(tokens):
            raise ValueError("tokens, lengths, cluster_ids and source_ids disagree in size")
        if len(lengths) == 0:
            return
        if source_ids.min() < 0 or source_ids.max() >= len(self.sources) or cluster_ids.min() < 0:
            raise ValueError("source id out of range or negative cluster id")
        self.cluster_raw.write(cluster_ids.astype("<i8", copy=True))  # copies: see tokens above
        self.source_raw.write(source_ids.astype("<i2", copy=True))
        self._mark_clusters(cluster_ids)
        self.per_source_sequences += np.bincount(source_ids, minlength=len(self.sources))
        self.per_source_tokens += np.bincount(source_ids, weights=lengths, minlength=len(self.sources)
                                              ).astype(np.int64)
        ends = np.cumsum(lengths)
        done = 0  # records of this batch already written
        while done < len(lengths):
            if self.bin is None:
                self._open_shard()
            base = int(ends[done - 1]) if done else 0
            room = self.max_tokens - self.shard_tokens
            # How many of the remaining records fit in this shard (at least one in an empty shard).
            fit = int(np.searchsorted(ends[done:] - base, room, side="right"))
            if fit == 0:
                if self.shard_sequences == 0:
                    fit = 1  # a single sequence longer than a shard gets a shard of its own
                else:
                    self._close_shard()
                    continue
            stop = done + fit
            token_end = int(ends[stop - 1])
            self.bin.write(tokens[base:token_end])
            self.idx.write((ends[done:stop] - base + self.shard_tokens).astype("<i8"))
            self.shard_sequences += fit
            self.shard_tokens += token_end - base
            done = stop
            if self.shard_tokens >= self.max_tokens:
                self._close_shard()
        self.n_sequences += len(lengths)
        self.n_tokens += len(tokens)

    def _mark_clusters(self, cluster_ids):
        top = int(cluster_ids.max())
        if (top >> 3) >= len(self.cluster_bits):
            grown = np.zeros(max((top >> 3) + 1, 2 * len(self.cluster_bits)), dtype=np.uint8)
            grown[:len(self.cluster_bits)] = self.cluster_bits
            self.cluster_bits = grown
        np.bitwise_or.at(self.cluster_bits, cluster_ids >> 3, (1 << (cluster_ids & 7)).astype(np.uint8))

    def _open_shard(self):
        bin_name, idx_name = _shard_names(len(self.shards))
        self.bin = _HashedFile(self.out_dir, bin_name, self.behind)
        self.idx = _HashedFile(self.out_dir, idx_name, self.behind)
        self.files += [self.bin, self.idx]
        self.idx.write(np.zeros(1, dtype="<i8"))
        self.shard_sequences = self.shard_tokens = 0

    def _close_shard(self):
        self.behind.drain()  # the digests are complete only once the queued writes are done
        self.bin.close()
        self.idx.close()
        self.shards.append({"bin": self.bin.name, "idx": self.idx.name,
                            "n_sequences": self.shard_sequences, "n_tokens": self.shard_tokens,
                            "sha256_bin": self.bin.digest.hexdigest(),
                            "sha256_idx": self.idx.digest.hexdigest()})
        self.bin = self.idx = None

    def _finish_array(self, raw, name, dtype):
        """raw little-endian values -> name.npy (header + the same bytes), hashed as written."""
        self.behind.drain()
        raw.close()
        out = _HashedFile(self.out_dir, name)
        self.files.append(out)
        header = {"descr": np.dtype(dtype).str, "fortran_order": False,
                  "shape": (raw.size // np.dtype(dtype).itemsize,)}
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, header)
        out.write(buffer.getvalue())
        with open(raw.tmp, "rb") as handle:
            while block := handle.read(4 << 20):  # small blocks: memory stays flat at any size
                out.write(block)
        out.close()
        raw.discard()
        return {"file": name, "sha256": out.digest.hexdigest()}

    def close(self) -> dict:
        """Finish the last shard and the arrays, rename everything into place, write the manifest."""
        try:
            if self.bin is not None:
                self._close_shard()
            arrays = {"cluster_ids": self._finish_array(self.cluster_raw, CLUSTER_IDS, "<i8"),
                      "source_ids": self._finish_array(self.source_raw, SOURCE_IDS, "<i2")}
            manifest = {
                "format_version": FORMAT_VERSION,
                "split": self.split,
                "n_sequences": self.n_sequences,
                "n_tokens": self.n_tokens,
                "n_clusters": int(np.unpackbits(self.cluster_bits).sum()),
                "token_dtype": "uint8",
                "index_dtype": "int64",
                "vocabulary": list(TOKENS),
                "sources": self.sources,
                "per_source": {name: {"n_sequences": int(self.per_source_sequences[i]),
                                      "n_tokens": int(self.per_source_tokens[i])}
                               for i, name in enumerate(self.sources)},
                "shards": self.shards,
                "arrays": arrays,
                "created_by": provenance(reproducible_only=True),
            }
            _remove_stale_shards(self.out_dir, {s["bin"] for s in self.shards} | {s["idx"] for s in self.shards})
            self.behind.stop()
            for f in self.files:
                f.commit()
            write_json(os.path.join(self.out_dir, MANIFEST), manifest, sort_keys=False)
            return manifest
        except BaseException:
            self.abort()
            raise

    def abort(self):
        """Remove every temporary file (after an error): nothing half-written is left behind."""
        self.behind.stop()
        for f in self.files + [self.cluster_raw, self.source_raw]:
            f.discard()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is not None:
            self.abort()


def _remove_stale_shards(out_dir, keep):
    """Shards left from an earlier run with more shards would contradict the new manifest."""
    for path in glob.glob(os.path.join(out_dir, "shard_*.bin")) + glob.glob(os.path.join(out_dir, "shard_*.idx")):
        if os.path.basename(path) not in keep:
            os.remove(path)


class ShardReader:
    """Random access to the sequences of one split directory; every file is memory-mapped."""

    def __init__(self, directory):
        self.directory = str(directory)
        manifest_path = os.path.join(self.directory, MANIFEST)
        try:
            with open(manifest_path) as handle:
                self.manifest = json.load(handle)
        except FileNotFoundError:
            raise PlmscaleError(f"{manifest_path} does not exist — run the tokenize step of the workflow "
                                f"(snakemake) to create the shards") from None
        except json.JSONDecodeError as error:
            raise PlmscaleError(f"{manifest_path} is not valid JSON ({error}) — delete the directory "
                                f"and rerun the tokenize step") from None
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise PlmscaleError(f"{manifest_path}: shard format {self.manifest.get('format_version')} is "
                                f"not {FORMAT_VERSION} — rerun the tokenize step with this plmscale version")
        self.sources = list(self.manifest["sources"])
        self._bins, self._idxs = [], []
        for shard in self.manifest["shards"]:
            bin_path = os.path.join(self.directory, shard["bin"])
            idx = np.memmap(os.path.join(self.directory, shard["idx"]), dtype="<i8", mode="r")
            if len(idx) != shard["n_sequences"] + 1:
                raise PlmscaleError(f"{shard['idx']} in {self.directory} has {len(idx) - 1} sequences, the "
                                    f"manifest says {shard['n_sequences']} — rerun the tokenize step")
            # np.memmap refuses empty files; an empty shard cannot occur, but stay safe.
            tokens = (np.memmap(bin_path, dtype=np.uint8, mode="r") if shard["n_tokens"]
                      else np.zeros(0, dtype=np.uint8))
            self._bins.append(tokens)
            self._idxs.append(idx)
        counts = [s["n_sequences"] for s in self.manifest["shards"]]
        self._shard_starts = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))
        arrays = self.manifest["arrays"]
        self.cluster_ids = np.load(os.path.join(self.directory, arrays["cluster_ids"]["file"]), mmap_mode="r")
        self.source_ids = np.load(os.path.join(self.directory, arrays["source_ids"]["file"]), mmap_mode="r")
        self._lengths = None

    def __len__(self):
        return int(self._shard_starts[-1])

    def __getitem__(self, i) -> np.ndarray:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sequence index {i} out of range for {n} sequences")
        shard = int(np.searchsorted(self._shard_starts, i, side="right")) - 1
        j = i - int(self._shard_starts[shard])
        idx = self._idxs[shard]
        return self._bins[shard][int(idx[j]):int(idx[j + 1])]

    @property
    def lengths(self) -> np.ndarray:
        if self._lengths is None:
            self._lengths = (np.concatenate([np.diff(idx) for idx in self._idxs]).astype(np.int64)
                             if self._idxs else np.zeros(0, dtype=np.int64))
        return self._lengths

    def verify(self) -> list:
        """Recompute every sha256 in the manifest; return a list of problems (empty when all match)."""
        from plmscale.data.shard_check import manifest_files
        from plmscale.provenance import sha256_file
        problems = []
        for name, expected in manifest_files(self.manifest):
            path = os.path.join(self.directory, name)
            if not os.path.exists(path):
                problems.append(f"{name}: missing")
            elif sha256_file(path) != expected:
                problems.append(f"{name}: sha256 differs from the manifest")
        return problems


class MemoryShards:
    """In-memory stand-in with ShardReader's attributes, for the sampler and the eval set where writing
    real shards adds nothing (tests, the demo probe)."""

    def __init__(self, sequences, cluster_ids, source_ids, sources):
        self._seqs = [encode(s) for s in sequences]
        self.lengths = np.array([len(s) for s in self._seqs], dtype=np.int64)
        self.cluster_ids = np.asarray(cluster_ids, dtype=np.int64)
        self.source_ids = np.asarray(source_ids, dtype=np.int16)
        self.sources = list(sources)
        self.manifest = {"n_sequences": len(self._seqs), "sources": self.sources}

    def __len__(self):
        return len(self._seqs)

    def __getitem__(self, i):
        return self._seqs[int(i)]
