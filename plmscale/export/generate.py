"""`plmscale generate --run RUN -n 10`: protein sequences sampled from a causal (CLM) run, as FASTA.

Sampling starts from <cls>, as every training sequence did, and draws one token at a time from the model's
next-token distribution restricted to residue letters and <eos> (the other special tokens are not protein),
with temperature and nucleus (top-p) filtering. A sequence ends at <eos> (never before its first residue) or
at --max-length residues (default and upper limit: the run's context, seq_len - 2).

Sequences are sampled in batches of at most BATCH_SIZE, each from its own torch generator: batch 0 seeded
by --seed (so up to BATCH_SIZE sequences are exactly those one batch of all n gave before batching), batch
k by a seed derived from (--seed, k). The same run, n, settings and seed give the same FASTA. Each batch is
written out as it finishes, so memory stays bounded whatever n.

The model has no key/value cache: each new token runs the whole prefix again, which is fine for the small
models of a scaling grid and the context lengths of proteins.
"""

import logging
import math

import numpy as np

from plmscale.alphabet import CLS_ID, EOS_ID, PAD_ID, RESIDUE_IDS, TOKENS
from plmscale.errors import PlmscaleError

log = logging.getLogger("plmscale.generate")
ALLOWED_IDS = sorted(int(i) for i in RESIDUE_IDS) + [EOS_ID]
# Sequences per forward batch: memory is batch x context x vocabulary per step, whatever n is.
BATCH_SIZE = 256


def filter_top_p(probs, top_p: float):
    """Keep the smallest set of most likely tokens whose probability reaches top_p; renormalise."""
    import torch

    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the tokens ranked above
    sorted_probs = torch.where(before < top_p, sorted_probs, torch.zeros_like(sorted_probs))
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return kept / kept.sum(dim=-1, keepdim=True)


def check_settings(loaded, n: int, max_length, temperature: float, top_p: float) -> int:
    """Validate sampling settings against a LoadedRun; returns max_length (the run's context if None)."""
    if loaded.objective != "clm":
        raise PlmscaleError(f"run {loaded.run_id} is a masked language model (objective {loaded.objective}): it "
                            f"does not model sequences left to right, so it cannot generate; use a CLM run")
    max_length = loaded.max_residues if max_length is None else int(max_length)
    if not 1 <= max_length <= loaded.max_residues:
        raise PlmscaleError(f"--max-length {max_length}: give 1 to {loaded.max_residues} residues (run "
                            f"{loaded.run_id} was trained on sequences of up to {loaded.max_residues} residues)")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise PlmscaleError(f"--temperature {temperature}: give 0 (always the most likely token) or a finite "
                            f"positive number")
    if not 0 < top_p <= 1:
        raise PlmscaleError(f"--top-p {top_p}: give a probability in (0, 1]")
    if n < 1:
        raise PlmscaleError(f"-n {n}: give at least 1")
    return max_length


def batch_seed(seed: int, batch: int) -> int:
    """The generator seed of batch `batch`: the seed itself for batch 0, a 63-bit mix of both after."""
    if batch == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, batch]).generate_state(1, np.uint64)[0]
               >> np.uint64(1))


def iter_samples(loaded, n: int, max_length: int | None = None, temperature: float = 1.0, top_p: float = 1.0,
                 seed: int = 0, device="cpu", batch_size: int = None):
    """n sampled sequences of a causal LoadedRun, yielded batch by batch: lists of (residue ids as uint8
    array, ended_with_eos), at most batch_size (default BATCH_SIZE) per list."""
    max_length = check_settings(loaded, n, max_length, temperature, top_p)
    batch_size = int(batch_size or BATCH_SIZE)
    for batch, start in enumerate(range(0, n, batch_size)):
        yield _sample_batch(loaded, min(batch_size, n - start), max_length, temperature, top_p,
                            batch_seed(seed, batch), device)


def sample(loaded, n: int, max_length: int | None = None, temperature: float = 1.0, top_p: float = 1.0,
           seed: int = 0, device="cpu", batch_size: int = None) -> list:
    """n sampled sequences of a causal LoadedRun: [(residue ids as uint8 array, ended_with_eos)]."""
    return [s for part in iter_samples(loaded, n, max_length, temperature, top_p, seed, device, batch_size)
            for s in part]


def _sample_batch(loaded, n, max_length, temperature, top_p, seed, device) -> list:
    import torch

    generator = torch.Generator(device=device).manual_seed(int(seed))
    disallowed = torch.ones(len(TOKENS), dtype=torch.bool, device=device)
    disallowed[ALLOWED_IDS] = False
    tokens = torch.full((n, 1), CLS_ID, dtype=torch.long, device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    for step in range(max_length + 1):  # max_length residues, then one more step in which <eos> may come
        with torch.no_grad():
            logits = loaded.model(tokens, causal=True)[:, -1].float()
        logits = logits.masked_fill(disallowed, float("-inf"))
        if step == 0:  # a protein has at least one residue: an empty FASTA record helps nobody
            logits[:, EOS_ID] = float("-inf")
        if temperature == 0:
            chosen = logits.argmax(dim=-1)
        else:
            probs = filter_top_p(torch.softmax(logits / temperature, dim=-1), top_p)
            chosen = torch.multinomial(probs, 1, generator=generator)[:, 0]
        chosen = torch.where(finished, torch.full_like(chosen, PAD_ID), chosen)
        finished |= chosen == EOS_ID
        tokens = torch.cat([tokens, chosen[:, None]], dim=1)
        if bool(finished.all()):
            break
    out = []
    for row in tokens[:, 1:].cpu().numpy():
        ended = EOS_ID in row
        stop = int(np.argmax(row == EOS_ID)) if ended else int(np.argmax(row == PAD_ID)) if PAD_ID in row \
            else len(row)
        # A residue drawn in the extra last step (where only <eos> would have kept the sequence) is dropped.
        out.append((row[:min(stop, max_length)].astype(np.uint8), ended))
    return out


def to_fasta(sequences, run_id: str, seed: int, first_index: int = 0) -> str:
    """FASTA text of sampled sequences, numbered from first_index (a later batch continues the count)."""
    from plmscale.alphabet import decode

    lines = []
    for index, (residues, ended) in enumerate(sequences, start=first_index):
        stop = "eos" if ended else "max_length"
        lines.append(f">{run_id}_sample{index} seed={seed} length={len(residues)} stop={stop}")
        lines.append(decode(residues))
    return "".join(line + "\n" for line in lines)


def write_samples(write, loaded, n: int, seed: int, **settings) -> int:
    """Sample n sequences in batches and write(FASTA text) each batch as it finishes; returns the count."""
    done = 0
    for part in iter_samples(loaded, n, seed=seed, **settings):
        write(to_fasta(part, loaded.run_id, seed, first_index=done))
        done += len(part)
        log.info("%d of %d sequences sampled", done, n)
    return done
