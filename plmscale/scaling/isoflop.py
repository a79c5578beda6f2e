"""IsoFLOP fits (Chinchilla approach 2): per budget, loss against log N with a parabola; its vertex is the
compute-optimal size at that budget; N_opt = k·C^a and D_opt = k'·C^b across budgets.

Everything is written for a batch of run weights (one row per bootstrap resample, a count per run), so
the point estimate (one row of ones) and the bootstrap run the very same arithmetic, vectorised.
"""

import numpy as np

from plmscale.errors import PlmscaleError
from plmscale.scaling.table import budget_groups

# Reason codes for a budget that yields no optimum (kept as small ints inside the batched arithmetic).
OK, TOO_FEW, EDGE, CONCAVE, OUTSIDE = 0, 1, 2, 3, 4
REASONS = {
    TOO_FEW: "fewer than {min_points} model sizes at this budget",
    EDGE: "lowest loss at the {edge} model size of the grid: the optimum is not bracketed",
    CONCAVE: "parabola curvature <= 0: loss has no minimum in log N",
    OUTSIDE: "parabola vertex outside the sampled sizes (extrapolated optimum)",
}


def power_law_fit(C, y, weights=None):
    """Least squares of log y on log C: y = k·C^a. Returns (k, a) as floats, unrounded."""
    log_k, a = power_law_fit_batch(np.log(np.asarray(C, float)), np.log(np.asarray(y, float))[None, :],
                                   None if weights is None else np.asarray(weights, float)[None, :])
    if not np.isfinite(a[0]):
        raise PlmscaleError("power-law fit needs at least 2 distinct compute values with finite optima")
    return float(np.exp(log_k[0])), float(a[0])


def power_law_fit_batch(log_c, log_y, weights=None):
    """Batched weighted OLS of log_y (B, G) on log_c (G,). weights (B, G) (0 = left out) or None.

    Returns (log_k, slope), each (B,); NaN where fewer than 2 distinct compute values carry weight.
    """
    log_y = np.asarray(log_y, float)
    w = np.ones_like(log_y) if weights is None else np.asarray(weights, float).copy()
    w[~np.isfinite(log_y)] = 0.0
    y = np.where(w > 0, log_y, 0.0)
    x = np.broadcast_to(log_c, y.shape)
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


def budget_designs(df, min_points):
    """The IsoFLOP design: one entry per budget with the positions of its runs in df (scratch runs only)."""
    budgets = budget_groups(df)
    designs = []
    for budget in sorted(budgets.dropna().unique()):
        positions = np.flatnonzero((budgets == budget).to_numpy())
        rows = df.iloc[positions]
        n = rows["n_params"].to_numpy(float)
        designs.append({
            "budget": float(budget),
            "positions": positions,
            "log_n": np.log(n),
            "loss": rows["loss"].to_numpy(float),
            # C = kappa·N·D links size and tokens at a fixed budget (kappa = 6 for the 6ND convention).
            "kappa": float(np.median(rows["flops"].to_numpy(float) / (n * rows["tokens"].to_numpy(float)))),
            "run_ids": rows["run_id"].tolist(),
        })
    return designs


def fit_budgets_batch(design, counts, min_points):
    """Parabola loss ~ p0 + p1·x + p2·x², x = log N centred, for each weight row in counts (B, n_runs).

    Returns dict of (B,) arrays: log_n_opt (vertex), loss_opt, curvature (p2, per (ln N)^2), raw_log_n,
    raw_loss (argmin among included runs), reason (OK or a code), edge (+1 largest, -1 smallest, 0).
    """
    w = np.asarray(counts, float)[:, design["positions"]]
    log_n, loss = design["log_n"], design["loss"]
    centre = log_n.mean()
    x = log_n - centre
    included = w > 0
    # Distinct sizes present in each resample (duplicate runs of one size do not bracket anything).
    sizes, size_index = np.unique(np.round(log_n, 9), return_inverse=True)
    present = np.zeros((w.shape[0], len(sizes)), bool)
    for j in range(len(sizes)):
        present[:, j] = included[:, size_index == j].any(1)
    n_distinct = present.sum(1)

    masked_loss = np.where(included, loss, np.inf)
    raw = np.argmin(masked_loss, axis=1)
    raw_log_n, raw_loss = log_n[raw], loss[raw]
    lo = np.where(present.any(1), np.argmax(present, 1), 0)
    hi = np.where(present.any(1), len(sizes) - 1 - np.argmax(present[:, ::-1], 1), 0)
    raw_size = size_index[raw]
    edge = np.where(raw_size == lo, -1, np.where(raw_size == hi, 1, 0))

    X = np.stack([np.ones_like(x), x, x * x], 1)
    xtwx = np.einsum("bi,ij,ik->bjk", w, X, X)
    xtwy = np.einsum("bi,ij,i->bj", w, X, loss)
    enough = n_distinct >= max(3, min_points)
    xtwx[~enough] = np.eye(3)  # keeps the batched solve finite; these rows are flagged TOO_FEW below
    coef = np.linalg.solve(xtwx, xtwy[..., None])[..., 0]
    p0, p1, p2 = coef[:, 0], coef[:, 1], coef[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = -p1 / (2 * p2)
    loss_opt = p0 + p1 * vertex + p2 * vertex * vertex
    x_min = (sizes[lo] - centre)
    x_max = (sizes[hi] - centre)

    reason = np.full(w.shape[0], OK)
    reason[(vertex < x_min) | (vertex > x_max)] = OUTSIDE
    reason[edge != 0] = EDGE
    reason[~(p2 > 0)] = CONCAVE
    reason[~enough] = TOO_FEW
    return {"log_n_opt": vertex + centre, "loss_opt": loss_opt, "curvature": p2, "raw_log_n": raw_log_n,
            "raw_loss": raw_loss, "reason": reason, "edge": edge, "n_distinct": n_distinct}


def laws_from_optima(designs, per_budget, valid_only=True):
    """Power laws N_opt = k_n·C^a, D_opt = k_d·C^b, L_opt = k_l·C^s across budgets, batched (B,)."""
    log_c = np.log([d["budget"] for d in designs])
    log_kappa = np.log([d["kappa"] for d in designs])
    log_n = np.stack([r["log_n_opt"] for r in per_budget], 1)
    ok = np.stack([r["reason"] == OK for r in per_budget], 1) if valid_only else np.ones_like(log_n, bool)
    log_d = log_c - log_kappa - log_n
    with np.errstate(invalid="ignore", divide="ignore"):
        log_l = np.log(np.stack([r["loss_opt"] for r in per_budget], 1))
    weights = ok.astype(float)
    log_k_n, a = power_law_fit_batch(log_c, np.where(ok, log_n, np.nan), weights)
    log_k_d, b = power_law_fit_batch(log_c, np.where(ok, log_d, np.nan), weights)
    log_k_l, s = power_law_fit_batch(log_c, np.where(ok, log_l, np.nan), weights)
    return {"k_n": np.exp(log_k_n), "a": a, "k_d": np.exp(log_k_d), "b": b, "k_l": np.exp(log_k_l),
            "s": s, "n_budgets": ok.sum(1)}


def isoflop_optima(df, min_points=3):
    """Per-budget optima and the fitted power laws for one objective's scratch runs (a validated table).

    Returns {"budgets": [kept budgets], "dropped_budgets": [{budget, reason}], "optima": [per budget:
    budget, n_runs, raw_n_opt, raw_loss, n_opt, d_opt, loss_opt, curvature, kept], "k_n", "a", "k_d", "b",
    "k_l", "s"} — the laws are None when fewer than 2 budgets survive (with "error" saying why).
    """
    designs = budget_designs(df, min_points)
    if len(designs) < 2:
        raise PlmscaleError(f"IsoFLOP fit needs runs at 2 or more compute budgets; found {len(designs)} "
                            "(budget column, or groups of runs with equal FLOPs)")
    ones = np.ones((1, len(df)))
    per_budget = [fit_budgets_batch(d, ones, min_points) for d in designs]
    optima, kept, dropped = [], [], []
    for design, result in zip(designs, per_budget):
        code = int(result["reason"][0])
        n_opt = float(np.exp(result["log_n_opt"][0])) if code != TOO_FEW else None
        entry = {"budget": design["budget"], "n_runs": len(design["positions"]),
                 "n_sizes": int(result["n_distinct"][0]),
                 "raw_n_opt": float(np.exp(result["raw_log_n"][0])), "raw_loss": float(result["raw_loss"][0]),
                 "n_opt": n_opt, "d_opt": (design["budget"] / design["kappa"] / n_opt) if n_opt else None,
                 "loss_opt": float(result["loss_opt"][0]) if code != TOO_FEW else None,
                 "curvature": float(result["curvature"][0]) if code != TOO_FEW else None,
                 "kept": code == OK, "run_ids": design["run_ids"]}
        optima.append(entry)
        if code == OK:
            kept.append(design["budget"])
        else:
            edge = "largest" if result["edge"][0] > 0 else "smallest"
            dropped.append({"budget": design["budget"],
                            "reason": REASONS[code].format(min_points=max(3, min_points), edge=edge)})
    out = {"budgets": kept, "dropped_budgets": dropped, "optima": optima}
    if len(kept) < 2:
        out["error"] = (f"only {len(kept)} budget(s) gave a bracketed optimum (need 2); dropped: " +
                        "; ".join(f"{d['budget']:.3g}: {d['reason']}" for d in dropped))
        return out
    laws = laws_from_optima(designs, per_budget)
    out.update({key: float(value[0]) for key, value in laws.items() if key != "n_budgets"})
    return out
