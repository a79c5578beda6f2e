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
- Packed rows (plmscale.train.packing): several sequences per row, each with its document id and its own
  positions (restarting at 0, so a sequence is rotated exactly as in its own padded row). Attention is
  confined to a document (+ causal for CLM): a FlexAttention block mask on CUDA, which skips whole blocks
  of other documents; elsewhere (CPU, or where flex attention is missing) a boolean (B, 1, T, T) mask for
  scaled_dot_product_attention. Pads in a row's tail are a document of their own, so no row of the mask
  is empty. Same weights, same loss per sequence as padded rows.
"""

import functools
import logging
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
log = logging.getLogger(__name__)


def _flex_attention_api():
    """(flex_attention compiled, create_block_mask, BlockMask), or None where this torch has none."""
    try:
        from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
    except ImportError:
        return None
    # Eager flex attention materialises the full score matrix; compiled, it is one fused kernel.
    return torch.compile(flex_attention), create_block_mask, BlockMask


_FLEX = None  # resolved on first CUDA use: the import and compile wrapper cost nothing on CPU runs


def flex_attention_api():
    global _FLEX
    if _FLEX is None:
        _FLEX = _flex_attention_api() or False
    return _FLEX or None


@functools.cache
def flex_attention_works(head_dim: int, dtype: torch.dtype, device: str) -> bool:
    """Whether flex attention runs at this head width and dtype here: tried once on a small causal mask,
    so that a kernel this torch cannot build falls back to the boolean mask instead of failing a run."""
    api = flex_attention_api()
    if api is None:
        return False
    attention, create_block_mask, _ = api
    try:
        q = torch.randn(1, 1, 256, head_dim, device=device, dtype=dtype)
        mask = create_block_mask(lambda b, h, q_index, kv_index: q_index >= kv_index, 1, None, 256, 256,
                                 device=device)
        attention(q, q, q, block_mask=mask)
        return True
    except Exception as error:  # any failure to build the kernel: the boolean mask is always correct
        log.warning("flex attention unavailable for head_dim %d %s on %s (%s: %s); packed rows use a boolean "
                    "attention mask", head_dim, dtype, device, type(error).__name__, error)
        return False


def positions_from_doc_ids(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) document ids, each document a contiguous run -> each token's offset in its document."""
    length = doc_ids.shape[1]
    index = torch.arange(length, device=doc_ids.device).expand_as(doc_ids)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    # The index of the latest document start at or before each token.
    start_index = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    return index - start_index


def document_mask(doc_ids: torch.Tensor, causal: bool, head_dim: int | None = None, use_flex: bool | None = None):
    """Who may attend to whom in packed rows: a FlexAttention BlockMask (CUDA, when flex attention works at
    this head_dim) or a boolean (B, 1, T, T) mask, True = may attend. use_flex forces the choice."""
    if use_flex is None:
        use_flex = doc_ids.is_cuda and head_dim is not None and flex_attention_works(
            head_dim, torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.float32,
            str(doc_ids.device))
    api = flex_attention_api() if use_flex else None
    if api is not None:
        _, create_block_mask, _ = api
        batch, length = doc_ids.shape

        def same_document(b, h, q_index, kv_index):
            allowed = doc_ids[b, q_index] == doc_ids[b, kv_index]
            return allowed & (q_index >= kv_index) if causal else allowed

        return create_block_mask(same_document, batch, None, length, length, device=doc_ids.device)
    allowed = doc_ids[:, :, None] == doc_ids[:, None, :]
    if causal:
        allowed = allowed & torch.ones(allowed.shape[-2:], dtype=torch.bool, device=doc_ids.device).tril()
    return allowed[:, None]


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
        self.register_buffer("cos", angles.cos(), persistent=False)  # (T, head_dim)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x, positions=None):
        """x: (B, T, ..., head_dim), the token axis second -> rotated x, same shape and dtype.

        positions (B, T) int64: each token's position (packed rows restart at 0 per sequence); None means
        0..T-1 in every row. Positions never exceed T-1, so the table only has to cover the row length.
        """
        length = x.shape[1]
        if length > self.cos.shape[0]:
            self._build(length)
            self.cos, self.sin = self.cos.to(x.device), self.sin.to(x.device)
        if positions is None:
            cos, sin = self.cos[:length][None], self.sin[:length][None]  # (1, T, head_dim)
        else:
            cos, sin = self.cos[positions], self.sin[positions]  # (B, T, head_dim)
        # Broadcast over the axes between tokens and head_dim (q/k, heads).
        view = cos.shape[:2] + (1,) * (x.ndim - 3) + cos.shape[-1:]
        cos, sin = cos.view(view).to(x.dtype), sin.view(view).to(x.dtype)
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

    def forward(self, x, causal: bool, mask=None, positions=None):
        """mask: None, a boolean (B, 1, T|1, T) mask (True = may attend; replaces causal), or a BlockMask."""
        batch, length, width = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, self.head_dim)
        qk = self.rotary(qkv[:, :, :2], positions)  # rotate q and k in one pass
        q, k = qk.unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), qkv[:, :, 2].transpose(1, 2)
        if mask is not None and not isinstance(mask, torch.Tensor):  # a FlexAttention BlockMask
            y = flex_attention_api()[0](q, k, v, block_mask=mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
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

    def forward(self, x, causal: bool, mask=None, positions=None):
        x = x + self.attn(self.attn_norm(x), causal, mask, positions)
        return x + self.ffn(self.ffn_norm(x))


class Transformer(nn.Module):
    """tokens (B, T) int64 -> logits (B, T, vocab); with labels (IGNORE_INDEX = no loss), also the SUM of
    cross-entropies over labelled positions: the loop divides by the label count of the whole global batch,
    so gradient accumulation and several ranks give exactly the token-weighted mean.

    Packed rows pass doc_ids (B, T): attention stays inside a document, and rotary positions restart per
    document (positions, else derived from doc_ids). Without doc_ids, one sequence per row as before."""

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

    def compile(self, *args, **kwargs):
        """nn.Module.compile, with the document mask built eagerly (once per micro-batch; compiled blocks
        take it as an input). Marked here, not at import: torch.compiler.disable imports torch._dynamo, ~2 s
        of CPU that an eager run would pay for nothing."""
        self._document_mask = torch.compiler.disable(document_mask)
        super().compile(*args, **kwargs)

    def _document_mask(self, *args):
        return document_mask(*args)

    def n_params(self, non_embedding: bool = True) -> int:
        total = sum(p.numel() for p in self.parameters())
        return total - self.embed.weight.numel() if non_embedding else total

    def forward(self, tokens, causal: bool, labels=None, doc_ids=None, positions=None):
        mask = None
        if doc_ids is not None:
            mask = self._document_mask(doc_ids, causal, self.shape.head_dim)
            if positions is None:
                positions = positions_from_doc_ids(doc_ids)
        elif not causal:
            is_pad = tokens == PAD_ID
            if bool(is_pad.any()):
                mask = ~is_pad[:, None, None, :]  # (B, 1, 1, T): True = may attend
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, causal, mask, positions)
        logits = F.linear(self.final_norm(x), self.embed.weight)  # tied output embedding
        if labels is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.view(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
        return logits, loss


def build_model(shape: dict | ModelShape, max_len: int = 1024) -> Transformer:
    shape = shape if isinstance(shape, ModelShape) else ModelShape.from_dict(shape)
    return Transformer(shape, max_len=max_len)
