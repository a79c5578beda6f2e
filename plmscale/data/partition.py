"""Hash partitions for the data steps that must see every copy of a key at once (dedup, the split's
member -> cluster join), so that no step holds the whole corpus in memory.

A step streams its input once and writes each record to one of P partition files chosen by a stable hash
of its key (the sequence for dedup, the member id for the split): every record sharing a key lands in the
same partition. Each partition is then processed on its own (one Snakemake job each, in parallel on a
cluster), holding only its share of the keys, and a gather step merges the partitions' outputs back into
the original order by a fixed-width sort key carried on every line. Because the order is restored from
that key, the final output is the same whatever P is.

Memory:
- the writer buffers at most `flush_bytes` in total, whatever P is (it flushes every partition when full);
- a partition job holds one dict entry per distinct key of its partition. `entry_budget` turns the job's
  memory (mem_mb) into a number of entries; a partition over it stops with the value of
  data.partitions.count that would fit, instead of being killed by the scheduler later;
- the merge keeps one line per partition.

Partition files are plain text (one record a line, tab-separated), uncompressed: they are temporary, read
once, and writing them is then as fast as the disk.
"""

import hashlib
import heapq
import math
import os
from contextlib import ExitStack
from pathlib import Path

from plmscale.data.atomic import atomic_path
from plmscale.errors import PlmscaleError

# Fixed-width hex: sorting lines as text sorts them by (source index, record index).
KEY_WIDTH = 16
RECORD_BITS = 48
FLUSH_BYTES = 4 << 20
# The share of a partition job's memory (mem_mb) its dict of entries may take; the rest is the interpreter,
# the read and write buffers and the allocator's slack.
DICT_SHARE = 0.6
COUNT_KEY = "data.partitions.count"


def partition_names(count: int) -> list:
    """The partitions' names, which are also their file names: 0000, 0001, ..."""
    if count < 1:
        raise PlmscaleError(f"{COUNT_KEY} must be at least 1, not {count}")
    return [f"{index:04d}" for index in range(count)]


def partition_of(digest: bytes, count: int) -> int:
    """The partition of a key from its digest: stable across runs, machines and Python versions."""
    return int.from_bytes(digest[:8], "big") % count


def key_digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("ascii"), digest_size=16).digest()


def order_key(group: int, index: int) -> str:
    """A record's place in the original order as fixed-width hex: `group` (a source) then `index`."""
    if index >= 1 << RECORD_BITS or group >= 1 << (4 * KEY_WIDTH - RECORD_BITS):
        raise PlmscaleError(f"record {index} of input {group} is beyond what the partition key can number")
    return f"{(group << RECORD_BITS) | index:0{KEY_WIDTH}x}"


def entry_budget(mem_mb: int, bytes_per_entry: int) -> int:
    """How many dict entries a partition job with mem_mb of memory may hold."""
    return max(1, int(mem_mb * (1 << 20) * DICT_SHARE / bytes_per_entry))


def partitions_needed(n_keys: int, mem_mb: int, bytes_per_entry: int) -> int:
    """The smallest partition count whose partitions fit mem_mb each, with 25% headroom for an uneven hash."""
    return max(1, math.ceil(1.25 * n_keys / entry_budget(mem_mb, bytes_per_entry)))


class OverBudget(PlmscaleError):
    """A partition job's dict outgrew its memory budget (the message says which count fits)."""


def check_budget(n_entries: int, budget: int, *, what: str, inputs: list, n_partitions: int, mem_mb: int,
                 bytes_per_entry: int) -> None:
    """Stop a partition job whose dict outgrew its memory, saying which partition count would fit. The
    count is sized on this partition's input lines (an upper bound of its keys), counted only here."""
    if n_entries <= budget:
        return
    n_lines = sum(count_lines(path) for path in inputs)
    needed = partitions_needed(n_lines * n_partitions, mem_mb, bytes_per_entry)
    raise OverBudget(
        f"{inputs[0]}: this partition holds more than {budget} {what} (~{bytes_per_entry} bytes each), more "
        f"than fit in the job's {mem_mb} MB: set {COUNT_KEY} (now {n_partitions}) to {needed} or more, or "
        f"raise data.partitions.mem_mb")


def count_lines(path) -> int:
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


class PartitionWriter:
    """Lines to P files by partition index, with one bounded buffer for all of them.

    Use as a context manager; the files appear under their final names only if the block succeeds."""

    def __init__(self, paths, flush_bytes=FLUSH_BYTES):
        self.paths = [Path(path) for path in paths]
        self.flush_bytes = flush_bytes
        self.counts = [0] * len(self.paths)
        self._pending = [[] for _ in self.paths]
        self._pending_bytes = 0
        self._stack = ExitStack()
        self._files = []

    def __enter__(self):
        for path in self.paths:
            tmp = self._stack.enter_context(atomic_path(path))
            self._files.append(self._stack.enter_context(open(tmp, "wb", buffering=0)))
        return self

    def write(self, partition: int, line: str) -> None:
        """Append `line` (ending in a newline) to a partition."""
        self._pending[partition].append(line)
        self.counts[partition] += 1
        self._pending_bytes += len(line) + 56   # the text and its str object
        if self._pending_bytes >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        for pending, handle in zip(self._pending, self._files):
            if pending:
                handle.write("".join(pending).encode("ascii"))
                pending.clear()
        self._pending_bytes = 0

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.flush()
            for handle in self._files:
                handle.close()
        finally:
            # Renames every file into place on success; removes the temporaries on an error.
            return self._stack.__exit__(exc_type, exc, tb)


def read_lines(path):
    """The lines of a partition file, newline included."""
    with open(path, "r", encoding="ascii", newline="\n", buffering=1 << 20) as handle:
        yield from handle


def merge_sorted(paths):
    """The lines of files each sorted as text, merged into one sorted stream (one line per file in memory).

    Files are opened as the merge starts and closed when it ends."""
    with ExitStack() as stack:
        handles = [stack.enter_context(open(path, "r", encoding="ascii", newline="\n", buffering=64 << 10))
                   for path in paths]
        yield from heapq.merge(*handles)


def scratch_dir(near) -> Path:
    """A hidden temporary folder next to `near` for in-process partitioning (same disk as the outputs);
    cleared by atomic.remove_stale_temporaries if the process is killed."""
    near = Path(near)
    near.parent.mkdir(parents=True, exist_ok=True)
    path = near.parent / f".{near.name}.partitions.tmp-{os.getpid()}"
    path.mkdir(exist_ok=True)
    return path
