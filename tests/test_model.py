"""The model: exact parameter counts, no causal leakage, padding masked, analytic FLOPs match a counter."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from plmscale.alphabet import PAD_ID
from plmscale.model import (ModelShape, build_model, default_ffn_dim, flops_per_token_6n,
                            flops_per_token_with_attention)

SHAPES = [ModelShape(2, 32, 2), ModelShape(3, 64, 4, ffn_dim=100), ModelShape(6, 320, 20), ModelShape(8, 192, 3)]


def test_default_ffn_is_8_thirds_rounded_to_64():
    assert default_ffn_dim(192) == 512
    assert default_ffn_dim(320) == 896
    assert default_ffn_dim(32) == 128


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_analytic_parameter_count_equals_the_module(shape):
    model = build_model(shape)
    assert shape.n_params(non_embedding=True) == model.n_params(non_embedding=True)
    assert shape.n_params(non_embedding=False) == model.n_params(non_embedding=False)
    assert model.n_params(False) - model.n_params(True) == 33 * shape.d_model  # tied: one embedding table


def test_paper_shape_is_12_L_d2_plus_norms():
    shape = ModelShape(8, 192, 3)  # the paper's "3M" (3,538,944 = 12·L·d² without norm weights)
    assert shape.n_params() == 3_538_944 + (2 * 8 + 1) * 192


def test_shape_rejects_odd_head_dim_and_indivisible_heads():
    with pytest.raises(ValueError):
        ModelShape(2, 30, 4)
    with pytest.raises(ValueError):
        ModelShape(2, 30, 2)  # head dim 15 is odd: rotary needs pairs


def _tokens(batch=2, length=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, 24, (batch, length), generator=g)


def test_clm_has_no_causal_leakage_and_mlm_sees_both_ways():
    torch.manual_seed(0)
    model = build_model({"layers": 2, "d_model": 32, "heads": 2}).eval()
    tokens = _tokens()
    changed = tokens.clone()
    t = 13
    changed[:, t] = (changed[:, t] - 4 + 1) % 20 + 4
    with torch.no_grad():
        a, b = model(tokens, causal=True), model(changed, causal=True)
        assert torch.equal(a[:, :t], b[:, :t])  # bit-identical before the change
        assert not torch.allclose(a[:, t:], b[:, t:])
        a, b = model(tokens, causal=False), model(changed, causal=False)
        assert not torch.allclose(a[:, :t], b[:, :t], atol=1e-6)  # bidirectional: earlier positions see it


def test_mlm_padding_is_invisible_to_real_tokens():
    torch.manual_seed(0)
    model = build_model({"layers": 2, "d_model": 32, "heads": 2}).eval()
    tokens = _tokens(1, 10)
    padded = torch.cat([tokens, torch.full((1, 6), PAD_ID)], dim=1)
    with torch.no_grad():
        plain = model(tokens, causal=False)
        with_pad = model(padded, causal=False)[:, :10]
    torch.testing.assert_close(plain, with_pad, atol=1e-5, rtol=1e-5)


def test_loss_is_a_sum_over_labelled_positions():
    torch.manual_seed(0)
    model = build_model({"layers": 1, "d_model": 32, "heads": 2})
    tokens = _tokens(2, 8)
    labels = tokens.clone()
    labels[:, :4] = -100
    logits, loss = model(tokens, causal=False, labels=labels)
    expected = torch.nn.functional.cross_entropy(logits[:, 4:].reshape(-1, 33), tokens[:, 4:].reshape(-1),
                                                 reduction="sum")
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("causal", [True, False])
def test_analytic_flops_match_a_flop_counter(causal):
    shape = ModelShape(4, 128, 4)
    model = build_model(shape)
    batch, length = 2, 256
    tokens = _tokens(batch, length)
    counter = FlopCounterMode(display=False)
    # The math backend decomposes attention into matmuls the counter sees (it has no formula for the CPU
    # flash kernel).
    with counter, sdpa_kernel(SDPBackend.MATH):
        _, loss = model(tokens, causal=causal, labels=tokens)
        loss.backward()
    counted = counter.get_total_flops() / (batch * length)
    n = shape.n_params()
    head = 6 * shape.d_model * shape.vocab_size  # tied output projection: embedding, not in N
    analytic = flops_per_token_with_attention(n, shape.layers, shape.d_model, length)
    assert counted == pytest.approx(analytic + head, rel=0.02)
    assert counted == pytest.approx(analytic, rel=0.05)
    assert flops_per_token_6n(n) == 6 * n
    assert flops_per_token_6n(n) < counted  # attention is real work on top of 6N
