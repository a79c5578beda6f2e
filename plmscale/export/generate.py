"""`plmscale generate --run RUN -n 10`: protein sequences sampled from a causal (CLM) run, as FASTA.

Sampling starts from <cls>, as every training sequence did, and draws one token at a time from the model's
next-token distribution restricted to residue letters and <eos> (the other special tokens are not protein),
with temperature and nucleus (top-p) filtering. A sequence ends at <eos> (never before its first residue) or
at --max-length residues (default and upper limit: the run's context, seq_len - 2). All n sequences are
sampled as one batch from one torch generator seeded by --seed, so the same run, n, settings and seed give
the same FASTA.

The model has no key/value cache: each new token runs the whole prefix again, which is fine for the small
models of a scaling grid and the context lengths of proteins.
"""

import argparse
import logging
import os
import sys

import numpy as np

from plmscale.alphabet import CLS_ID, EOS_ID, PAD_ID, RESIDUE_IDS, TOKENS
from plmscale.errors import PlmscaleError

log = logging.getLogger("plmscale.generate")
ALLOWED_IDS = sorted(int(i) for i in RESIDUE_IDS) + [EOS_ID]


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


def sample(loaded, n: int, max_length: int | None = None, temperature: float = 1.0, top_p: float = 1.0,
           seed: int = 0, device="cpu") -> list:
    """n sampled sequences of a causal LoadedRun: [(residue ids as uint8 array, ended_with_eos)]."""
    import torch

    if loaded.objective != "clm":
        raise PlmscaleError(f"run {loaded.run_id} is a masked language model (objective {loaded.objective}): it "
                            f"does not model sequences left to right, so it cannot generate; use a CLM run")
    max_length = loaded.max_residues if max_length is None else int(max_length)
    if not 1 <= max_length <= loaded.max_residues:
        raise PlmscaleError(f"--max-length {max_length}: give 1 to {loaded.max_residues} residues (run "
                            f"{loaded.run_id} was trained on sequences of up to {loaded.max_residues} residues)")
    if temperature < 0:
        raise PlmscaleError(f"--temperature {temperature}: give 0 (always the most likely token) or more")
    if not 0 < top_p <= 1:
        raise PlmscaleError(f"--top-p {top_p}: give a probability in (0, 1]")
    if n < 1:
        raise PlmscaleError(f"-n {n}: give at least 1")
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


def to_fasta(sequences, run_id: str, seed: int) -> str:
    from plmscale.alphabet import decode

    lines = []
    for index, (residues, ended) in enumerate(sequences):
        stop = "eos" if ended else "max_length"
        lines.append(f">{run_id}_sample{index} seed={seed} length={len(residues)} stop={stop}")
        lines.append(decode(residues))
    return "".join(line + "\n" for line in lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True,
                        help="a CLM run: run id (with --results), its final.pt, or a `plmscale export` directory")
    parser.add_argument("--results", default="results", help="results folder of the workflow (default: results)")
    parser.add_argument("--metrics", default=None, help="the run's metrics.json, when --run is a moved final.pt")
    parser.add_argument("-n", type=int, default=10, help="number of sequences (default 10)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="most residues per sequence (default and limit: the run's context, seq_len - 2)")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = greedy (default 1)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1: off)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one, logged)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu: bit-for-bit reproducible)")


def main(args: argparse.Namespace) -> int:
    from plmscale.export.runs import load_run
    from plmscale.logging_setup import log_to_file

    log_to_file()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    loaded = load_run(args.run, args.results, args.metrics)
    loaded.model.to(args.device)
    log.info("sampling %d sequences from %s with seed %d", args.n, loaded.run_id, seed)
    sequences = sample(loaded, args.n, args.max_length, args.temperature, args.top_p, seed, args.device)
    sys.stdout.write(to_fasta(sequences, loaded.run_id, seed))
    return 0
