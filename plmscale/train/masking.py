"""MLM corruption (BERT/ESM recipe): 15% of real residues, of which 80% <mask>, 10% random, 10% kept."""

import numpy as np

from plmscale.alphabet import CLS_ID, EOS_ID, MASK_ID, PAD_ID, RESIDUE_IDS, STANDARD_RESIDUES
from plmscale.model import IGNORE_INDEX

# Random replacements are drawn from the 20 standard residues: a rare ambiguity letter (X, B, ...) as a
# "random" token would teach the model nothing about proteins.
_RANDOM_IDS = RESIDUE_IDS[: len(STANDARD_RESIDUES)].astype(np.int64)
_SPECIAL = np.array([CLS_ID, EOS_ID, PAD_ID], dtype=np.int64)


def mask_tokens(tokens: np.ndarray, rng: np.random.Generator, mask_prob: float = 0.15,
                mask_fraction: float = 0.8, random_fraction: float = 0.1):
    """tokens: 1-D int64 framed sequence -> (inputs, labels).

    Each real position (never <cls>, <eos> or <pad>) is chosen independently with probability mask_prob;
    labels hold the original token at chosen positions and IGNORE_INDEX elsewhere, so the loss is on
    chosen positions only.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    real = ~np.isin(tokens, _SPECIAL)
    chosen = real & (rng.random(tokens.shape[0]) < mask_prob)
    labels = np.where(chosen, tokens, IGNORE_INDEX)
    inputs = tokens.copy()
    action = rng.random(tokens.shape[0])
    to_mask = chosen & (action < mask_fraction)
    to_random = chosen & (action >= mask_fraction) & (action < mask_fraction + random_fraction)
    inputs[to_mask] = MASK_ID
    inputs[to_random] = rng.choice(_RANDOM_IDS, size=int(to_random.sum()))
    return inputs, labels


def causal_labels(tokens: np.ndarray) -> np.ndarray:
    """Next-token targets: labels[t] = tokens[t+1]; the last position predicts nothing."""
    tokens = np.asarray(tokens, dtype=np.int64)
    labels = np.full(tokens.shape[0], IGNORE_INDEX, dtype=np.int64)
    labels[:-1] = tokens[1:]
    labels[labels == PAD_ID] = IGNORE_INDEX
    return labels
