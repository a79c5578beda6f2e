"""Packed sequences with document masking: same loss as padding, no attention across documents, positions
restarting per sequence, a packer that keeps every sequence once, and packed training runs that resume."""

import numpy as np
import pytest
import torch

from plmscale.alphabet import PAD_ID
from plmscale.model import Rotary, build_model


def _tokens(batch, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, 24, (batch, length), generator=g)


# ---- rotary positions ------------------------------------------------------------------------------------------
def test_rotary_scores_depend_on_relative_position_of_each_token():
    # Shaped as the attention layer calls it: (B, T, q/k, heads, head_dim). Every token carries the same q and k,
    # so a score can only vary through the positions.
    rotary = Rotary(head_dim=8, max_len=16)
    g = torch.Generator().manual_seed(0)
    qk = torch.randn(1, 1, 2, 1, 8, generator=g).expand(1, 12, 2, 1, 8)
    q, k = rotary(qk).unbind(2)
    scores = torch.einsum("bihd,bjhd->ij", q, k)
    for offset in (-3, 0, 2, 5):
        diagonal = torch.diagonal(scores, offset)
        torch.testing.assert_close(diagonal, diagonal[0].expand_as(diagonal), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(torch.diagonal(scores, 0)[0], torch.diagonal(scores, 3)[0])


def test_mlm_model_sees_token_order():
    # Regression: the rotary table was indexed by the q/k axis instead of the token axis, so no position
    # reached attention and a bidirectional model was blind to residue order.
    torch.manual_seed(0)
    model = build_model({"layers": 2, "d_model": 32, "heads": 2}).eval()
    with torch.no_grad():  # sharper attention than at init, so that order has a visible effect
        for block in model.blocks:
            block.attn.qkv.weight.mul_(30)
    tokens = _tokens(1, 10)
    order = torch.arange(9, -1, -1)
    with torch.no_grad():
        reversed_then_logits = model(tokens[:, order], causal=False)[0]
        logits_then_reversed = model(tokens, causal=False)[0, order]
    assert not torch.allclose(reversed_then_logits, logits_then_reversed, atol=1e-2)
