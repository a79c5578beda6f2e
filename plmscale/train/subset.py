"""A restricted training set: whole clusters of one source holding about U unique tokens, repeated.

The repetition study (plmscale.grid.repetition, docs/repetition.md) trains on a deterministic subset of one
source's training sequences and compares it with the full mixture at the same token budget D; D / U is
then the run's epoch count. `SubsetReader` is a view over a shard reader with the attributes the sampler
and the trainer use (lengths, source_ids, cluster_ids, sources, __getitem__, __len__), so the sampler draws
from the subset exactly as it draws from a split: a cluster, then a member, then a random crop.

Which clusters: each cluster of the source gets a rank from a seeded 64-bit hash of its id (splitmix64, in
numpy: the same on every machine and for every run of a study), and clusters join in rank order until the
subset holds U tokens. A cluster joins whole (all of the source's members in it), so the subset is what a
smaller source of the same kind would look like, not a scatter of near-duplicates of held-out families.

Unique tokens count every sequence framed whole, residues + <cls> + <eos>: what one pass over every residue
would process. Long sequences are cropped to random windows when drawn, so "epochs" are the mean number of
times a token of the subset is processed, not literal passes.
"""

import numpy as np

from plmscale.errors import PlmscaleError

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over uint64 (wrapping arithmetic): a fixed, well-mixed hash."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) & _MASK64


def cluster_rank_keys(cluster_ids, seed: int) -> np.ndarray:
    """The seeded hash that orders clusters: same ids and seed, same order, on any machine."""
    salt = _splitmix64(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        return _splitmix64(np.asarray(cluster_ids).astype(np.int64).view(np.uint64) ^ salt)


def framed_tokens(lengths) -> np.ndarray:
    """Tokens of each sequence framed whole (<cls> + residues + <eos>)."""
    return np.asarray(lengths, dtype=np.int64) + 2


def select_subset(reader, source: str, unique_tokens: float, seed: int, where: str = "shards") -> np.ndarray:
    """Sorted indices of the sequences of `source` in the first clusters (by seeded hash) that together hold
    at least `unique_tokens` tokens; the last cluster joins whole, so the subset may exceed U by one cluster.

    Asking for more than the source holds is an error: the study would not repeat what it says it does."""
    names = list(reader.sources)
    if source not in names:
        raise PlmscaleError(f"{where}: train.repetition.source {source!r} is not a source of the shards "
                            f"({', '.join(names)}); name one of data.sources")
    source_ids = np.asarray(reader.source_ids, dtype=np.int64)
    mine = np.flatnonzero(source_ids == names.index(source))
    tokens = framed_tokens(np.asarray(reader.lengths)[mine])
    available = int(tokens.sum())
    if unique_tokens > available:
        raise PlmscaleError(
            f"{where}: train.repetition.unique_tokens {unique_tokens:.4g} is more than source {source!r} holds "
            f"in this split ({available:,} tokens framed); lower unique_tokens or use a larger source")
    clusters, member_cluster = np.unique(np.asarray(reader.cluster_ids, dtype=np.int64)[mine], return_inverse=True)
    per_cluster = np.bincount(member_cluster, weights=tokens, minlength=len(clusters))
    keys = cluster_rank_keys(clusters, seed)
    order = np.lexsort((clusters, keys))  # ties (never seen) broken by id: still deterministic
    cumulative = np.cumsum(per_cluster[order])
    n_taken = int(np.searchsorted(cumulative, unique_tokens, side="left")) + 1
    chosen = np.zeros(len(clusters), dtype=bool)
    chosen[order[:n_taken]] = True
    return np.sort(mine[chosen[member_cluster]])


class SubsetReader:
    """A view of some sequences of a shard reader, with the attributes the sampler and trainer read."""

    def __init__(self, reader, indices, description: str = "subset"):
        self.reader = reader
        self.indices = np.asarray(indices, dtype=np.int64)
        self.description = description
        self.lengths = np.asarray(reader.lengths, dtype=np.int64)[self.indices]
        self.source_ids = np.asarray(reader.source_ids)[self.indices]
        self.cluster_ids = np.asarray(reader.cluster_ids)[self.indices]
        self.sources = list(reader.sources)
        self.manifest = {"n_sequences": len(self.indices), "sources": self.sources, "subset_of": description}

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.reader[int(self.indices[int(i)])]

    @property
    def unique_tokens(self) -> int:
        return int(framed_tokens(self.lengths).sum())

    @property
    def n_clusters(self) -> int:
        return len(np.unique(self.cluster_ids))


def restricted_reader(reader, subset: dict, where: str = "shards") -> SubsetReader:
    """The subset a run spec's `subset` ({source, unique_tokens, seed}) names, as a reader view."""
    indices = select_subset(reader, subset["source"], float(subset["unique_tokens"]), int(subset["seed"]), where)
    return SubsetReader(reader, indices, f"{subset['source']} clusters, ~{subset['unique_tokens']:.3g} tokens, "
                                         f"seed {subset['seed']}")


def epochs(tokens: float, unique_tokens: float) -> float:
    """Epochs of a run that processes `tokens` drawn from `unique_tokens` (D / U)."""
    if unique_tokens <= 0:
        raise ValueError("unique_tokens must be positive")
    return float(tokens) / float(unique_tokens)


def repeated_epochs(tokens: float, unique_tokens: float) -> float:
    """Muennighoff's R_D: epochs beyond the first (0 while D <= U)."""
    return max(0.0, epochs(tokens, unique_tokens) - 1.0)
