"""Bootstrap over runs: resample runs with replacement, refit every method, take 95% percentile intervals.

A resample is a vector of counts (how often each run was drawn), so a refit is a weighted fit and the
refits of every method run for all resamples at once as batched numpy arithmetic.

Resampling is stratified: the runs of one IsoFLOP budget are redrawn among themselves (all other runs
form one more stratum), so every resample keeps the experiment's design — a budget never vanishes by
chance, which would otherwise turn a handful of resamples into fits on a different design.

The parametric refits start from the full-data optimum (and the best runner-up basin) instead of the
4,500-point grid: a resample moves the optimum by about one standard error, far less than the distance
between basins, so the full-data basin is where the resampled optimum lies; the runner-up start catches
a resample where the basins swap order. All resamples × both starts are refitted together by the
batched optimiser (parametric.minimise_batch), a weight vector per row, so no process pool is needed.
"""

import numpy as np

from plmscale.errors import PlmscaleError
from plmscale.scaling import envelope, isoflop, parametric

N_BOOTSTRAP = 1000
CI_LEVEL = 0.95


def draw_counts(strata, n_boot, rng):
    """(n_boot, n) integer counts: within each stratum, len(stratum) draws with replacement."""
    strata = np.asarray(strata)
    counts = np.zeros((n_boot, len(strata)), dtype=np.int32)
    for label in np.unique(strata):
        members = np.flatnonzero(strata == label)
        m = len(members)
        draws = rng.integers(0, m, size=(n_boot, m)) + m * np.arange(n_boot)[:, None]
        counts[:, members] = np.bincount(draws.ravel(), minlength=n_boot * m).reshape(n_boot, m)
    return counts


def interval(samples, level=CI_LEVEL):
    """Percentile interval of the finite samples as [low, high] (None when fewer than 10 are finite)."""
    samples = np.asarray(samples, float)
    finite = samples[np.isfinite(samples)]
    if len(finite) < 10:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return [float(low), float(high)]


def isoflop_draws(df, counts, min_points, losses=None):
    designs = isoflop.budget_designs(df, min_points)
    per_budget = [isoflop.fit_budgets_batch(d, counts, min_points, losses) for d in designs]
    return isoflop.laws_from_optima(designs, per_budget)


def isoflop_residual_losses(df, n_boot, rng, min_points):
    """(n_boot, n) losses for a residual bootstrap of the IsoFLOP fit, and the pooled residual sd.

    With few sizes per budget (the demo has 4), redrawing runs mostly drops a size: a resample then
    tests a different design, and half the refits lose their bracket. The residual bootstrap keeps every
    run: each budget's parabola gives fitted losses and residuals; residuals of all budgets with spare
    degrees of freedom (more distinct sizes than the parabola's 3 coefficients) are pooled, inflated by
    sqrt(n / (n - 3)) for the coefficients they fed, and redrawn onto the fitted losses. Runs outside the
    IsoFLOP design keep their losses. Raises PlmscaleError where no budget has a spare degree of freedom.
    """
    designs = isoflop.budget_designs(df, min_points)
    losses = np.tile(df["loss"].to_numpy(float), (n_boot, 1))
    ones = np.ones((1, len(df)))
    fitted, pooled = {}, []
    for design in designs:
        x = design["log_n"] - design["log_n"].mean()
        n_sizes = len(np.unique(np.round(design["log_n"], 9)))
        X = np.stack([np.ones_like(x), x, x * x], 1)
        if n_sizes < 3 or isoflop.fit_budgets_batch(design, ones, min_points)["reason"][0] == isoflop.TOO_FEW:
            continue
        coef, *_ = np.linalg.lstsq(X, design["loss"], rcond=None)
        fitted[id(design)] = X @ coef
        n = len(x)
        if n > 3:
            pooled.append((design["loss"] - X @ coef) * np.sqrt(n / (n - 3)))
    if not pooled:
        raise PlmscaleError("a residual bootstrap needs a budget with more than 3 runs (residual degrees of "
                            "freedom); use fit.isoflop_bootstrap: runs, or add sizes per budget")
    residuals = np.concatenate(pooled)
    for design in designs:
        if id(design) in fitted:
            draws = rng.choice(residuals, size=(n_boot, len(design["positions"])), replace=True)
            losses[:, design["positions"]] = fitted[id(design)] + draws
    return losses, float(np.sqrt(np.mean(residuals ** 2)))


def envelope_draws(design, run_counts):
    laws, _, _ = envelope.envelope_batch(design, run_counts)
    return laws


def parametric_draws(n_params, tokens, loss, counts, point_fit):
    """Constants of every resample's refit: dict of (B,) arrays E, A, B, alpha, beta, a, b, plus
    `converged` (B,) bool — whether the winning refit met the optimiser's stopping rule.
    """
    starts = [point_fit["theta"]] + point_fit["runner_up_thetas"][:1]
    thetas, _, converged = parametric.refit_warm(starts, n_params, tokens, loss, np.asarray(counts, float))
    alpha, beta = thetas[:, 3], thetas[:, 4]
    with np.errstate(invalid="ignore"):
        a, b = parametric.implied_exponents(alpha, beta)
    return {"E": np.exp(thetas[:, 0]), "A": np.exp(thetas[:, 1]), "B": np.exp(thetas[:, 2]),
            "alpha": alpha, "beta": beta, "a": a, "b": b, "converged": converged}
