"""Model shapes as numbers: parameter counts, FLOPs per token, a shape for any target size, peak lr.

The grid plans hundreds of runs without building a single torch module, so the counts here are
analytic. When plmscale.model (the training helper's module) is importable, its `ModelShape` is the
single source of truth and this file only forwards to it; the fallback formula below describes the
same architecture (pre-norm blocks, no biases, GLU feed-forward, RMSNorm weights only) and a test
keeps the two equal.
"""

import math

from plmscale.alphabet import VOCAB_SIZE

HEAD_DIM = 64  # every derived shape uses 64-wide heads, as ESM-2 and the paper's ladder
WIDTH_MULTIPLE = 64  # d_model of a derived shape is a multiple of this (tensor-core friendly)


def default_ffn_dim(d_model: int) -> int:
    """GLU hidden width: 8/3·d rounded up to 64, which keeps 4d² + 3·d·ffn ≈ 12·d² per layer."""
    return int(math.ceil(8 * d_model / 3 / 64) * 64)


def normalise_shape(shape: dict) -> dict:
    """A ladder entry with every field explicit: {layers, d_model, heads, ffn_dim}."""
    ffn_dim = shape.get("ffn_dim") or default_ffn_dim(shape["d_model"])
    return {"layers": int(shape["layers"]), "d_model": int(shape["d_model"]),
            "heads": int(shape["heads"]), "ffn_dim": int(ffn_dim)}


def _model_shape_class():
    """plmscale.model.ModelShape when the training module (and torch) is present, else None."""
    try:
        from plmscale.model import ModelShape
    except ImportError:
        return None
    return ModelShape


def _analytic_non_embedding(layers: int, d_model: int, ffn_dim: int) -> int:
    # Per block: q, k, v, out projections (4·d²), GLU gate/up/down (3·d·ffn), two RMSNorm weights (2·d);
    # plus the final norm. Token embeddings and the (tied) output head are excluded, as in the paper.
    return layers * (4 * d_model * d_model + 3 * d_model * ffn_dim + 2 * d_model) + d_model


def _model_shape(shape: dict):
    cls = _model_shape_class()
    if cls is None:
        return None
    return cls.from_dict(normalise_shape(shape))


def n_params(shape: dict) -> int:
    """Non-embedding parameters (the N of the scaling laws), exact for the module that trains."""
    model_shape = _model_shape(shape)
    if model_shape is not None:
        return int(model_shape.n_params(non_embedding=True))
    shape = normalise_shape(shape)
    return _analytic_non_embedding(shape["layers"], shape["d_model"], shape["ffn_dim"])


def n_params_with_embeddings(shape: dict) -> int:
    """All parameters: the tied 33-token embedding/output matrix added."""
    model_shape = _model_shape(shape)
    if model_shape is not None:
        return int(model_shape.n_params(non_embedding=False))
    shape = normalise_shape(shape)
    return n_params(shape) + VOCAB_SIZE * shape["d_model"]


def flops_per_token(shape: dict, seq_len: int, definition: str = "6nd") -> float:
    """Training FLOPs per token: 6·N (the paper's C = 6ND) or 6·N + 12·L·d·T (attention scores too)."""
    n = n_params(shape)
    if definition == "6nd":
        return 6.0 * n
    if definition == "with_attention":
        shape = normalise_shape(shape)
        return 6.0 * n + 12.0 * shape["layers"] * shape["d_model"] * seq_len
    raise ValueError(f"unknown flops definition {definition!r} (expected 6nd or with_attention)")


# Peak learning rate by non-embedding size, DESIGN.md's table of the paper's recipe. Between anchors
# the rate is interpolated linearly in log N, so neighbouring ladder sizes get neighbouring rates.
_LR_ANCHORS = ((50e6, 6e-4), (100e6, 5.5e-4), (200e6, 5e-4), (470e6, 4e-4), (880e6, 3.5e-4), (1e9, 3e-4))


def _interpolate_in_log_n(n: float, anchors, log_values: bool = False) -> float:
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


def lr_for_params(n: float) -> float:
    return round(_interpolate_in_log_n(n, _LR_ANCHORS), 10)


# Aspect ratio (d_model / layers) of the paper's ladder, by size: small models are shallow and narrow
# (8 layers at 3.5M-25M), the 10B model is 47 layers × 4352. Interpolated in log N.
_ASPECT_ANCHORS = ((3.5e6, 24.0), (25e6, 64.0), (85e6, 64.0), (230e6, 37.0), (550e6, 46.0),
                   (2.4e9, 85.0), (10.7e9, 92.6))


def _aspect_for(n: float) -> float:
    return _interpolate_in_log_n(n, _ASPECT_ANCHORS, log_values=True)


def shape_for_params(target_n: float, aspect: float | None = None, ffn_multiple: int = 8,
                     min_layers: int = 2, tolerance: float = 0.005) -> dict:
    """A shape whose non-embedding count is close to target_n.

    d_model is a multiple of 64 with 64-wide heads; the depth follows the aspect ratio (d_model/layers)
    of the paper's ladder at that size unless `aspect` is given; then ffn_dim (a multiple of
    `ffn_multiple`, near 8/3·d) absorbs what the coarse choice of depth and width left over.
    """
    if target_n <= 0:
        raise ValueError("target_n must be positive")
    aspect = aspect or _aspect_for(target_n)
    best = None
    # ~12·L·d² = N with d = aspect·L gives the ideal width; try widths around it and every sane depth.
    ideal_d = (target_n * aspect / 12) ** (1 / 3)
    center = max(1, round(ideal_d / WIDTH_MULTIPLE))
    for k in range(max(1, center - 3), center + 4):
        d = k * WIDTH_MULTIPLE
        ideal_layers = target_n / (12 * d * d)
        for layers in {max(min_layers, math.floor(ideal_layers)), max(min_layers, math.ceil(ideal_layers))}:
            fixed = layers * (4 * d * d + 2 * d) + d
            ffn = (target_n - fixed) / (3 * d * layers)
            ffn = max(ffn_multiple, round(ffn / ffn_multiple) * ffn_multiple)
            if not (1.5 * d <= ffn <= 4 * d):  # a GLU far from 8/3·d is no longer the same architecture
                continue
            shape = {"layers": layers, "d_model": d, "heads": d // HEAD_DIM, "ffn_dim": int(ffn)}
            error = abs(n_params(shape) - target_n) / target_n
            shape_aspect = d / layers
            # Any error under `tolerance` counts as a match; among matches the ladder-like aspect wins.
            score = (max(error, tolerance), abs(math.log(shape_aspect / aspect)), error)
            if best is None or score < best[0]:
                best = (score, shape)
    if best is None:
        raise ValueError(f"no shape with 64-wide heads fits {target_n:.3g} non-embedding parameters")
    return best[1]
