"""The protein language model: one transformer backbone for both objectives.

One file, one class per concept (nanoGPT style). The same weights serve causal (CLM) and masked (MLM)
language modelling; only the attention mask differs, which is what makes CLM->MLM transfer a plain
weight copy.

Choices, and why:
- Pre-norm with RMSNorm: pre-norm trains stably without warm-up tricks at every size of the ladder;
  RMSNorm drops LayerNorm's mean-centering and bias (LLaMA-style), one statistic instead of two, and its
  weight-only parameters keep the analytic parameter count simple. Measured on CPU it is as fast as a
  bias-free LayerNorm here (the benchmark uses this model as is).
- Rotary position embeddings (as ESM-2): relative positions, nothing learned, no length embedding table.
- SwiGLU feed-forward, hidden width round_up(8/3 d, 64): the same parameters as a 4d GELU MLP, better loss.
- No dropout, no biases in linear layers: the scaling-law recipe trains < 1 epoch, and biases add nothing
  but kernels.
- Tied input/output embedding (as ESM-2): with a 33-token vocabulary the head is tiny either way; tying
  keeps the checkpoint layout ESM-like and keeps "non-embedding parameters" one unambiguous number.
- Attention: `F.scaled_dot_product_attention`, `is_causal=True` for CLM, bidirectional for MLM. Batches are
  padded (one sequence per row, right-padded). For CLM no mask is needed: a real token never sees a later
  pad. For MLM a key-padding mask hides pads, and is only built when a batch has padding at all, so
  unpadded batches keep the fused kernels.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from plmscale.alphabet import PAD_ID
# The shape and its arithmetic (counts, FFN width, FLOPs per token) are torch-free, in plmscale.arithmetic;
# re-exported here because a model file that names its own FLOPs is what nanoGPT's readers look for.
from plmscale.arithmetic import (ModelShape, default_ffn_dim, flops_per_token_6n,  # noqa: F401
                                 flops_per_token_with_attention)

IGNORE_INDEX = -100


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class Rotary(nn.Module):
    """cos/sin tables for rotary embeddings (rotate-half convention, as ESM-2 and GPT-NeoX)."""

    def __init__(self, head_dim: int, max_len: int = 2048, base: float = 10000.0):
        super().__init__()
        self.head_dim, self.base = head_dim, base
        self._build(max_len)

    def _build(self, length: int):
        inv_freq = 1.0 / (self.base ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))
        angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # (T, head_dim)
        # Not persistent: derived, so never in a checkpoint.
        self.register_buffer("cos", angles.cos()[:, None, :], persistent=False)  # (T, 1, head_dim)
        self.register_buffer("sin", angles.sin()[:, None, :], persistent=False)

    def forward(self, x):
        """x: (..., T, H, head_dim) -> rotated x, same shape and dtype."""
        length = x.shape[-3]
        if length > self.cos.shape[0]:
            self._build(length)
            self.cos, self.sin = self.cos.to(x.device), self.sin.to(x.device)
        cos, sin = self.cos[:length].to(x.dtype), self.sin[:length].to(x.dtype)
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, shape: ModelShape, rotary: Rotary):
        super().__init__()
        self.heads, self.head_dim = shape.heads, shape.head_dim
        self.qkv = nn.Linear(shape.d_model, 3 * shape.d_model, bias=False)  # fused: one matmul, not three
        self.out = nn.Linear(shape.d_model, shape.d_model, bias=False)
        self.rotary = rotary

    def forward(self, x, causal: bool, key_mask=None):
        batch, length, width = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, self.head_dim)
        # Rotate q and k in one pass: the rotary tables index axis -3, so q's and k's heads are laid side by
        # side there as (B, T, 2H, hd), keeping positions on that axis.
        qk = self.rotary(qkv[:, :, :2].reshape(batch, length, 2 * self.heads, self.head_dim))
        q, k = qk.view(batch, length, 2, self.heads, self.head_dim).unbind(2)
        v = qkv[:, :, 2]
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=key_mask, is_causal=causal and key_mask is None)
        return self.out(y.transpose(1, 2).reshape(batch, length, width))


class SwiGLU(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.gate_up = nn.Linear(shape.d_model, 2 * shape.ffn_dim, bias=False)  # fused gate and up
        self.down = nn.Linear(shape.ffn_dim, shape.d_model, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, shape: ModelShape, rotary: Rotary):
        super().__init__()
        self.attn_norm = RMSNorm(shape.d_model)
        self.attn = Attention(shape, rotary)
        self.ffn_norm = RMSNorm(shape.d_model)
        self.ffn = SwiGLU(shape)

    def forward(self, x, causal: bool, key_mask=None):
        x = x + self.attn(self.attn_norm(x), causal, key_mask)
        return x + self.ffn(self.ffn_norm(x))


class Transformer(nn.Module):
    """tokens (B, T) int64 -> logits (B, T, vocab); with labels (IGNORE_INDEX = no loss), also the SUM of
    cross-entropies over labelled positions: the loop divides by the label count of the whole global batch,
    so gradient accumulation and several ranks give exactly the token-weighted mean."""

    def __init__(self, shape: ModelShape, max_len: int = 1024):
        super().__init__()
        self.shape = shape
        self.embed = nn.Embedding(shape.vocab_size, shape.d_model)
        rotary = Rotary(shape.head_dim, max_len)
        self.blocks = nn.ModuleList(Block(shape, rotary) for _ in range(shape.layers))
        self.final_norm = RMSNorm(shape.d_model)
        self._init_weights()

    def _init_weights(self):
        # GPT-2 style: N(0, 0.02), residual output projections scaled by 1/sqrt(2L).
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                continue
            std = 0.02 / math.sqrt(2 * self.shape.layers) if name.endswith(("out.weight", "down.weight")) else 0.02
            nn.init.normal_(param, mean=0.0, std=std)

    def n_params(self, non_embedding: bool = True) -> int:
        total = sum(p.numel() for p in self.parameters())
        return total - self.embed.weight.numel() if non_embedding else total

    def forward(self, tokens, causal: bool, labels=None):
        key_mask = None
        if not causal:
            is_pad = tokens == PAD_ID
            if bool(is_pad.any()):
                key_mask = ~is_pad[:, None, None, :]  # (B, 1, 1, T): True = may attend
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, causal, key_mask)
        logits = F.linear(self.final_norm(x), self.embed.weight)  # tied output embedding
        if labels is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.view(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
        return logits, loss


def build_model(shape: dict | ModelShape, max_len: int = 1024) -> Transformer:
    shape = shape if isinstance(shape, ModelShape) else ModelShape.from_dict(shape)
    return Transformer(shape, max_len=max_len)
