"""Ladder shapes for the grid: config entries as ModelShapes, and a shape for any target size.

Counting (parameters, FLOPs per token) lives in plmscale.arithmetic, torch-free; the functions below take
a ladder entry (a dict, ffn_dim optional) and forward to it.
"""

import math

from plmscale.arithmetic import ModelShape, interpolate_in_log_n
from plmscale.errors import PlmscaleError

HEAD_DIM = 64  # every derived shape uses 64-wide heads, as ESM-2 and the paper's ladder
WIDTH_MULTIPLE = 64  # d_model of a derived shape is a multiple of this (tensor-core friendly)


def ladder_shape(name: str, entry: dict, where: str = "config") -> ModelShape:
    """The ModelShape of train.ladder.<name>; an impossible shape is an error that names the key."""
    try:
        return ModelShape.from_dict(entry)
    except ValueError as error:
        raise PlmscaleError(f"{where}: train.ladder.{name} {dict(entry)} is not a valid shape: {error}; "
                            f"pick heads that divide d_model into an even head dimension (e.g. 64)") from None


def normalise_shape(shape: dict) -> dict:
    """A ladder entry with every field explicit: {layers, d_model, heads, ffn_dim}."""
    return ModelShape.from_dict(shape).to_dict()


def n_params(shape: dict) -> int:
    """Non-embedding parameters (the N of the scaling laws), exact for the module that trains."""
    return ModelShape.from_dict(shape).n_params(non_embedding=True)


def n_params_with_embeddings(shape: dict) -> int:
    """All parameters: the tied 33-token embedding/output matrix added."""
    return ModelShape.from_dict(shape).n_params(non_embedding=False)


def flops_per_token(shape: dict, seq_len: int, definition: str = "6nd") -> float:
    """Training FLOPs per token: 6·N (the paper's C = 6ND) or 6·N + 12·L·d·T (attention scores too)."""
    return ModelShape.from_dict(shape).flops_per_token(seq_len, definition)


# Aspect ratio (d_model / layers) of the paper's ladder, by size: small models are shallow and narrow
# (8 layers at 3.5M-25M), the 10B model is 47 layers × 4352. Interpolated in log N.
_ASPECT_ANCHORS = ((3.5e6, 24.0), (25e6, 64.0), (85e6, 64.0), (230e6, 37.0), (550e6, 46.0),
                   (2.4e9, 85.0), (10.7e9, 92.6))


def _aspect_for(n: float) -> float:
    return interpolate_in_log_n(n, _ASPECT_ANCHORS, log_values=True)


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


def nearest_ladder_entry(target_n: float, ladder: dict) -> str:
    """The name of the ladder entry whose non-embedding count is nearest target_n in log N."""
    if not ladder:
        raise ValueError("the ladder is empty")
    return min(ladder, key=lambda name: abs(math.log(n_params(ladder[name]) / target_n)))


COUNT_TOLERANCE = 0.02  # a forecast shape may miss its parameter count by this fraction to stay ladder-like


def ffn_granularity(ladder: dict, largest: int = 8) -> int:
    """The step of ffn_dim for shapes derived from a ladder: its entries' common divisor, at most `largest`.
    A 3-layer, 2-head model of ~29k parameters has no GLU near 8/3·d within 2% of the count in steps of 8
    (d_model 32 with ffn_dim 56, 1.75·d, was the nearest); a ladder whose rungs use steps of 4 allows 4."""
    return min(largest, math.gcd(*(ModelShape.from_dict(shape).ffn_dim for shape in ladder.values())))


def ladder_like_shape(target_n: float, ladder: dict, ffn_multiple: int | None = None,
                      layers: int | None = None) -> dict:
    """A shape of the ladder's family sized to target_n non-embedding parameters.

    The ladder entry nearest target_n in log N gives the depth and the head count (a forecast model should
    differ from the grid's models only in size; `layers` overrides the depth, the closed loop's depth
    search); d_model (a multiple of the ladder's head dimension when
    all its entries share one, the head count following; else a multiple of 2·heads, so the head dimension
    stays even) and ffn_dim (a multiple of `ffn_multiple`, by default ffn_granularity(ladder), within
    1.5-4× d_model) are then chosen: among the shapes within `COUNT_TOLERANCE` of target_n, the one whose
    GLU is nearest 8/3·d (the ladders' own ratio), else the nearest count. Matching the count alone picks
    odd shapes at small sizes: 28.9k parameters came out as d_model 40 with ffn_dim 64 (1.6·d) where
    d_model 32 with ffn_dim 104 is 1.9% off.
    """
    if not (target_n > 0 and math.isfinite(target_n)):
        raise ValueError(f"target_n must be a positive number, got {target_n!r}")
    ffn_multiple = ffn_multiple or ffn_granularity(ladder)
    base = ModelShape.from_dict(ladder[nearest_ladder_entry(target_n, ladder)])
    layers, heads = layers or base.layers, base.heads
    # A ladder with one head dimension throughout (the paper's: 64) keeps it, and the head count follows the
    # width: a head_dim like 70 would leave the tensor-core-friendly sizes the ladder was built on.
    head_dims = {ModelShape.from_dict(shape).head_dim for shape in ladder.values()}
    fixed_head_dim = head_dims.pop() if len(ladder) > 1 and len(head_dims) == 1 else None
    step = fixed_head_dim or 2 * heads
    # N = L·(4d² + 3d·f + 2d) + d with f in [1.5d, 4d] brackets d between these two widths.
    widest = math.sqrt(target_n / (layers * 8.5))
    narrowest = math.sqrt(target_n / (layers * 16.0))
    best = None
    first = max(1, math.floor(narrowest / step) - 1)
    for k in range(first, math.ceil(widest / step) + 2):
        d = k * step
        low_ffn = math.ceil(1.5 * d / ffn_multiple) * ffn_multiple
        high_ffn = math.floor(4 * d / ffn_multiple) * ffn_multiple
        if low_ffn > high_ffn:
            continue
        ideal = (target_n - layers * (4 * d * d + 2 * d) - d) / (3 * d * layers)
        for ffn in {math.floor(ideal / ffn_multiple) * ffn_multiple, math.ceil(ideal / ffn_multiple) * ffn_multiple}:
            ffn = min(high_ffn, max(low_ffn, ffn))
            shape = {"layers": layers, "d_model": d, "heads": d // fixed_head_dim if fixed_head_dim else heads,
                     "ffn_dim": int(ffn)}
            error = abs(n_params(shape) - target_n) / target_n
            glu_distance = abs(math.log(ffn / (8 * d / 3)))
            score = (0, glu_distance, error) if error <= COUNT_TOLERANCE else (1, error, glu_distance)
            if best is None or score < best[0]:
                best = (score, shape)
    if best is None:
        raise ValueError(f"no {layers}-layer, {heads}-head shape fits {target_n:.3g} non-embedding parameters")
    return best[1]
