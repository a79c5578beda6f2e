"""The weighted least-squares power law in log-log space that the IsoFLOP and envelope fits share."""

import numpy as np

from plmscale.errors import PlmscaleError


def power_law_fit_batch(log_c, log_y, weights=None):
    """Batched weighted OLS of log_y (B, G) on log_c, one fit per row: y = k·C^slope.

    log_c: (G,) shared by every row, or (B, G) when each row has its own compute values (envelope points
    move between resamples). weights (B, G) (0 = left out) or None; a non-finite log_y is left out too.
    Returns (log_k, slope), each (B,); NaN where fewer than 2 distinct compute values carry weight.
    """
    log_y = np.asarray(log_y, float)
    w = np.ones_like(log_y) if weights is None else np.asarray(weights, float).copy()
    w[~np.isfinite(log_y)] = 0.0
    y = np.where(w > 0, log_y, 0.0)
    x = np.where(w > 0, np.broadcast_to(log_c, y.shape), 0.0)  # a left-out point's x may be anything
    sw = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * x).sum(1) / sw
        my = (w * y).sum(1) / sw
        dx = x - mx[:, None]
        sxx = (w * dx * dx).sum(1)
        slope = (w * dx * (y - my[:, None])).sum(1) / sxx
    distinct = ((w > 0) & (np.abs(dx) > 1e-9)).any(1) & (sxx > 1e-12)
    slope = np.where(distinct, slope, np.nan)
    return np.where(distinct, my - slope * mx, np.nan), slope


def power_law_fit(C, y, weights=None):
    """Least squares of log y on log C: y = k·C^a. Returns (k, a) as floats, unrounded."""
    log_k, a = power_law_fit_batch(np.log(np.asarray(C, float)), np.log(np.asarray(y, float))[None, :],
                                   None if weights is None else np.asarray(weights, float)[None, :])
    if not np.isfinite(a[0]):
        raise PlmscaleError("power-law fit needs at least 2 distinct compute values with finite optima")
    return float(np.exp(log_k[0])), float(a[0])
