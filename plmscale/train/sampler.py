"""Which sequences a training step sees: source mixture, then cluster, then member, then a random crop.

Long proteins are kept by the data stage (data.clean.max_length: no cap by default) and cropped here: a
window of seq_len tokens out of the framed stream `<cls> residues <eos>`, its start uniform over every
position where it fits. A window carries <cls> only when it holds the protein's real N-terminus and <eos> only
when it holds the real C-terminus, so a causal model never learns that proteins stop at the crop length
(framing every crop `<cls> window <eos>` taught it exactly that). The window is drawn from the example's own
generator, so it too is a function of (seed, stream, step, index). The sampler counts the crops it makes.

Stateless: example `index` of step `step` is drawn from its own generator seeded by (seed, stream, step,
index). Nothing carries over between steps, so a resumed run sees exactly the batches an uninterrupted one
would, and the global batch is the same whatever the number of ranks (each rank draws its own slice of
the example indices).

`collate` pads, one sequence per row: a sequence keeps position 0 = <cls> as in ESM, and attention needs
no document mask. Each micro-batch is padded only to its longest row, and only real tokens (everything but
<pad>) count toward D. plmscale.train.packing lays the same examples out packed instead (train.packing).
"""

import logging

import numpy as np
import torch

from plmscale.alphabet import CLS_ID, EOS_ID, PAD_ID
from plmscale.categorical import Categorical
from plmscale.errors import PlmscaleError
from plmscale.model import IGNORE_INDEX
from plmscale.train.masking import causal_labels, mask_tokens

log = logging.getLogger(__name__)

TRAIN_STREAM, EVAL_STREAM = 0, 1


def example_rng(seed: int, stream: int, step: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, stream, step, index])


def is_cropped(length: int, seq_len: int) -> bool:
    """Whether frame() crops a sequence of this many residues (its framed stream is length + 2 tokens)."""
    return length + 2 > seq_len


def framed_lengths(lengths, seq_len: int) -> np.ndarray:
    """Tokens frame() returns for sequences of these many residues: the framed stream, at most seq_len."""
    return np.minimum(np.asarray(lengths, dtype=np.int64) + 2, seq_len)


# train.sampling.crop_framing: where a crop carries <cls>/<eos>. "protein_ends" (the default) only at the
# protein's real ends; "every_crop" frames every crop `<cls> window <eos>`, the framing of plmscale before it
# was fixed, kept only to reproduce results made with it (it teaches a CLM to stop at the crop length).
CROP_FRAMINGS = ("protein_ends", "every_crop")


def frame(residues: np.ndarray, seq_len: int, rng: np.random.Generator, framing: str = "protein_ends") -> np.ndarray:
    """A window of at most seq_len tokens of `<cls> residues <eos>`, as int64.

    A sequence that fits is returned whole. A longer one gives a window whose start is uniform over the
    len(residues) + 3 - seq_len positions where it fits, so it holds <cls> only at the real start and <eos>
    only at the real end. With framing "every_crop" the window's residues are the same but every crop is
    framed `<cls> window <eos>` (seq_len - 2 residues); a seed draws the same offset under both.
    """
    stream_length = len(residues) + 2
    start = 0 if stream_length <= seq_len else int(rng.integers(0, stream_length - seq_len + 1))
    if framing == "every_crop":
        window = np.asarray(residues[start:start + seq_len - 2], dtype=np.int64)
        return np.concatenate([[CLS_ID], window, [EOS_ID]]).astype(np.int64)
    if framing != "protein_ends":
        raise PlmscaleError(f"train.sampling.crop_framing {framing!r} is not one of {', '.join(CROP_FRAMINGS)}")
    stop = min(stream_length, start + seq_len)
    out = np.empty(stop - start, dtype=np.int64)
    # Stream position p holds <cls> at 0, residue p-1 at 1..len, <eos> at len+1.
    first_residue, last_residue = max(start, 1), min(stop, stream_length - 1)
    out[first_residue - start:last_residue - start] = residues[first_residue - 1:last_residue - 1]
    if start == 0:
        out[0] = CLS_ID
    if stop == stream_length:
        out[-1] = EOS_ID
    return out


class SequenceSampler:
    """Draws framed sequences from a shard reader (anything with ShardReader's attributes)."""

    def __init__(self, reader, seq_len: int, source_weights: dict | None = None, by_cluster: bool = True,
                 where: str = "shards", crop_framing: str = "protein_ends"):
        self.reader, self.seq_len, self.by_cluster = reader, seq_len, by_cluster
        self.crop_framing = crop_framing
        # Drawn and cropped examples since this sampler was made (this process, this rank): for metrics.
        self.n_drawn = self.n_cropped = 0
        if len(reader) == 0:
            raise PlmscaleError(f"{where}: no sequences to train on; check the split and shard stages")
        source_ids = np.asarray(reader.source_ids, dtype=np.int64)
        cluster_ids = np.asarray(reader.cluster_ids, dtype=np.int64)
        names = list(reader.sources)
        counts = np.bincount(source_ids, minlength=len(names))
        present = [i for i in range(len(names)) if counts[i] > 0]
        if source_weights:
            weights = np.array([float(source_weights.get(names[i], 0.0)) for i in present])
            if weights.sum() <= 0:
                raise PlmscaleError(
                    f"{where}: none of the sources in the shards ({', '.join(names[i] for i in present)}) has a "
                    f"positive weight in the config's data.sources; give at least one a weight > 0")
        else:  # no mixture given: the natural mix, proportional to sequences
            weights = counts[present].astype(float)
        self.source_index = np.array(present)
        self.source_prob = weights / weights.sum()
        self.source_draw = Categorical(self.source_prob)
        self.effective_mix = self._effective_mix(names, present, source_weights, reader, where)
        # Sequences ordered by (source, cluster, index): a source is a contiguous segment, a cluster a
        # contiguous run inside it.
        self.order = np.lexsort((np.arange(len(source_ids)), cluster_ids, source_ids))
        sorted_sources = source_ids[self.order]
        sorted_clusters = cluster_ids[self.order]
        self.segments, self.cluster_starts = [], []
        for s in present:
            lo, hi = np.searchsorted(sorted_sources, [s, s + 1])
            self.segments.append((int(lo), int(hi)))
            starts = np.flatnonzero(np.diff(sorted_clusters[lo:hi])) + 1
            self.cluster_starts.append(np.concatenate([[0], starts, [hi - lo]]).astype(np.int64))

    def _effective_mix(self, names, present, source_weights, reader, where) -> dict:
        """What the sampler really draws, per source: a weighted source with no sequence here (emptied by
        the clean or dedup step, or by the split) gets 0, the others renormalised; warned about."""
        mix = {names[i]: float(p) for i, p in zip(present, self.source_prob)}
        starved = sorted(name for name, weight in (source_weights or {}).items()
                         if float(weight) > 0 and name not in mix)
        mix.update(dict.fromkeys(starved, 0.0))
        # A subset (an identity bin, the repetition study's one source) leaves sources out on purpose.
        whole_split = getattr(reader, "manifest", {}).get("subset_of") is None
        if starved:
            log.log(logging.WARNING if whole_split else logging.INFO,
                    "%s: source(s) %s have a weight in data.sources but no sequence in these shards: nothing "
                    "is drawn from them, and the mix actually used is %s. A source the clean or dedup step "
                    "emptied is listed in results/data/dedup/stats.json (empty_sources); a small source may "
                    "have no cluster in this split (results/data/split/stats.json, per_source)",
                    where, ", ".join(starved), {k: round(v, 4) for k, v in mix.items()})
        return mix

    def pick(self, rng: np.random.Generator) -> int:
        """Sequence index: a source by weight, then (by_cluster) a cluster uniformly, then a member."""
        k = self.source_draw.draw(rng) if len(self.source_prob) > 1 else 0
        lo, hi = self.segments[k]
        if self.by_cluster:
            bounds = self.cluster_starts[k]
            c = int(rng.integers(0, len(bounds) - 1))
            position = lo + int(bounds[c]) + int(rng.integers(0, bounds[c + 1] - bounds[c]))
        else:
            position = lo + int(rng.integers(0, hi - lo))
        return int(self.order[position])

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        residues = self.reader[self.pick(rng)]
        self.n_drawn += 1
        self.n_cropped += is_cropped(len(residues), self.seq_len)
        return frame(residues, self.seq_len, rng, self.crop_framing)

    def expected_cropped_fraction(self) -> float:
        """Probability that one example is a crop under this sampler (what n_cropped / n_drawn tends to)."""
        cropped = (np.asarray(self.reader.lengths) + 2 > self.seq_len).astype(np.float64)
        return self._expectation(cropped)

    def mean_framed_length(self) -> float:
        """Expected real tokens of one example under this sampler (sets the step count for D tokens)."""
        return self._expectation(framed_lengths(self.reader.lengths, self.seq_len).astype(np.float64))

    def _expectation(self, per_sequence: np.ndarray) -> float:
        """E[per_sequence[pick()]]: source by weight, then cluster uniformly (by_cluster), then member."""
        expected = 0.0
        for prob, (lo, hi), bounds in zip(self.source_prob, self.segments, self.cluster_starts):
            lengths = per_sequence[self.order[lo:hi]]
            if self.by_cluster:
                sums = np.add.reduceat(lengths, bounds[:-1])
                expected += prob * float(np.mean(sums / np.diff(bounds)))
            else:
                expected += prob * float(lengths.mean())
        return expected


def make_example(sampler: SequenceSampler, objective: str, seed: int, stream: int, step: int, index: int,
                 mask_prob: float):
    """(inputs, labels) of one example, both int64 1-D, determined by (seed, stream, step, index)."""
    rng = example_rng(seed, stream, step, index)
    tokens = sampler.draw(rng)
    if objective == "mlm":
        return mask_tokens(tokens, rng, mask_prob)
    return tokens, causal_labels(tokens)


def collate(examples, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest example (or to `width`): tokens with <pad>, labels with IGNORE_INDEX."""
    width = width or max(len(inputs) for inputs, _ in examples)
    tokens = np.full((len(examples), width), PAD_ID, dtype=np.int64)
    labels = np.full((len(examples), width), IGNORE_INDEX, dtype=np.int64)
    for row, (inputs, target) in enumerate(examples):
        tokens[row, :len(inputs)] = inputs
        labels[row, :len(target)] = target
    return torch.from_numpy(tokens), torch.from_numpy(labels)
