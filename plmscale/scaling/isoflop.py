"""IsoFLOP fits (Chinchilla approach 2): per budget, loss against log N with a parabola; its vertex is the
compute-optimal size at that budget; N_opt = k·C^a and D_opt = k'·C^b across budgets.

Everything is written for a batch of run weights (one row per bootstrap resample, a count per run), so
the point estimate (one row of ones) and the bootstrap run the very same arithmetic, vectorised.
"""

import numpy as np

from plmscale.arithmetic import FLOPS_DEFINITIONS
from plmscale.errors import PlmscaleError
from plmscale.scaling.power_law import power_law_fit_batch
from plmscale.scaling.table import budget_groups

# Reason codes for a budget that yields no optimum (kept as small ints inside the batched arithmetic).
OK, TOO_FEW, EDGE, CONCAVE, OUTSIDE = 0, 1, 2, 3, 4
REASONS = {
    TOO_FEW: "fewer than {min_points} model sizes at this budget",
    EDGE: "lowest loss at the {edge} model size of the grid: the optimum is not bracketed",
    CONCAVE: "parabola curvature <= 0: loss has no minimum in log N",
    OUTSIDE: "parabola vertex outside the sampled sizes (extrapolated optimum)",
}


# How the compute-optimal loss is extrapolated across budgets. fit.json's IsoFLOP law is the saturating
# one: a loss that approaches an irreducible floor bends away from a pure power law, which then forecasts
# too low (2-4% half a decade out on synthetic Chinchilla-type data, see docs/trust.md).
LOSS_LAWS = {
    "saturating": "L_opt = E + k*C^s fitted to the vertex losses (E >= 0; E = 0 with only 2 budgets)",
    "power": "L_opt = k_l * C^s fitted to the vertex losses (no irreducible loss)",
}
# Grid of the saturating law's exponent s (negative): for each s, E and k are linear least squares.
SATURATING_S_GRID = -np.geomspace(1e-3, 3.0, 400)
GOLDEN_STEPS = 40  # shrinks the bracket around the best grid point by 0.618^40 ≈ 4e-9


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


def fit_budgets_batch(design, counts, min_points, losses=None):
    """Parabola loss ~ p0 + p1·x + p2·x², x = log N centred, for each weight row in counts (B, n_runs).

    losses: None (every row fits the observed losses) or (B, n_runs) losses per row, aligned with counts
    (a residual bootstrap perturbs the losses and keeps every run).

    Returns dict of (B,) arrays: log_n_opt (vertex), loss_opt, curvature (p2, per (ln N)^2), raw_log_n,
    raw_loss (the lowest mean loss of a size among included runs: replicates of a size are averaged, so one
    lucky run does not move the raw optimum to an edge), reason (OK or a code), edge (+1 largest, -1
    smallest, 0).
    """
    w = np.asarray(counts, float)[:, design["positions"]]
    log_n = design["log_n"]
    loss = np.broadcast_to(design["loss"] if losses is None else np.asarray(losses, float)[:, design["positions"]],
                           w.shape)
    centre = log_n.mean()
    x = log_n - centre
    included = w > 0
    # Distinct sizes present in each resample (duplicate runs of one size do not bracket anything), and each
    # size's mean loss over its included runs (each run once, however often a resample drew it).
    sizes, first_run, size_index = np.unique(np.round(log_n, 9), return_index=True, return_inverse=True)
    present = np.zeros((w.shape[0], len(sizes)), bool)
    size_loss = np.full((w.shape[0], len(sizes)), np.inf)
    for j in range(len(sizes)):
        members = included[:, size_index == j]
        present[:, j] = members.any(1)
        total = np.where(members, loss[:, size_index == j], 0.0).sum(1)
        size_loss[:, j] = np.where(present[:, j], total / np.maximum(members.sum(1), 1), np.inf)
    n_distinct = present.sum(1)
    raw_size = np.argmin(size_loss, axis=1)
    raw_log_n, raw_loss = log_n[first_run][raw_size], np.take_along_axis(size_loss, raw_size[:, None], 1)[:, 0]
    lo = np.where(present.any(1), np.argmax(present, 1), 0)
    hi = np.where(present.any(1), len(sizes) - 1 - np.argmax(present[:, ::-1], 1), 0)
    edge = np.where(raw_size == lo, -1, np.where(raw_size == hi, 1, 0))

    X = np.stack([np.ones_like(x), x, x * x], 1)
    xtwx = np.einsum("bi,ij,ik->bjk", w, X, X)
    xtwy = np.einsum("bi,ij,bi->bj", w, X, loss)
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


def laws_from_optima(designs, per_budget, valid_only=True, loss_law="saturating"):
    """Laws across budgets, batched (B,): N_opt = k_n·C^a, D_opt = k_d·C^b (power laws in C) and the
    compute-optimal loss L_opt = loss_floor + k_l·C^s (fit_loss_law's `loss_law`; None skips it).
    """
    log_c = np.log([d["budget"] for d in designs])
    log_kappa = np.log([d["kappa"] for d in designs])
    log_n = np.stack([r["log_n_opt"] for r in per_budget], 1)
    ok = np.stack([r["reason"] == OK for r in per_budget], 1) if valid_only else np.ones_like(log_n, bool)
    log_d = log_c - log_kappa - log_n
    weights = ok.astype(float)
    log_k_n, a = power_law_fit_batch(log_c, np.where(ok, log_n, np.nan), weights)
    log_k_d, b = power_law_fit_batch(log_c, np.where(ok, log_d, np.nan), weights)
    out = {"k_n": np.exp(log_k_n), "a": a, "k_d": np.exp(log_k_d), "b": b, "n_budgets": ok.sum(1)}
    if loss_law is not None:
        losses = np.stack([r["loss_opt"] for r in per_budget], 1)
        params = fit_loss_law(np.exp(log_c), np.where(ok, losses, np.nan), loss_law)
        # k of fit_loss_law multiplies (C/C_ref)^s; fit.json's k_l multiplies C^s itself.
        with np.errstate(invalid="ignore", over="ignore"):
            k_l = params["k"] * np.exp(-params["s"] * params["log_c_ref"])
        out.update({"loss_floor": params["E"], "k_l": k_l, "s": params["s"]})
    return out


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


def fit_loss_law(budgets, losses, law="saturating"):
    """Compute-optimal loss against compute, for each row of losses (B, G) at budgets (G,); NaN = not used.

    "power": log L = log k + s·log C by least squares (E = 0). "saturating": L = E + k·C^s with E >= 0, by
    least squares on relative residuals (the noise of a loss is about proportional to it): for each s on
    SATURATING_S_GRID, E and k are a weighted linear fit; the best s is refined by golden-section search
    between its grid neighbours. A row with only 2 losses falls back to the power law (3 constants need 3 points).
    Returns {"E", "k", "s", "log_c_ref"} with arrays (B,) (NaN where no law fits): L = E + k·(C/C_ref)^s.
    """
    log_c = np.log(np.asarray(budgets, float))
    losses = np.atleast_2d(np.asarray(losses, float))
    valid = np.isfinite(losses) & (losses > 0)
    log_c_ref = float(log_c.mean())
    x = log_c - log_c_ref
    with np.errstate(divide="ignore", invalid="ignore"):
        log_k, s = power_law_fit_batch(x, np.where(valid, np.log(losses), np.nan), valid.astype(float))
    E = np.zeros(len(losses))
    k = np.exp(log_k)
    if law == "saturating":
        three = valid.sum(1) >= 3
        if three.any():
            E_sat, k_sat, s_sat = _saturating_fit(x, losses[three], valid[three])
            E[three], k[three], s[three] = E_sat, k_sat, s_sat
    return {"E": E, "k": k, "s": s, "log_c_ref": log_c_ref}


def _saturating_fit(x, losses, valid):
    """L = E + k·exp(s·x) by variable projection over s; arrays (B, G) in, (B,) E, k, s out."""
    w = np.where(valid, 1.0 / np.where(valid, losses, 1.0) ** 2, 0.0)[:, None, :]
    y = np.where(valid, losses, 0.0)[:, None, :]

    def linear_fit(s):
        """E, k and the weighted squared error for exponents s (B, S)."""
        z = np.exp(s[..., None] * x)
        sw, sz, szz = w.sum(-1), (w * z).sum(-1), (w * z * z).sum(-1)
        sy, szy = (w * y).sum(-1), (w * z * y).sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = (sw * szy - sz * sy) / (sw * szz - sz * sz)
            E = (sy - k * sz) / sw
            # A negative floor is unphysical: fit k alone with E = 0 there.
            k = np.where(E < 0, szy / szz, k)
            E = np.maximum(E, 0.0)
            sse = (w * (y - E[..., None] - k[..., None] * z) ** 2).sum(-1)
        sse = np.where(np.isfinite(sse) & (k > 0), sse, np.inf)
        return E, k, sse

    grid = np.broadcast_to(SATURATING_S_GRID, (len(losses), len(SATURATING_S_GRID)))
    _, _, sse = linear_fit(grid)
    best = np.argmin(sse, 1)
    found = np.isfinite(sse[np.arange(len(losses)), best])
    # Golden-section search in log|s| between the best grid point's neighbours, all rows in lock-step.
    u = np.log(-SATURATING_S_GRID)
    low = u[np.maximum(best - 1, 0)]
    high = u[np.minimum(best + 1, len(u) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(GOLDEN_STEPS):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        sse_left = linear_fit(-np.exp(left)[:, None])[2][:, 0]
        sse_right = linear_fit(-np.exp(right)[:, None])[2][:, 0]
        go_left = sse_left <= sse_right
        high = np.where(go_left, right, high)
        low = np.where(go_left, low, left)
    s = -np.exp((low + high) / 2)
    E, k, _ = linear_fit(s[:, None])
    return (np.where(found, E[:, 0], np.nan), np.where(found, k[:, 0], np.nan), np.where(found, s, np.nan))


def loss_at(params, flops):
    """Loss of fit_loss_law's result at `flops` (B,)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return params["E"] + params["k"] * np.exp(params["s"] * (np.log(flops) - params["log_c_ref"]))


def cost_model_note(definition: str) -> str:
    """Why an IsoFLOP fit is not relabelled under the other cost models, and the remedy. A profile holds its
    budget fixed in the definition the grid was laid out in; counted in another (cost per token falling with N
    at a different rate) its small models spend more or less than its large ones, so its vertex is no longer an
    iso-compute optimum and the exponent would be a mixture of the two counts."""
    others = [d for d in FLOPS_DEFINITIONS if d != definition]
    remedy = f"train a grid laid out in it (train.flops_definition: {' or '.join(others)})"
    if definition not in FLOPS_DEFINITIONS:
        return ("the FLOPs definition of the budgets is unknown, so these profiles are iso-compute in no named cost "
                f"model; for the IsoFLOP exponent under one, {remedy}")
    return (f"iso-compute in {definition} only: under {', '.join(others)} or measured cost each profile mixes "
            f"budgets, so this exponent is not relabelled or refitted there; for the IsoFLOP exponent under another "
            f"FLOPs definition, {remedy}")
