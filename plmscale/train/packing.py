"""Packed micro-batches: several framed sequences per row of seq_len, each a document of its own.

A step's examples are exactly those of padded training (same sampler, same crops, MLM masking applied per
example before packing); only their layout differs. The packer is greedy and deterministic: first-fit
decreasing (longest example first, into the first row with room), so a step's rows depend only on its
examples. Rows are then cut into micro-batches of micro_batch_size rows; the number of rows, and so of
micro-batches, varies from step to step.

Every row is seq_len wide. The tail of a row is <pad> with no label and its own document id (a document of
pads only attends to itself, so no row of the attention mask is empty). Each document's positions restart at
0: the model rotates a packed sequence exactly as it would in its own padded row, so the loss per token is
the padded model's. D counts real tokens (everything but <pad>) in either layout.
"""

import dataclasses

import numpy as np
import torch

from plmscale.alphabet import PAD_ID
from plmscale.errors import PlmscaleError
from plmscale.model import IGNORE_INDEX
from plmscale.train.sampler import collate

# train.packing auto: packed on CUDA (padding wastes most of a GPU step at protein lengths). On CPU, packed
# where an example fills under 90% of seq_len on average. Measured (docs/benchmarks.md, "Packed sequences"):
# packed rows gave 1.2-1.5x the real tokens/s of padded rows at seq_len 512 and 1024 (mean fill 0.27-0.57),
# and 1.00-1.03x at seq_len 128 where most proteins are cropped to fill the row (fill 0.96-0.99): with
# nothing to remove, the document mask is overhead, so such runs (the demo's) keep the fused padded path.
CPU_PACK_BELOW_FILL = 0.9


def resolve_packing(setting, device_type: str, mean_fill: float | None = None) -> bool:
    """train.packing (auto | true | false) -> whether this run packs on this device. mean_fill: an
    example's expected real tokens / seq_len under the run's sampler (decides auto on CPU)."""
    if setting is True or setting is False:
        return setting
    if setting == "auto":
        return device_type == "cuda" or (mean_fill is not None and bool(mean_fill < CPU_PACK_BELOW_FILL))
    raise PlmscaleError(f"train.packing is {setting!r}; use auto, true or false")


@dataclasses.dataclass
class Batch:
    """One micro-batch. doc_ids/positions (B, T) only for packed rows; None means one sequence per row."""

    tokens: torch.Tensor
    labels: torch.Tensor
    doc_ids: torch.Tensor | None = None
    positions: torch.Tensor | None = None

    def to(self, device, non_blocking: bool = False) -> "Batch":
        def move(t):
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(move(self.tokens), move(self.labels), move(self.doc_ids), move(self.positions))

    def model_kwargs(self) -> dict:
        """Keyword arguments of Transformer.forward besides tokens and causal."""
        kwargs = {"labels": self.labels}
        if self.doc_ids is not None:
            kwargs.update(doc_ids=self.doc_ids, positions=self.positions)
        return kwargs

    @property
    def n_labels(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    @property
    def n_real_tokens(self) -> int:
        return int((self.tokens != PAD_ID).sum())


def pack_rows(lengths, seq_len: int) -> list[list[int]]:
    """First-fit decreasing: example indices per row, no row holding more than seq_len tokens.

    Ties keep example order, and each row lists its examples in the order they were placed, so the
    result depends only on the lengths.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and int(lengths.max()) > seq_len:
        raise PlmscaleError(f"an example of {int(lengths.max())} tokens does not fit a row of seq_len {seq_len}; "
                            f"frame() crops to seq_len, so examples must come from it")
    order = np.argsort(-lengths, kind="stable")
    room = np.empty(len(lengths), dtype=np.int64)  # free tokens per open row (at most one row per example)
    rows: list[list[int]] = []
    for index in order:
        length = int(lengths[index])
        fits = room[:len(rows)] >= length
        if fits.any():
            row = int(fits.argmax())
        else:
            row = len(rows)
            rows.append([])
            room[row] = seq_len
        rows[row].append(int(index))
        room[row] -= length
    return rows


def collate_packed(examples, rows, seq_len: int) -> Batch:
    """examples (inputs, labels) laid out as the given rows: tokens, labels, document ids, positions."""
    tokens = np.full((len(rows), seq_len), PAD_ID, dtype=np.int64)
    labels = np.full((len(rows), seq_len), IGNORE_INDEX, dtype=np.int64)
    doc_ids = np.empty((len(rows), seq_len), dtype=np.int64)
    positions = np.empty((len(rows), seq_len), dtype=np.int64)
    for r, members in enumerate(rows):
        at = 0
        for doc, index in enumerate(members):
            inputs, target = examples[index]
            end = at + len(inputs)
            tokens[r, at:end], labels[r, at:end] = inputs, target
            doc_ids[r, at:end], positions[r, at:end] = doc, np.arange(len(inputs))
            at = end
        doc_ids[r, at:], positions[r, at:] = len(members), np.arange(seq_len - at)  # the pad tail
    return Batch(*(torch.from_numpy(a) for a in (tokens, labels, doc_ids, positions)))


def empty_batch(seq_len: int) -> Batch:
    """One row of <pad> and no label: a micro-batch that adds nothing (equal micro-batch counts on all ranks).

    Laid out as one packed document whatever the run's layout: a padded row of pads only would leave MLM
    attention with no key at all (NaN), a document of pads attends to itself.
    """
    tokens = torch.full((1, seq_len), PAD_ID, dtype=torch.int64)
    labels = torch.full((1, seq_len), IGNORE_INDEX, dtype=torch.int64)
    return Batch(tokens, labels, torch.zeros_like(tokens), torch.arange(seq_len)[None])


def micro_batches(examples, micro_batch_size: int, seq_len: int, packed: bool,
                  full_width: bool = False) -> list[Batch]:
    """examples (inputs, labels) as micro-batches: micro_batch_size sequences per micro-batch, padded to
    the longest, or to seq_len when full_width (packed False), or micro_batch_size packed rows of seq_len
    (packed True). full_width gives a compiled model one shape instead of one per batch width: with widths
    varying, the compiler recompiles and falls back to shape-generic kernels (a compiled demo run, n2k at
    6.25e10, took 143 s against 69 s eager; full-width, 66 s with a warm compile cache)."""
    if not packed:
        width = seq_len if full_width else None
        return [Batch(*collate(examples[j:j + micro_batch_size], width))
                for j in range(0, len(examples), micro_batch_size)]
    rows = pack_rows([len(inputs) for inputs, _ in examples], seq_len)
    return [collate_packed(examples, rows[j:j + micro_batch_size], seq_len)
            for j in range(0, len(rows), micro_batch_size)]
