"""`plmscale score FASTA --run RUN`: how likely a trained model finds each sequence.

CLM: the log-likelihood of the sequence as it was trained, <cls> residues <eos>: the sum of log p over every
residue and the final <eos>, each given everything before it (the negative of the run's training loss summed
over that sequence). Perplexity = exp(-mean).
MLM: the pseudo-log-likelihood (Salazar et al. 2020; as ESM reports it): each residue masked in turn and
scored given all the others; pseudo-perplexity = exp(-mean). The masked copies of a sequence are batched.

Sequences longer than the run's context (seq_len - 2 residues) are scored in windows of seq_len tokens cut
from the framed stream `<cls> residues <eos>`, as training crops them: only the first window holds <cls> and
only the last <eos>. CLM windows overlap by one token, so every token after <cls> is predicted exactly once
(the first token of a window is context only); MLM windows do not overlap, and each residue is masked in the
window that holds it. A window sees nothing of another. The `windows` column says how many were used, so such
scores are easy to tell apart (they are a little worse than the model could do with the whole sequence in
view).
"""

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plmscale.alphabet import CLS_ID, ENCODE_TABLE, EOS_ID, INVALID, MASK_ID, PAD_ID, RESIDUE_LETTERS
from plmscale.errors import PlmscaleError

log = logging.getLogger("plmscale.score")
PROGRESS_EVERY_S = 10.0
DEFAULT_BATCH_TOKENS = 16384


@dataclass
class Score:
    record_id: str
    length: int  # residues
    n_scored: int  # predictions summed: residues (+ <eos> for CLM)
    log_likelihood: float  # natural log, summed
    windows: int

    @property
    def mean(self) -> float:
        return self.log_likelihood / self.n_scored

    @property
    def perplexity(self) -> float:
        return math.exp(-self.mean)


def framed(residues: np.ndarray) -> np.ndarray:
    out = np.empty(len(residues) + 2, dtype=np.int64)
    out[0], out[1:-1], out[-1] = CLS_ID, residues, EOS_ID
    return out


def windows(residues: np.ndarray, seq_len: int, overlap: int) -> list:
    """The framed stream `<cls> residues <eos>` in windows of at most seq_len tokens, each starting `overlap`
    tokens before the previous one ends (one window for a sequence that fits)."""
    stream = framed(residues)
    if len(stream) <= seq_len:
        return [stream]
    stride = seq_len - overlap
    starts = range(0, len(stream) - overlap, stride)
    return [stream[start:start + seq_len] for start in starts]


def _torch():
    import torch

    return torch


def clm_log_likelihoods(model, rows: list, device="cpu") -> list:
    """Summed log p of every token of each row after its first (each given the tokens before it in its row)
    under a causal model, in one padded batch. rows: token id arrays (windows of framed streams)."""
    torch = _torch()
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = torch.from_numpy(row)
    tokens = tokens.to(device)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(tokens, causal=True).float(), dim=-1)
    # Position t predicts token t+1.
    picked = log_probs[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0].double().cpu()
    return [float(picked[i, :len(row) - 1].sum()) for i, row in enumerate(rows)]


def mlm_pseudo_log_likelihood(model, row: np.ndarray, batch_tokens=DEFAULT_BATCH_TOKENS, device="cpu") -> float:
    """Sum over the residues of a token row (a window of a framed stream) of log p(residue | the row with that
    one residue masked), batched: each forward pass holds as many masked copies as fit in batch_tokens."""
    torch = _torch()
    residue_positions = np.flatnonzero((row != CLS_ID) & (row != EOS_ID))
    row = torch.from_numpy(np.asarray(row, dtype=np.int64)).to(device)
    per_pass = max(1, batch_tokens // len(row))
    total = 0.0
    for start in range(0, len(residue_positions), per_pass):
        positions = torch.from_numpy(residue_positions[start:start + per_pass]).to(device)
        batch = row.repeat(len(positions), 1)
        batch[torch.arange(len(positions), device=device), positions] = MASK_ID
        with torch.no_grad():
            logits = model(batch, causal=False)
        at_mask = logits[torch.arange(len(positions), device=device), positions].float()
        total += float(torch.log_softmax(at_mask, dim=-1).gather(-1, row[positions][:, None]).double().sum())
    return total


def score_sequence(loaded, record_id: str, residues: np.ndarray, batch_tokens=DEFAULT_BATCH_TOKENS,
                   device="cpu") -> Score:
    """The Score of one sequence (residue token ids) under a LoadedRun."""
    if len(residues) == 0:
        raise PlmscaleError(f"record {record_id!r} has no residues: nothing to score")
    if loaded.objective == "clm":
        pieces = windows(residues, loaded.seq_len, overlap=1)
        total = 0.0
        # Pieces go through in batches of about batch_tokens tokens.
        per_pass = max(1, batch_tokens // (loaded.seq_len))
        for start in range(0, len(pieces), per_pass):
            total += sum(clm_log_likelihoods(loaded.model, pieces[start:start + per_pass], device))
        return Score(record_id, len(residues), len(residues) + 1, total, len(pieces))
    pieces = windows(residues, loaded.seq_len, overlap=0)
    total = sum(mlm_pseudo_log_likelihood(loaded.model, piece, batch_tokens, device) for piece in pieces)
    return Score(record_id, len(residues), len(residues), total, len(pieces))


def score_batch_clm(loaded, records: list, batch_tokens=DEFAULT_BATCH_TOKENS, device="cpu") -> list:
    """Scores of many (id, residues) under a causal model, short sequences sharing forward passes."""
    scores, group, group_tokens = [], [], 0

    def flush():
        if group:
            sums = clm_log_likelihoods(loaded.model, [framed(r) for _, r in group], device)
            scores.extend(Score(i, len(r), len(r) + 1, s, 1) for (i, r), s in zip(group, sums))
            group.clear()

    for record_id, residues in records:
        if len(residues) == 0 or len(residues) > loaded.max_residues:
            flush()
            group_tokens = 0
            scores.append(score_sequence(loaded, record_id, residues, batch_tokens, device))
            continue
        # A padded batch costs rows x its longest row: records come in file order, so keep groups modest.
        if group and (len(group) + 1) * max(group_tokens, len(residues) + 2) > batch_tokens:
            flush()
            group_tokens = 0
        group.append((record_id, residues))
        group_tokens = max(group_tokens, len(residues) + 2)
    flush()
    return scores


def check_fasta_path(path) -> None:
    """A FASTA to score must be an existing file: say so, naming it, before reading."""
    path = Path(path)
    if path.is_dir():
        raise PlmscaleError(f"{path} is a directory; give the FASTA file of the sequences to score")
    if not path.exists():
        raise PlmscaleError(f"{path} does not exist; give the FASTA file of the sequences to score")


def read_records(path):
    """(id, residue ids) for each record of a FASTA file; an unknown letter is an error naming file, line,
    record and letter."""
    from plmscale.data.fasta import read_fasta_batches

    check_fasta_path(path)
    for batch in read_fasta_batches(path, check_duplicate_ids=False,
                                    empty_hint="give a FASTA file holding the sequences to score"):
        tokens = batch.seq.translate(ENCODE_TABLE)
        if bytes([INVALID]) in tokens:
            position = tokens.index(bytes([INVALID]))
            i = int(np.searchsorted(batch.offsets, position, side="right")) - 1
            raise PlmscaleError(
                f"{path}, line {int(batch.lines[i])}: record {batch.ids[i].decode(errors='replace')!r} has "
                f"letter {chr(batch.seq[position])!r}, which is not a residue of the model's alphabet "
                f"({RESIDUE_LETTERS}); remove or replace it (X for an unknown residue)")
        ids = np.frombuffer(tokens, dtype=np.uint8)
        offsets = batch.offsets
        for i, record_id in enumerate(batch.ids):
            yield record_id.decode(errors="replace"), ids[offsets[i]:offsets[i + 1]]


def score_fasta(loaded, fasta, write_row, batch_tokens=DEFAULT_BATCH_TOKENS, device="cpu",
                group_size=256) -> int:
    """Score every record of a FASTA file, calling write_row(Score) in file order; returns the count."""
    started = last_report = time.monotonic()
    done = residues_done = 0
    pending = []

    def drain():
        nonlocal done, residues_done
        if loaded.objective == "clm":
            scores = score_batch_clm(loaded, pending, batch_tokens, device)
        else:
            scores = [score_sequence(loaded, i, r, batch_tokens, device) for i, r in pending]
        for score in scores:
            write_row(score)
        done += len(scores)
        residues_done += sum(s.length for s in scores)
        pending.clear()

    for record in read_records(fasta):
        pending.append(record)
        if len(pending) >= group_size or loaded.objective == "mlm":
            drain()
        now = time.monotonic()
        if now - last_report >= PROGRESS_EVERY_S:
            last_report = now
            log.info("%s: %d sequences, %d residues scored (%.0f residues/s)", fasta, done, residues_done,
                     residues_done / max(now - started, 1e-9))
    drain()
    log.info("%s: %d sequences scored in %.1f s", fasta, done, time.monotonic() - started)
    return done


def columns(objective: str) -> list:
    if objective == "clm":
        return ["id", "length", "n_scored", "log_likelihood", "mean_log_likelihood", "perplexity", "windows"]
    return ["id", "length", "n_scored", "pseudo_log_likelihood", "mean_pseudo_log_likelihood", "pseudo_perplexity",
            "windows"]
