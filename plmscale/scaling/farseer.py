"""Farseer's law (arXiv 2506.10972): a data exponent that depends on model size.

    L(N, D) = exp(s·n^q + S) + exp(B·n^b + Q) · d^(−exp(A·n^a + E)),   n = N / 1e6, d = D / 1e9

The first term is the loss at infinite data of a model of size N; the second falls with data at a rate
β(N) = exp(A·n^a + E) that itself changes with N (the Chinchilla form holds β fixed). N is counted in
millions and D in billions (N_UNIT, D_UNIT) so that n^q, n^a and d^−β stay near 1 over any realistic
study and the optimiser's 9 coordinates have similar scales.

Fitted as the parametric law is (parametric.py): Huber (δ = 1e-3) on log loss, the best of a grid of
starts refined by L-BFGS-B, how many refined starts reach the best basin reported, bootstrap over runs
for intervals. There is no closed-form optimum: N_opt(C) minimises L(N, C/(κ·N)) over log N numerically.
"""

import numpy as np
from scipy.optimize import minimize

from plmscale.errors import PlmscaleError
from plmscale.scaling import bootstrap as boot
from plmscale.scaling import fit_workers
from plmscale.scaling.log_grid import refined_argmin
from plmscale.scaling.parametric import HUBER_DELTA

N_UNIT = 1e6
D_UNIT = 1e9
PARAM_NAMES = ("s", "q", "S", "B", "b", "Q", "A", "a", "E")
# Exponents of n (q, b, a) stay within ±1.5: n spans at most ~1e5, so n^1.5 already moves a term by e^17.
BOUNDS = [(-20.0, 20.0), (-1.5, 1.5), (-5.0, 5.0),
          (-20.0, 20.0), (-1.5, 1.5), (-10.0, 10.0),
          (-10.0, 10.0), (-1.5, 1.5), (-5.0, 2.0)]
MIN_RUNS = 10  # 9 constants
N_STARTS = 12
BASIN_REL_OBJECTIVE = 1e-3
# N_opt is searched on a log grid over N_SEARCH_RANGE (a demo's 1e4-parameter models to 1e14), 0.03 in ln N
# apart, then refined by a parabola through the best point and its neighbours.
N_SEARCH_RANGE = (1e2, 1e14)
SEARCH_POINTS = 921


def loss(params, n_params, tokens):
    """L(N, D) for constants params (dict or (..., 9) array, PARAM_NAMES order); broadcasts over arrays."""
    p = _array(params)
    s, q, S, B, b, Q, A, a, E = (p[..., i] for i in range(9))
    n = np.asarray(n_params, float) / N_UNIT
    d = np.asarray(tokens, float) / D_UNIT
    with np.errstate(over="ignore", invalid="ignore"):
        return np.exp(s * n ** q + S) + np.exp(B * n ** b + Q) * d ** (-np.exp(A * n ** a + E))


def data_exponent(params, n_params):
    """β(N) = exp(A·n^a + E), the rate at which loss falls with data for a model of N parameters."""
    p = _array(params)
    return np.exp(p[..., 6] * (np.asarray(n_params, float) / N_UNIT) ** p[..., 7] + p[..., 8])


def _array(params):
    if isinstance(params, dict):
        return np.array([params[k] for k in PARAM_NAMES], float)
    return np.asarray(params, float)


def _objective(theta, n, d, log_n, log_d, log_loss, weights):
    """Huber objective / δ and its gradient in the 9 constants (analytic: ~10x fewer evaluations than
    L-BFGS-B's finite differences). n, d in N_UNIT, D_UNIT and their logs: computed once per fit (_refine)."""
    s, q, S, B, b, Q, A, a, E = theta
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        n_q, n_b, n_a = n ** q, n ** b, n ** a
        beta = np.exp(A * n_a + E)
        term_1 = np.exp(s * n_q + S)
        term_2 = np.exp(B * n_b + Q - beta * log_d)
        total = term_1 + term_2
        r = np.log(total) - log_loss
    if not np.isfinite(r).all():
        return 1e6, np.zeros(9)
    absr = np.abs(r)
    h = np.where(absr <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (absr - 0.5 * HUBER_DELTA))
    psi = weights * np.clip(r, -HUBER_DELTA, HUBER_DELTA) / HUBER_DELTA / total
    with np.errstate(over="ignore", invalid="ignore"):
        d_beta = -term_2 * log_d * beta  # dL/d(log β)
        jac = np.stack([term_1 * n_q, term_1 * s * n_q * log_n, term_1,
                        term_2 * n_b, term_2 * B * n_b * log_n, term_2,
                        d_beta * n_a, d_beta * A * n_a * log_n, d_beta])
        grad = jac @ psi
    if not np.isfinite(grad).all():
        return 1e6, np.zeros(9)
    return float((weights * h).sum() / HUBER_DELTA), grad


def _starts(rng, n_starts, log_loss):
    """Random starts inside a plausible region: the floor near the lowest loss, β(N) near 0.3."""
    floor = float(np.log(np.exp(log_loss).min() * 0.8))
    starts = np.column_stack([
        rng.uniform(0.1, 2.0, n_starts), rng.uniform(-0.6, -0.05, n_starts), floor + rng.normal(0, 0.2, n_starts),
        rng.uniform(-1.0, 1.0, n_starts), rng.uniform(-0.5, 0.5, n_starts), rng.uniform(-2.0, 0.5, n_starts),
        rng.uniform(-0.5, 0.5, n_starts), rng.uniform(0.05, 0.5, n_starts), np.log(rng.uniform(0.15, 0.5, n_starts))])
    return np.clip(starts, [lo for lo, _ in BOUNDS], [hi for _, hi in BOUNDS])


def _refine(start, n, d, log_loss, weights, maxiter=400):
    n, d = n / N_UNIT, d / D_UNIT
    scaled = (n, d, np.log(n), np.log(d))
    result = minimize(_objective, start, args=(*scaled, log_loss, weights), jac=True, method="L-BFGS-B", bounds=BOUNDS,
                      options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-8})
    return result.x, float(result.fun), bool(result.success)


def fit_farseer(n_params, tokens, losses, weights=None, n_starts=N_STARTS, seed=0):
    """Fit the law to final losses. Returns {constants..., theta, objective, n_starts, starts_in_best_basin,
    best_converged, n_runs, units}; raises PlmscaleError with fewer than MIN_RUNS runs."""
    n, d, observed = (np.asarray(v, float) for v in (n_params, tokens, losses))
    if len(n) < MIN_RUNS:
        raise PlmscaleError(f"the Farseer law has 9 constants and needs at least {MIN_RUNS} runs; got {len(n)}")
    log_loss = np.log(observed)
    weights = np.ones_like(n) if weights is None else np.asarray(weights, float)
    rng = np.random.default_rng(seed)
    results = [_refine(start, n, d, log_loss, weights) for start in _starts(rng, n_starts, log_loss)]
    values = np.array([r[1] for r in results])
    best = int(np.argmin(values))
    theta = results[best][0]
    in_basin = int((values - values[best] <= BASIN_REL_OBJECTIVE * max(abs(values[best]), 1e-12)).sum())
    # Under "constants": the law's a, b and E are not the allocation exponents a, b fit.json uses elsewhere.
    return {"constants": dict(zip(PARAM_NAMES, map(float, theta))), "theta": theta.tolist(),
            "objective": float(values[best] * HUBER_DELTA), "n_starts": int(n_starts),
            "starts_in_best_basin": in_basin, "best_converged": results[best][2], "n_runs": int(len(n)),
            "units": {"n": f"N / {N_UNIT:g}", "d": f"D / {D_UNIT:g}"}}


def refit(theta, n_params, tokens, losses, weights):
    """A bootstrap refit from the point fit's constants (warm start). Returns theta (9,), NaN if it failed."""
    n, d, observed = (np.asarray(v, float) for v in (n_params, tokens, losses))
    x, value, _ = _refine(np.asarray(theta, float), n, d, np.log(observed), np.asarray(weights, float), maxiter=200)
    return x if value < 1e6 else np.full(9, np.nan)


def optimal_allocation(params, flops, kappa=6.0, n_range=N_SEARCH_RANGE):
    """N_opt, D_opt and the loss at compute C = κ·N·D, minimising over a log-spaced grid of N then refining
    with a parabola through the best grid point and its neighbours. params: one set of constants or (K, 9).
    NaN where the minimum lies at an end of n_range (no interior optimum there)."""
    p = np.atleast_2d(_array(params))
    log_grid = np.linspace(np.log(n_range[0]), np.log(n_range[1]), SEARCH_POINTS)
    grid = np.exp(log_grid)
    losses = loss(p[:, None, :], grid[None, :], flops / (kappa * grid[None, :]))
    log_opt, at_end = refined_argmin(losses, log_grid)
    n_opt = np.exp(log_opt)
    d_opt = flops / (kappa * n_opt)
    l_opt = loss(p, n_opt, d_opt)
    # No interior minimum, or a loss that under/overflowed (a term of 0 or inf is no forecast).
    bad = at_end | ~(np.isfinite(l_opt) & (l_opt > 0))
    n_opt, d_opt, l_opt = (np.where(bad, np.nan, v) for v in (n_opt, d_opt, l_opt))
    if np.ndim(_array(params)) == 1:
        return float(n_opt[0]), float(d_opt[0]), float(l_opt[0])
    return n_opt, d_opt, l_opt


# Each bootstrap refit is one L-BFGS-B run (~0.1 s on 50 runs): the Farseer intervals use at most this many.
MAX_BOOTSTRAP = 200


def bootstrap_thetas(point, n_params, tokens, losses, counts):
    """(B, 9) refits of the point fit for bootstrap run counts (B, n), warm-started; NaN rows where one failed.
    The refits are shared out among worker processes (fit_workers): the same numbers for any number of them."""
    n, d, observed = (np.asarray(v, float) for v in (n_params, tokens, losses))
    rows = fit_workers.map_rows(_refit_weights, np.asarray(counts, float), np.asarray(point["theta"], float), n, d,
                               observed)
    return rows.reshape(-1, len(PARAM_NAMES))


def _refit_weights(weights, theta, n, d, losses):
    return refit(theta, n, d, losses, weights)


def allocation_exponent(params, flops, kappa=6.0, span=10.0):
    """The local exponent a = d ln N_opt / d ln C over the decade below flops (the law has no single one):
    ln(N_opt(C) / N_opt(C / span)) / ln(span). With flops the largest budget fitted, it stays inside the data."""
    low, _, _ = optimal_allocation(params, flops / span, kappa)
    high, _, _ = optimal_allocation(params, flops, kappa)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(np.asarray(high) / np.asarray(low)) / np.log(span)


def fit_entry(n_params, tokens, losses, kappa, counts=None, reference_flops=None):
    """fit.json's `farseer` entry: the point fit, its constants' and allocation's intervals from bootstrap run
    counts (B, n) (at most MAX_BOOTSTRAP of them), the local allocation exponent a at reference_flops (the
    largest budget fitted) with its interval."""
    entry = fit_farseer(n_params, tokens, losses)
    reference = float(reference_flops) if reference_flops else None
    entry.update(flops_per_param_token=float(kappa), reference_flops=reference,
                 loss_law="L = exp(s*n^q + S) + exp(B*n^b + Q) * d^-exp(A*n^a + E), n = N/1e6, d = D/1e9")
    if reference:
        a = float(allocation_exponent(entry["theta"], reference, kappa))
        entry.update(a=a, b=1 - a)
    if counts is not None and len(counts):
        counts = np.asarray(counts)[:MAX_BOOTSTRAP]
        thetas = bootstrap_thetas(entry, n_params, tokens, losses, counts)
        failed = ~np.isfinite(thetas).all(1)
        draws = {}
        if reference:
            draws["a"] = allocation_exponent(thetas, reference, kappa)
            entry["a_ci"] = boot.interval(draws["a"])
            entry["b_ci"] = None if entry["a_ci"] is None else [1 - entry["a_ci"][1], 1 - entry["a_ci"][0]]
        entry["bootstrap"] = {"n": int(len(counts)), "n_failed": int(failed.sum()), "level": boot.CI_LEVEL,
                              "draws": {k: [None if not np.isfinite(v) else float(v) for v in values]
                                        for k, values in draws.items()},
                              # one row of the 9 constants (PARAM_NAMES order) per refit, null where it failed
                              "thetas": [None if not np.isfinite(t).all() else t.tolist() for t in thetas]}
    return entry


def loss_with_interval(entry, n_params, tokens):
    """(L(N, D), its bootstrap interval or None) from a fit.json `farseer` entry."""
    point = float(loss(entry["theta"], n_params, tokens))
    rows = (entry.get("bootstrap") or {}).get("thetas")
    if not rows:
        return point, None
    thetas = np.array([[np.nan] * len(PARAM_NAMES) if row is None else row for row in rows], float)
    return point, boot.interval(loss(thetas, n_params, tokens))
