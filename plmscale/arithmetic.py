"""Model arithmetic without torch: the shape of a model, its parameter counts, FLOPs per token, peak-lr laws.

The grid plans hundreds of runs, the importer and the plots convert sizes, and the trainer builds the
module: all of them count through this file, so a parameter or a FLOP is defined once. The counts
describe plmscale.model's architecture (pre-norm blocks, fused qkv, SwiGLU, RMSNorm weights only, no
biases, tied 33-token embedding); tests/test_model.py checks them against the built module and a FLOP
counter.
"""

import math
from dataclasses import asdict, dataclass

from plmscale.alphabet import VOCAB_SIZE

FFN_MULTIPLE = 64  # the default GLU width is rounded up to this (tensor-core friendly)
FLOPS_PER_PARAM_TOKEN = 6.0  # the paper's C = 6·N·D: forward 2N + backward 4N per token


def default_ffn_dim(d_model: int, multiple: int = FFN_MULTIPLE) -> int:
    """GLU hidden width: 8/3·d (the parameters of a 4·d MLP), rounded up to a multiple of 64."""
    return int(math.ceil(8 * d_model / 3 / multiple) * multiple)


@dataclass(frozen=True)
class ModelShape:
    """layers × d_model with `heads` attention heads and a GLU of width ffn_dim (default 8/3·d, rounded up)."""

    layers: int
    d_model: int
    heads: int
    ffn_dim: int | None = None
    vocab_size: int = VOCAB_SIZE

    def __post_init__(self):
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        if (self.d_model // self.heads) % 2:
            raise ValueError(f"head dimension {self.d_model // self.heads} must be even for rotary embeddings")
        if self.ffn_dim is None:
            object.__setattr__(self, "ffn_dim", default_ffn_dim(self.d_model))

    @classmethod
    def from_dict(cls, shape: dict) -> "ModelShape":
        return cls(layers=int(shape["layers"]), d_model=int(shape["d_model"]), heads=int(shape["heads"]),
                   ffn_dim=None if shape.get("ffn_dim") is None else int(shape["ffn_dim"]))

    def to_dict(self) -> dict:
        """{layers, d_model, heads, ffn_dim}: every field explicit, as a ladder entry."""
        out = asdict(self)
        out.pop("vocab_size")
        return out

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    def n_params(self, non_embedding: bool = True) -> int:
        """Exact parameter count; equals Transformer(shape).n_params() (tested).

        Non-embedding (the N of the scaling laws, as the paper): per block the q, k, v and output
        projections (4·d²), the GLU gate/up/down (3·d·ffn) and two RMSNorm weights (2·d), plus the final
        norm. The tied embedding/output matrix adds vocab·d.
        """
        d, f = self.d_model, self.ffn_dim
        total = self.layers * (4 * d * d + 3 * d * f + 2 * d) + d
        return total if non_embedding else total + self.vocab_size * d

    def flops_per_token(self, seq_len: int, definition: str = "6nd") -> float:
        """Training FLOPs per token under a budget definition (FLOPS_DEFINITIONS): "6nd" (the paper's C = 6ND),
        "with_attention" (6N + attention scores and values) or "chinchilla" (Hoffmann et al.'s count)."""
        n = self.n_params()
        if definition == "6nd":
            return flops_per_token_6n(n)
        if definition == "with_attention":
            return flops_per_token_with_attention(n, self.layers, self.d_model, seq_len)
        if definition == "chinchilla":
            return flops_per_token_chinchilla(self, seq_len)
        raise ValueError(f"unknown flops definition {definition!r} (expected one of {', '.join(FLOPS_DEFINITIONS)})")


# The budget definitions a grid can be laid out in (train.flops_definition) and every run records.
FLOPS_DEFINITIONS = ("6nd", "with_attention", "chinchilla")


def flops_per_token_6n(n_params: float) -> float:
    """The paper's convention: 6·N per token (forward 2N + backward 4N), N without embeddings."""
    return FLOPS_PER_PARAM_TOKEN * n_params


def flops_per_token_with_attention(n_params: float, layers: int, d_model: int, seq_len: int) -> float:
    """6·N plus attention scores and values: 12·L·d·T per token (forward 4·L·d·T, backward twice that)."""
    return FLOPS_PER_PARAM_TOKEN * n_params + 12.0 * layers * d_model * seq_len


def flops_per_token_chinchilla(shape: ModelShape, seq_len: int) -> float:
    """Hoffmann et al. 2022 (Chinchilla), Appendix F, Table 4, per token, for plmscale's block, times 3.

    The table counts per sequence of length T (here divided by T) the forward matmuls:
      embeddings                 2·V·d       (the one-hot product; plmscale's embedding is tied)
      per layer: q, k, v         2·3·d·(h·dh)
                 scores q·kᵀ     2·T·(h·dh)
                 softmax         3·h·T
                 softmax·values  2·T·(h·dh)
                 output          2·(h·dh)·d
                 feed-forward    2·3·d·ffn   (GLU: gate, up and down; the table's 2 matrices, 2·2·d·ffn)
      logits                     2·d·V
    and backward = 2 × forward. Like the table it leaves out norms (RMSNorm), the GLU's elementwise
    product, rotary embeddings and the causal mask's skipped half (scores count the full T×T)."""
    d, h, dh, ffn, v, t = shape.d_model, shape.heads, shape.head_dim, shape.ffn_dim, shape.vocab_size, seq_len
    attention = 2 * 3 * d * (h * dh) + 2 * t * (h * dh) + 3 * h * t + 2 * t * (h * dh) + 2 * (h * dh) * d
    feed_forward = 2 * 3 * d * ffn
    forward = 2 * v * d + shape.layers * (attention + feed_forward) + 2 * d * v
    return 3.0 * forward


# ---- peak learning rate by model size -----------------------------------------------------------------

# Cheng et al. 2024's recipe (non-embedding parameters, peak lr): 6e-4 up to 50M ... 3e-4 from 1B.
CHENG2024_LR_ANCHORS = ((50e6, 6e-4), (100e6, 5.5e-4), (200e6, 5e-4), (470e6, 4e-4), (880e6, 3.5e-4),
                        (1e9, 3e-4))


def interpolate_in_log_n(n: float, anchors, log_values: bool = False) -> float:
    """The anchors' value at n: piecewise linear in log n (values linear, or in log space), clamped at
    the ends."""
    if n <= anchors[0][0]:
        return anchors[0][1]
    for (n0, v0), (n1, v1) in zip(anchors, anchors[1:]):
        if n <= n1:
            t = (math.log(n) - math.log(n0)) / (math.log(n1) - math.log(n0))
            if log_values:
                return math.exp(math.log(v0) + t * (math.log(v1) - math.log(v0)))
            return v0 + t * (v1 - v0)
    return anchors[-1][1]


def peak_lr_cheng2024(n_params: float) -> float:
    """The paper's table, linear in log N between anchors (neighbouring sizes get neighbouring rates)."""
    return round(interpolate_in_log_n(n_params, CHENG2024_LR_ANCHORS), 10)


def peak_lr_power_law(n_params: float, lr_ref: float, n_ref: float, exponent: float = -1 / 3) -> float:
    """lr = lr_ref · (N / n_ref)^exponent: one constant per study, the slope of μP-style width scaling."""
    if n_params <= 0 or n_ref <= 0 or lr_ref <= 0:
        raise ValueError(f"peak_lr_power_law needs positive n_params, n_ref and lr_ref "
                         f"(got {n_params}, {n_ref}, {lr_ref})")
    return lr_ref * (n_params / n_ref) ** exponent
