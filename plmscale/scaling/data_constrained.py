"""The data-constrained law of Muennighoff et al. 2023 (arXiv 2305.16264): L(N, D, U) for runs that repeat data.

A run of N parameters trained on D tokens drawn from U unique ones sees U_D = min(U, D) unique tokens and
R_D = D / U_D − 1 repeated epochs. Repeats are worth less than new tokens, and so are parameters beyond what
the unique data can use:

    D' = U_D + U_D · R*_D · (1 − exp(−R_D / R*_D))
    U_N = min(N, N_of_U),  N_of_U = G · (U_D · G)^(β/α),  G = (α·A / (β·B))^(1/(α+β))
    R_N = N / U_N − 1
    N' = U_N + U_N · R*_N · (1 − exp(−R_N / R*_N))
    L = E + A / N'^α + B / D'^β

N_of_U is the paper's definition: the compute-optimal parameter count of the Chinchilla part (E, A, B, α, β)
at the budget whose compute-optimal data is U_D tokens (N_opt = G·(C/κ)^a, D_opt = G⁻¹·(C/κ)^b, so D_opt =
U_D gives N_opt = G·(U_D·G)^(a/b), a/b = β/α; κ cancels). R*_D and R*_N are the decay constants: a repeated
epoch's value halves every ~0.69·R* epochs (the paper fits R*_D ≈ 15.4, R*_N ≈ 5.3 on text). With unique
data (U ≥ D) D' = D; a model larger than N_of_U(D) still counts fewer effective parameters, but along any
compute budget's line such models lie beyond the Chinchilla optimum, so the compute-optimal N_opt(C),
D_opt(C) and the loss at C with unlimited data are exactly the Chinchilla law's.

Fitted as the parametric law is (parametric.py): Huber (δ = 1e-3) on log loss, in the coordinates
(log E, log A, log B, α, β, log R*_D, log R*_N), L-BFGS-B with an analytic gradient from several starts (the
Chinchilla fit of the table's unique-data runs, under a grid of R* values), how many reach the best basin
reported, bootstrap over runs (the fit's shared counts, at most MAX_BOOTSTRAP refits, warm-started) for
intervals. Without a `unique_tokens` column, or when no run repeats data (U ≥ D everywhere), R*_D is
unidentifiable and the law is not fitted (fit_entry raises PlmscaleError, which the fit records as the
family's reason). An empty unique_tokens cell means the run saw only unique data.

N_opt(C), D_opt(C) and the loss at C for U unique tokens are found numerically (a log grid of N refined by a
parabola, log_grid.refined_argmin); the allocation exponents a, b are the unlimited-data ones, β/(α+β) and
α/(α+β).
"""

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from plmscale.errors import PlmscaleError
from plmscale.scaling import bootstrap as boot
from plmscale.scaling import fit_workers, parametric
from plmscale.scaling.log_grid import refined_argmin
from plmscale.scaling.parametric import HUBER_DELTA

UNIQUE_TOKENS_COLUMN = "unique_tokens"
PARAM_NAMES = ("E", "A", "B", "alpha", "beta", "r_star_d", "r_star_n")
# Optimiser coordinates: log E, log A, log B, α, β (parametric.BOUNDS), log R*_D, log R*_N. R* spans the
# repetition study's search range (repetition.R_STAR_MIN/MAX): below 0.01 a repeat is worth nothing, above
# 1e4 epochs it is worth a new token in any realistic study.
R_STAR_BOUNDS = (np.log(0.01), np.log(1e4))
BOUNDS = list(parametric.BOUNDS) + [R_STAR_BOUNDS, R_STAR_BOUNDS]
MIN_RUNS = 8  # 7 constants
# Starting values of R*_D and R*_N (each pair is one start, beside the Chinchilla constants of the table).
R_STAR_STARTS = (2.0, 10.0, 50.0)
BASIN_REL_OBJECTIVE = 1e-4
# Each bootstrap refit is one warm-started L-BFGS-B run: the intervals use at most this many.
MAX_BOOTSTRAP = 200
N_SEARCH_RANGE = (1e2, 1e14)
SEARCH_POINTS = 921
GOLDEN_STEPS = 40  # shrinks a bracket of two grid steps by 0.618^40 ≈ 4e-9
LOSS_LAW = ("L = E + A/N'^alpha + B/D'^beta, D' = U_D + U_D*R*_D*(1 - exp(-R_D/R*_D)), N' = U_N + U_N*R*_N*"
            "(1 - exp(-R_N/R*_N)); U_D = min(U, D), R_D = D/U_D - 1, U_N = min(N, G*(U_D*G)^(beta/alpha)), "
            "R_N = N/U_N - 1")


# --------------------------------------------------------------------------------------------- the law

def _array(params):
    if isinstance(params, dict):
        return np.array([params[k] for k in PARAM_NAMES], float)
    return np.asarray(params, float)


def _unique(unique_tokens, tokens):
    """U as floats broadcast to tokens' shape; None (unlimited data) or NaN as inf."""
    tokens = np.asarray(tokens, float)
    if unique_tokens is None:
        return np.full(tokens.shape, np.inf)
    u = np.asarray(unique_tokens, float)
    return np.where(np.isnan(u), np.inf, u)


def _decayed(unique, repeats, r_star):
    """U + U·R*·(1 − exp(−R/R*)): what R repeats of U are worth."""
    return unique * (1.0 + r_star * -np.expm1(-repeats / r_star))


def log_n_of_unique(A, B, alpha, beta, unique_data):
    """log N_of_U = log(G·(U_D·G)^(β/α)) = (log(αA) − log(βB) + β·log U_D) / α: the compute-optimal N of the
    Chinchilla part at the budget whose optimal data is U_D tokens."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return (np.log(alpha * A) - np.log(beta * B) + beta * np.log(unique_data)) / alpha


def effective_data(tokens, unique_tokens, r_star_d):
    """D' for D = tokens drawn from unique_tokens (None or NaN: unlimited) with decay constant R*_D."""
    d = np.asarray(tokens, float)
    unique_data = np.minimum(_unique(unique_tokens, d), d)
    return _decayed(unique_data, d / unique_data - 1.0, r_star_d)


def effective_params(params, n_params, tokens, unique_tokens=None):
    """N' of a run: its parameters beyond N_of_U(U_D) discounted with decay constant R*_N."""
    p = _array(params)
    _, A, B, alpha, beta, _, r_star_n = (p[..., i] for i in range(7))
    n, d = np.asarray(n_params, float), np.asarray(tokens, float)
    unique_data = np.minimum(_unique(unique_tokens, d), d)
    unique_params = np.minimum(n, np.exp(log_n_of_unique(A, B, alpha, beta, unique_data)))
    return _decayed(unique_params, n / unique_params - 1.0, r_star_n)


def loss(params, n_params, tokens, unique_tokens=None):
    """L(N, D, U) for constants params (dict or (..., 7) array, PARAM_NAMES order); unique_tokens None =
    unlimited data. Broadcasts over arrays."""
    p = _array(params)
    E, A, B, alpha, beta, r_star_d, _ = (p[..., i] for i in range(7))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        n_eff = effective_params(p, n_params, tokens, unique_tokens)
        d_eff = effective_data(tokens, unique_tokens, r_star_d)
        return E + A / n_eff ** alpha + B / d_eff ** beta


def constants(theta):
    """The law's constants from optimiser coordinates (log E, log A, log B, α, β, log R*_D, log R*_N)."""
    e, a, b, alpha, beta, t_d, t_n = np.asarray(theta, float)
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)), "alpha": float(alpha),
            "beta": float(beta), "r_star_d": float(np.exp(t_d)), "r_star_n": float(np.exp(t_n))}


def _params_of_thetas(thetas):
    """(…, 7) optimiser coordinates -> (…, 7) constants in PARAM_NAMES order."""
    t = np.asarray(thetas, float)
    return np.stack([np.exp(t[..., 0]), np.exp(t[..., 1]), np.exp(t[..., 2]), t[..., 3], t[..., 4],
                     np.exp(t[..., 5]), np.exp(t[..., 6])], -1)


# --------------------------------------------------------------------------------------------- the fit

class _Design:
    """The runs as the objective needs them: logs of N, U_D, the repeats R_D (fixed by the data)."""

    def __init__(self, n_params, tokens, unique_tokens, losses):
        self.n = np.asarray(n_params, float)
        d = np.asarray(tokens, float)
        self.unique_data = np.minimum(_unique(unique_tokens, d), d)
        self.log_n, self.log_unique_data = np.log(self.n), np.log(self.unique_data)
        self.repeats_d = d / self.unique_data - 1.0
        self.log_loss = np.log(np.asarray(losses, float))


def _decay_and_derivative(unique, repeats, r_star):
    """(X' = U·(1 + R*·(1 − e)), dX'/dlog R*, dX'/dU at fixed N = U·(1 + R)), e = exp(−R/R*)."""
    e = np.exp(-repeats / r_star)
    value = unique * (1.0 + r_star * (1.0 - e))
    d_log_r_star = unique * r_star * ((1.0 - e) - repeats / r_star * e)
    d_unique = 1.0 + r_star * (1.0 - e) - e * (1.0 + repeats)
    return value, d_log_r_star, d_unique


def _objective(theta, design, weights):
    """Huber objective / δ and its gradient in the 7 optimiser coordinates."""
    e_log, a_log, b_log, alpha, beta, t_d, t_n = theta
    r_star_d, r_star_n = np.exp(t_d), np.exp(t_n)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        d_eff, d_dd_td, _ = _decay_and_derivative(design.unique_data, design.repeats_d, r_star_d)
        log_d_eff = np.log(d_eff)
        log_n_of_u = (np.log(alpha) + a_log - np.log(beta) - b_log + beta * design.log_unique_data) / alpha
        capped = log_n_of_u < design.log_n  # parameters beyond N_of_U: U_N = N_of_U
        log_unique_params = np.where(capped, log_n_of_u, design.log_n)
        unique_params = np.exp(log_unique_params)
        n_eff, d_nn_tn, d_nn_du = _decay_and_derivative(unique_params, design.n / unique_params - 1.0, r_star_n)
        log_n_eff = np.log(n_eff)
        terms = np.stack([np.full_like(log_n_eff, e_log), a_log - alpha * log_n_eff, b_log - beta * log_d_eff])
        top = terms.max(0)
        shares = np.exp(terms - top)
        total = shares.sum(0)
        shares /= total
        r = top + np.log(total) - design.log_loss
    if not np.all(np.isfinite(r)):
        return 1e6, np.zeros(7)
    absr = np.abs(r)
    h = np.where(absr <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (absr - 0.5 * HUBER_DELTA))
    psi = weights * np.clip(r, -HUBER_DELTA, HUBER_DELTA) / HUBER_DELTA
    share_e, share_n, share_d = shares
    # d log N' / d log U_N where U_N = N_of_U (0 elsewhere), and d log N_of_U / d(a_log, b_log, α, β).
    dlogn_du = np.where(capped, unique_params * d_nn_du / n_eff, 0.0)
    dlogu = np.stack([np.full_like(r, 1 / alpha), np.full_like(r, -1 / alpha),
                      (1.0 - alpha * log_n_of_u) / alpha ** 2, (design.log_unique_data - 1 / beta) / alpha])
    via_n = -alpha * share_n * dlogn_du  # d log L / d log U_N
    with np.errstate(over="ignore", invalid="ignore"):
        jac = np.stack([share_e,
                        share_n + via_n * dlogu[0],
                        share_d + via_n * dlogu[1],
                        -share_n * log_n_eff + via_n * dlogu[2],
                        -share_d * log_d_eff + via_n * dlogu[3],
                        -beta * share_d * d_dd_td / d_eff,
                        -alpha * share_n * d_nn_tn / n_eff])
        grad = jac @ psi
    if not np.all(np.isfinite(grad)):
        return 1e6, np.zeros(7)
    return float((weights * h).sum() / HUBER_DELTA), grad


def _refine(start, design, weights, maxiter=500):
    result = minimize(_objective, np.asarray(start, float), args=(design, weights), jac=True, method="L-BFGS-B",
                      bounds=BOUNDS, options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-8})
    return result.x, float(result.fun), bool(result.success)


def _chinchilla_start(design, tokens, losses):
    """The Chinchilla constants (log E, log A, log B, α, β) of the runs that saw unique data only, where
    there are enough of them to pin 5 constants; else of every run."""
    unique = design.repeats_d <= 0
    rows = unique if unique.sum() >= MIN_RUNS else np.ones_like(unique)
    point = parametric.fit_parametric(design.n[rows], np.asarray(tokens, float)[rows],
                                      np.asarray(losses, float)[rows], n_refine=20)
    return np.asarray(point["theta"], float)


def repetition_problem(tokens, unique_tokens) -> str | None:
    """Why the law cannot be fitted to these runs' data (no run repeats its data), or None."""
    d = np.asarray(tokens, float)
    u = _unique(unique_tokens, d)
    if not (d > u).any():
        return ("no run repeats its data (unique_tokens >= tokens for every run): the decay constants R*_D and "
                "R*_N are unidentifiable, and the law equals the Chinchilla form on these runs")
    return None


def fit_data_constrained(n_params, tokens, unique_tokens, losses, weights=None):
    """Fit the law to final losses. Returns {constants..., theta, objective, n_starts, starts_in_best_basin,
    best_converged, n_runs, n_repeated_runs, n_excess_param_runs, a, b}; raises PlmscaleError with fewer than
    MIN_RUNS runs or without a run that repeats data."""
    n, d, observed = (np.asarray(v, float) for v in (n_params, tokens, losses))
    if len(n) < MIN_RUNS:
        raise PlmscaleError(f"the data-constrained law has 7 constants and needs at least {MIN_RUNS} runs; "
                            f"got {len(n)}")
    problem = repetition_problem(d, unique_tokens)
    if problem:
        raise PlmscaleError(problem)
    design = _Design(n, d, unique_tokens, observed)
    weights = np.ones_like(n) if weights is None else np.asarray(weights, float)
    chinchilla = _chinchilla_start(design, d, observed)
    starts = [np.concatenate([chinchilla, np.log([r_d, r_n])]) for r_d in R_STAR_STARTS for r_n in R_STAR_STARTS]
    starts = [np.clip(s, [lo for lo, _ in BOUNDS], [hi for _, hi in BOUNDS]) for s in starts]
    results = [_refine(start, design, weights) for start in starts]
    values = np.array([r[1] for r in results])
    best = int(np.argmin(values))
    theta = results[best][0]
    in_basin = int((values - values[best] <= BASIN_REL_OBJECTIVE * max(abs(values[best]), 1e-12)).sum())
    c = constants(theta)
    a, b = parametric.implied_exponents(c["alpha"], c["beta"])
    excess = np.log(n) > log_n_of_unique(c["A"], c["B"], c["alpha"], c["beta"], design.unique_data)
    return {**c, "a": float(a), "b": float(b), "theta": theta.tolist(),
            "objective": float(values[best] * HUBER_DELTA), "n_starts": len(starts),
            "starts_in_best_basin": in_basin, "best_converged": results[best][2], "n_runs": int(len(n)),
            "n_repeated_runs": int((design.repeats_d > 0).sum()), "n_excess_param_runs": int(excess.sum())}


def refit(theta, design, weights):
    """A bootstrap refit from the point fit's coordinates (warm start): theta (7,), NaN where it failed."""
    x, value, _ = _refine(np.asarray(theta, float), design, np.asarray(weights, float), maxiter=200)
    return x if value < 1e6 else np.full(7, np.nan)


def bootstrap_params(point, n_params, tokens, unique_tokens, losses, counts):
    """(B, 7) constants (PARAM_NAMES order) refitted for bootstrap run counts (B, n); NaN rows where one failed."""
    design = _Design(n_params, tokens, unique_tokens, losses)
    # Shared out among worker processes (fit_workers): the same numbers for any number of them.
    thetas = fit_workers.map_rows(_refit_weights, np.asarray(counts, float), np.asarray(point["theta"], float), design)
    return _params_of_thetas(thetas.reshape(-1, 7))


def _refit_weights(weights, theta, design):
    return refit(theta, design, weights)


# ------------------------------------------------------------------------------ compute-optimal allocation

def optimal_allocation(params, flops, kappa=6.0, unique_tokens=None, n_range=N_SEARCH_RANGE):
    """N_opt, D_opt and the loss at compute C = κ·N·D for U = unique_tokens (None: unlimited data, where it is
    the Chinchilla optimum), minimising over a log grid of N, then by golden sections within a grid step of
    the best point (the loss has a kink where N reaches N_of_U, which a parabola would misplace). params: one
    set of constants or (K, 7). NaN where the minimum lies at an end of n_range or the loss is not finite."""
    p = np.atleast_2d(_array(params))
    log_grid = np.linspace(np.log(n_range[0]), np.log(n_range[1]), SEARCH_POINTS)
    grid = np.exp(log_grid)
    tokens = flops / (kappa * grid)
    losses = loss(p[:, None, :], grid[None, :], tokens[None, :], unique_tokens)
    log_best, at_end = refined_argmin(losses, log_grid)
    step = log_grid[1] - log_grid[0]

    def along_budget(log_n):
        return loss(p, np.exp(log_n), flops / (kappa * np.exp(log_n)), unique_tokens)

    log_opt = _golden_section(along_budget, log_best - step, log_best + step)
    n_opt = np.exp(log_opt)
    d_opt = flops / (kappa * n_opt)
    l_opt = loss(p, n_opt, d_opt, unique_tokens)
    bad = at_end | ~(np.isfinite(l_opt) & (l_opt > 0))
    n_opt, d_opt, l_opt = (np.where(bad, np.nan, v) for v in (n_opt, d_opt, l_opt))
    if np.ndim(_array(params)) == 1:
        return float(n_opt[0]), float(d_opt[0]), float(l_opt[0])
    return n_opt, d_opt, l_opt


def _golden_section(function, low, high, steps=GOLDEN_STEPS):
    """The minimum of function (arrays (K,) -> (K,)) within [low, high] per row, by golden sections."""
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    low, high = np.array(low, float), np.array(high, float)
    for _ in range(steps):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        with np.errstate(invalid="ignore"):
            keep_left = np.nan_to_num(function(left), nan=np.inf) <= np.nan_to_num(function(right), nan=np.inf)
        high, low = np.where(keep_left, right, high), np.where(keep_left, low, left)
    return (low + high) / 2


# ------------------------------------------------------------------------------------- the runs table

def unique_tokens_of(runs, source="runs table"):
    """The runs' unique_tokens as floats (empty cells: NaN, unique data), or raise PlmscaleError naming why the
    law cannot read them (no column, a cell that is not a positive number)."""
    if UNIQUE_TOKENS_COLUMN not in runs.columns:
        raise PlmscaleError(f"{source} has no {UNIQUE_TOKENS_COLUMN} column: the data-constrained law needs each "
                            "run's unique tokens U (D/U epochs) to fit how repeats decay; add the column (empty for "
                            "a run on unique data)")
    raw = runs[UNIQUE_TOKENS_COLUMN]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(float)
    text = raw.astype(str).str.strip().str.lower()
    empty = raw.isna().to_numpy() | text.isin(["", "nan"]).to_numpy()
    bad = (np.isnan(values) & ~empty) | (values <= 0)  # text that is not a number, or U <= 0
    if bad.any():
        shown = ", ".join(str(i) for i in runs["run_id"].to_numpy()[bad][:8])
        raise PlmscaleError(f"{source}: column {UNIQUE_TOKENS_COLUMN} must be a positive number of tokens or empty "
                            f"(unique data); run(s) {shown}")
    return values


def fit_entry(runs, kappa, counts=None, source="runs table"):
    """fit.json's `data_constrained` entry for one objective's scratch runs (n_params, tokens, unique_tokens,
    loss): the point fit, intervals of every constant and of a, b from bootstrap run counts (B, n) (at most
    MAX_BOOTSTRAP of them) with the draws, and how many runs lack a unique_tokens value."""
    unique = unique_tokens_of(runs, source)
    n, d, observed = (runs[c].to_numpy(float) for c in ("n_params", "tokens", "loss"))
    entry = fit_data_constrained(n, d, unique, observed)
    entry.update(flops_per_param_token=float(kappa), loss_law=LOSS_LAW,
                 n_runs_without_unique_tokens=int(np.isnan(unique).sum()))
    if counts is not None and len(counts):
        counts = np.asarray(counts)[:MAX_BOOTSTRAP]
        draws = bootstrap_params(entry, n, d, unique, observed, counts)
        failed = ~np.isfinite(draws).all(1)
        named = {name: draws[:, i] for i, name in enumerate(PARAM_NAMES)}
        named["a"], named["b"] = parametric.implied_exponents(named["alpha"], named["beta"])
        for name, values in named.items():
            entry[f"{name}_ci"] = boot.interval(values)
        entry["bootstrap"] = {"n": int(len(counts)), "n_failed": int(failed.sum()), "level": boot.CI_LEVEL,
                              "draws": {k: [None if not np.isfinite(v) else float(v) for v in values]
                                        for k, values in named.items()}}
    return entry


def stored_draws(entry):
    """(B, 7) constants from a fit.json entry's bootstrap draws (NaN where a refit failed), or None."""
    draws = (entry.get("bootstrap") or {}).get("draws") or {}
    if not set(PARAM_NAMES) <= set(draws):
        return None
    return np.array([[np.nan if v is None else v for v in draws[name]] for name in PARAM_NAMES], float).T


def loss_with_interval(entry, n_params, tokens, unique_tokens=None):
    """(L(N, D, U), its bootstrap interval or None) from a fit.json `data_constrained` entry."""
    point = float(loss(entry, n_params, tokens, unique_tokens))
    draws = stored_draws(entry)
    if draws is None:
        return point, None
    return point, boot.interval(loss(draws, n_params, tokens, unique_tokens))
