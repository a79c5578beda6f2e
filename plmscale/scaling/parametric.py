"""Parametric fit (Chinchilla approach 3): L(N, D) = E + A/N^α + B/D^β.

Fitted as in Hoffmann et al. (2022) and Besiroglu et al. (2024): Huber loss (δ = 1e-3) on the log of the
loss, the law written as LSE(a − α·log N, b − β·log D, e) with a = log A, b = log B, e = log E, from a
grid of starts. The objective is multimodal (E trades against A and B, α against a), so one start can
stop in the wrong basin. The objective is evaluated on the whole 4,500-start grid at once (one numpy
expression) and the best N_REFINE starts are refined together by `minimise_batch`: a batched, box-
constrained Levenberg–Marquardt / Newton method on the 5 parameters, all starts advancing in lock-step
as array arithmetic. (One scipy L-BFGS-B run per start spent 500+ iterations creeping down the E -> 0
valley, with Python overhead per iteration; the batched method needs a few hundred vectorised steps for
all starts together.) The result reports how many refined starts reached the best basin and converged.
"""

import numpy as np
from scipy.optimize import minimize

from plmscale.errors import PlmscaleError

HUBER_DELTA = 1e-3
N_REFINE = 100
# Iteration caps of the batched optimiser: grid starts may begin far from any basin; warm starts
# (bootstrap refits) begin one standard error from their optimum.
MAX_ITER = 500
MAX_ITER_WARM = 300
PARAM_NAMES = ("e", "a", "b", "alpha", "beta")
# L-BFGS-B box: exponents positive and below anything physical; logs of A and B wide enough for any loss
# measured in nats. E below e^-5 ≈ 0.007 nats is indistinguishable from 0 next to losses of ~2 nats; the
# bound stops the optimiser from walking hundreds of iterations down the flat valley towards E = 0
# (where the gradient in e vanishes), which the released MLM curves (and the paper's MLM fit) lead to.
BOUNDS = [(-5.0, 5.0), (-20.0, 60.0), (-20.0, 60.0), (1e-4, 5.0), (1e-4, 5.0)]
# Two refined starts share the best basin when their objectives agree to BASIN_REL_OBJECTIVE and every
# parameter agrees to BASIN_PARAM_TOL·(1 + |value|).
BASIN_REL_OBJECTIVE = 1e-4
BASIN_PARAM_TOL = 1e-2
LOW = np.array([bound[0] for bound in BOUNDS])
HIGH = np.array([bound[1] for bound in BOUNDS])
# Stopping rule of the batched optimiser (objective scaled by 1/δ as for L-BFGS-B): a step that gains
# less than FTOL relative, or a projected gradient below GTOL, ends a start. Tighter than the L-BFGS-B
# settings (1e-10, 1e-7): the Newton steps converge quadratically, so the extra digits cost a few steps.
FTOL = 1e-13
GTOL = 1e-9
# A start switches from Gauss–Newton (IRLS curvature, robust far away) to also trying the exact-Hessian
# step once an accepted step gains less than this fraction of the objective.
NEWTON_SWITCH = 1e-4
# Keeps K·n (starts × runs) per batch below this: ~100 MB of temporaries at most, for big bootstraps.
BATCH_ELEMENTS = 500_000


def chinchilla_grid():
    """The 4,500-start grid of Hoffmann et al.: e in -1..1 (5), a, b in 0..25 (6 each), α, β in 0..2 (5 each).

    α = β = 0 starts sit just inside the box (the optimiser clips them to the bound).
    """
    e = np.linspace(-1, 1, 5)
    ab = np.linspace(0, 25, 6)
    exponents = np.linspace(0, 2, 5)
    grid = np.stack(np.meshgrid(e, ab, ab, exponents, exponents, indexing="ij"), -1).reshape(-1, 5)
    low = np.array([b[0] for b in BOUNDS])
    high = np.array([b[1] for b in BOUNDS])
    return np.clip(grid, low, high)


def _huber(r, delta=HUBER_DELTA):
    absr = np.abs(r)
    return np.where(absr <= delta, 0.5 * r * r, delta * (absr - 0.5 * delta))


def _log_terms(theta, log_n, log_d):
    """(…, n, 3) stack of a − α log N, b − β log D, e for parameter rows theta (…, 5)."""
    theta = np.asarray(theta, float)
    e, a, b, alpha, beta = (theta[..., i, None] for i in range(5))
    return np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (a - alpha * log_n).shape)], -1)


def objective_batch(thetas, log_n, log_d, log_loss, weights=None, delta=HUBER_DELTA):
    """Huber objective for many parameter rows at once: thetas (K, 5) -> (K,). weights (n,) or (K, n)."""
    terms = _log_terms(thetas, log_n, log_d)
    top = terms.max(-1)
    lse = top + np.log(np.exp(terms - top[..., None]).sum(-1))
    h = _huber(lse - log_loss, delta)
    if weights is not None:
        h = h * weights
    return h.sum(-1)


def _objective_and_grad(theta, log_n, log_d, log_loss, weights, delta):
    terms = _log_terms(theta, log_n, log_d)
    top = terms.max(-1)
    shifted = np.exp(terms - top[:, None])
    total = shifted.sum(-1)
    lse = top + np.log(total)
    share = shifted / total[:, None]
    r = lse - log_loss
    h = _huber(r, delta) * weights
    g = np.clip(r, -delta, delta) * weights
    grad = np.array([(g * share[:, 2]).sum(), (g * share[:, 0]).sum(), (g * share[:, 1]).sum(),
                     -(g * share[:, 0] * log_n).sum(), -(g * share[:, 1] * log_d).sum()])
    # Scaled by 1/δ so that L-BFGS-B's relative stopping rule sees an O(n) objective, not O(n·δ²).
    return h.sum() / delta, grad / delta


def minimise_from(start, log_n, log_d, log_loss, weights=None, delta=HUBER_DELTA, maxiter=1000):
    """One L-BFGS-B run. Returns (theta, objective)."""
    weights = np.ones_like(log_n) if weights is None else np.asarray(weights, float)
    result = minimize(_objective_and_grad, np.asarray(start, float), jac=True, method="L-BFGS-B",
                      bounds=BOUNDS, args=(log_n, log_d, log_loss, weights, delta),
                      options={"maxiter": maxiter, "ftol": 1e-10, "gtol": 1e-7})
    return result.x, float(result.fun) * delta


def _derivatives(thetas, log_n, log_d, log_loss, weights, delta):
    """Objective/δ, gradient and two curvature matrices for parameter rows thetas (K, 5), weights (K, n).

    r = LSE(terms) − log loss; the objective is Σ w·ρ(r) with ρ the Huber function. Its Jacobian row is
    J = (s_e, s_a, s_b, −s_a·log N, −s_b·log D) with s the softmax shares of the three terms.
    Returns F (K,), g (K, 5), H_gn (K, 5, 5): Gauss–Newton with IRLS weights min(1, δ/|r|) (positive
    semi-definite, majorises the Huber curvature: safe far from the optimum) and H_newton (K, 5, 5): the
    exact Hessian (ρ'' = 1 inside δ, 0 outside, plus the LSE second-derivative term; fast near it).
    """
    e, a, b, alpha, beta = (thetas[:, i, None] for i in range(5))
    t_n, t_d = a - alpha * log_n, b - beta * log_d
    top = np.maximum(np.maximum(t_n, t_d), e)
    x_n, x_d, x_e = np.exp(t_n - top), np.exp(t_d - top), np.exp(e - top)
    total = x_n + x_d + x_e
    s_n, s_d, s_e = x_n / total, x_d / total, x_e / total
    r = top + np.log(total) - log_loss
    absr = np.abs(r)
    inside = absr <= delta
    value = (weights * np.where(inside, 0.5 * r * r, delta * (absr - 0.5 * delta))).sum(-1) / delta
    psi = weights * np.clip(r, -delta, delta) / delta
    jac = np.stack([s_e, s_n, s_d, -s_n * log_n, -s_d * log_d], -1)
    grad = (psi[:, None, :] @ jac)[:, 0]
    jac_t = jac.transpose(0, 2, 1)
    irls = weights * np.minimum(1.0, delta / np.maximum(absr, 1e-300)) / delta
    h_gn = (jac_t * irls[:, None, :]) @ jac
    # d²r = Σ_j s_j v_j v_jᵀ − J Jᵀ with v_j the (constant) gradients of the three terms.
    h_newton = (jac_t * ((weights * inside) / delta - psi)[:, None, :]) @ jac
    p_n, p_d = psi * s_n, psi * s_d
    h_newton[:, 0, 0] += (psi * s_e).sum(-1)
    h_newton[:, 1, 1] += p_n.sum(-1)
    h_newton[:, 3, 3] += (p_n * log_n * log_n).sum(-1)
    h_newton[:, 2, 2] += p_d.sum(-1)
    h_newton[:, 4, 4] += (p_d * log_d * log_d).sum(-1)
    cross_n, cross_d = (p_n * log_n).sum(-1), (p_d * log_d).sum(-1)
    h_newton[:, 1, 3] -= cross_n
    h_newton[:, 3, 1] -= cross_n
    h_newton[:, 2, 4] -= cross_d
    h_newton[:, 4, 2] -= cross_d
    return value, grad, h_gn, h_newton


def minimise_batch(starts, log_n, log_d, log_loss, weights=None, delta=HUBER_DELTA, max_iter=MAX_ITER):
    """Minimise the Huber objective from many starts at once, within BOUNDS.

    weights: None, (n,) or (K, n) — one weight vector per start (a bootstrap resample's run counts).
    Returns (thetas (K, 5), objectives (K,) unscaled as objective_batch, converged (K,) bool,
    iterations (K,) int). Starts are split into batches of at most BATCH_ELEMENTS starts × runs.
    """
    starts = np.atleast_2d(np.asarray(starts, float))
    K, n = len(starts), len(log_n)
    weights = np.broadcast_to(np.ones(n) if weights is None else np.asarray(weights, float), (K, n))
    size = max(1, BATCH_ELEMENTS // max(n, 1))
    parts = [_minimise_chunk(starts[i:i + size], log_n, log_d, log_loss, weights[i:i + size], delta, max_iter)
             for i in range(0, K, size)]
    return tuple(np.concatenate(arrays) for arrays in zip(*parts))


def _derivatives_linear_e(phi, log_n, log_d, log_loss, weights, delta):
    """_derivatives in the coordinates φ = (E, a, b, α, β): E itself instead of e = log E.

    Where the fit runs towards E -> 0 (the released curves do), the valley is straight in E but curved
    and exponentially long in e: Newton steps in e crawl ~0.01–0.03 per iteration towards the bound, in E a
    few steps reach it. The objective, its minima and the box are the same; only the path changes.
    """
    E = phi[:, 0]
    theta = phi.copy()
    theta[:, 0] = np.log(E)
    value, grad, h_gn, h_newton = _derivatives(theta, log_n, log_d, log_loss, weights, delta)
    g_e = grad[:, 0].copy()
    inv = np.ones_like(phi)
    inv[:, 0] = 1 / E
    grad *= inv
    h_gn *= inv[:, :, None] * inv[:, None, :]
    h_newton *= inv[:, :, None] * inv[:, None, :]
    h_newton[:, 0, 0] -= g_e / (E * E)  # d²F/dE² = (d²F/de² − dF/de) / E²
    return value, grad, h_gn, h_newton


def _minimise_chunk(starts, log_n, log_d, log_loss, weights, delta, max_iter):
    """Projected Levenberg–Marquardt, all starts in lock-step; finished starts drop out of the arrays.

    Works in φ = (E, a, b, α, β) (see _derivatives_linear_e). Each iteration solves
    (H + λ·diag(H_gn)) p = −g per start, with parameters held at a bound (gradient pushing outwards)
    frozen, clips the step into the box and accepts it only if the objective drops (then λ /= 3,
    else λ *= 4). Near the optimum it also tries the exact-Hessian step and keeps the
    better of the two, which turns the linear convergence of Gauss–Newton on Huber residuals into a
    quadratic one.
    """
    low, high = LOW.copy(), HIGH.copy()
    low[0], high[0] = np.exp(LOW[0]), np.exp(HIGH[0])
    theta = np.clip(starts, LOW, HIGH)
    theta[:, 0] = np.exp(theta[:, 0])
    theta = np.clip(theta, low, high)
    K = len(theta)
    value, grad, h_gn, h_newton = _derivatives_linear_e(theta, log_n, log_d, log_loss, weights, delta)
    lam = np.full(K, 1e-3)
    near = np.zeros(K, bool)
    running = np.isfinite(value)
    converged = np.zeros(K, bool)
    iterations = np.zeros(K, int)
    eye = np.eye(5)
    for _ in range(max_iter):
        idx = np.flatnonzero(running)
        if len(idx) == 0:
            break
        th, g = theta[idx], grad[idx].copy()
        frozen = ((th <= low) & (g > 0)) | ((th >= high) & (g < 0))
        g[frozen] = 0.0
        stationary = np.abs(g).max(1) <= GTOL
        pair = frozen[:, :, None] | frozen[:, None, :]
        scale = np.maximum(np.einsum("kii->ki", h_gn[idx]), 1e-12)
        damping = (lam[idx, None] * scale + frozen)[:, :, None] * eye
        step = -np.linalg.solve(np.where(pair, 0.0, h_gn[idx]) + damping, g[..., None])[..., 0]
        trial = np.clip(th + step, low, high)
        with np.errstate(over="ignore", invalid="ignore"):
            best = [trial, *_derivatives_linear_e(trial, log_n, log_d, log_loss, weights[idx], delta)]
        sub = np.flatnonzero(near[idx])
        if len(sub):  # the exact-Hessian step, for starts close to their optimum; keep the better one
            rows = idx[sub]
            step = -np.linalg.solve(np.where(pair[sub], 0.0, h_newton[rows]) + damping[sub],
                                    g[sub, :, None])[..., 0]
            trial = np.clip(th[sub] + step, low, high)
            with np.errstate(over="ignore", invalid="ignore"):
                result = (trial, *_derivatives_linear_e(trial, log_n, log_d, log_loss, weights[rows], delta))
            better = result[1] < best[1][sub]
            for old, new in zip(best, result):
                old[sub[better]] = new[better]
        trial, t_value = best[0], best[1]
        accept = np.isfinite(t_value) & (t_value < value[idx]) & ~stationary
        gain = value[idx] - t_value
        taken = idx[accept]
        theta[taken], value[taken], grad[taken] = trial[accept], t_value[accept], best[2][accept]
        h_gn[taken], h_newton[taken] = best[3][accept], best[4][accept]
        near[taken] |= gain[accept] <= NEWTON_SWITCH * t_value[accept]
        lam[taken] = np.maximum(lam[taken] / 3, 1e-9)
        lam[idx[~accept]] *= 4
        iterations[idx] += 1
        # Done: projected gradient ~0, a step that gains (almost) nothing, or no descent left to find.
        done = stationary | (accept & (gain <= FTOL * np.maximum(value[idx], 1e-300))) | (lam[idx] > 1e10)
        converged[idx[done]] = True
        running[idx[done]] = False
    theta[:, 0] = np.clip(np.log(theta[:, 0]), LOW[0], HIGH[0])
    return theta, value * delta, converged, iterations


def implied_exponents(alpha, beta):
    """Compute-optimal allocation exponents of the law: N_opt ∝ C^(β/(α+β)), D_opt ∝ C^(α/(α+β))."""
    return beta / (alpha + beta), alpha / (alpha + beta)


def constants(theta):
    e, a, b, alpha, beta = np.asarray(theta, float)
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)),
            "alpha": float(alpha), "beta": float(beta)}


def allocation_laws(A, B, alpha, beta, kappa):
    """The frontier as power laws: ((k_n, a), (k_d, b)) with N_opt = k_n·C^a and D_opt = k_d·C^b.

    Chinchilla's closed form: G = (αA / (βB))^(1/(α+β)), N_opt = G·(C/κ)^a, D_opt = G⁻¹·(C/κ)^b,
    a = β/(α+β), b = α/(α+β). Exponents near 0 overflow G to inf: callers check finiteness.
    """
    alpha, beta, A, B = (np.float64(v) for v in (alpha, beta, A, B))
    with np.errstate(over="ignore"):
        G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    a, b = beta / (alpha + beta), alpha / (alpha + beta)
    return (G * kappa ** -a, a), (kappa ** -b / G, b)


def optimal_allocation(E, A, B, alpha, beta, flops, kappa):
    """Minimise L(N, D) subject to C = κ·N·D. Works elementwise on arrays of constants (bootstrap).

    Returns (n_opt, d_opt, loss): with G = (αA / (βB))^(1/(α+β)), N_opt = G·(C/κ)^(β/(α+β)).
    """
    E, A, B, alpha, beta = (np.asarray(v, float) for v in (E, A, B, alpha, beta))
    nd = flops / kappa
    log_g = (np.log(alpha * A) - np.log(beta * B)) / (alpha + beta)
    n_opt = np.exp(log_g + beta / (alpha + beta) * np.log(nd))
    d_opt = nd / n_opt
    loss = E + A / n_opt ** alpha + B / d_opt ** beta
    return n_opt, d_opt, loss


def loss_of(fit, n_params, tokens):
    """L(N, D) = E + A/N^alpha + B/D^beta for a fit's constants (a dict with E, A, B, alpha, beta)."""
    n, d = np.asarray(n_params, float), np.asarray(tokens, float)
    return fit["E"] + fit["A"] / n ** fit["alpha"] + fit["B"] / d ** fit["beta"]


def highest_loss_mask(loss, k):
    """Boolean mask of the k highest losses (config fit.parametric.drop_highest_loss; ties: the later row).

    Epoch AI's replication of Chinchilla drops the worst-fitting runs; a Huber loss already limits what
    an outlier far above the frontier can pull, this removes it. The caller records what it dropped."""
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise PlmscaleError(f"fit.parametric.drop_highest_loss must be a whole number >= 0, got {k!r}")
    loss = np.asarray(loss, float)
    if k and len(loss) - k < 5:
        raise PlmscaleError(f"fit.parametric.drop_highest_loss = {k} leaves {len(loss) - k} of {len(loss)} runs; "
                            "the parametric law needs 5")
    mask = np.zeros(len(loss), bool)
    if k:
        mask[np.argsort(loss, kind="stable")[::-1][:int(k)]] = True
    return mask


def fit_parametric(n_params, tokens, loss, weights=None, grid=None, n_refine=N_REFINE):
    """Fit L = E + A/N^α + B/D^β to final losses; see the module docstring for the method.

    Returns a dict with the unrounded constants, the best objective, the implied allocation exponents,
    n_starts (grid size), n_refined, starts_in_best_basin (among refined), n_converged (refined starts
    that met the stopping rule within MAX_ITER iterations; the others are still counted by where they
    stopped), the basin tolerances, the best theta (e, a, b, α, β) and the refined solutions of the
    runner-up basins (for warm restarts).
    """
    log_n, log_d, log_loss = (np.log(np.asarray(v, float)) for v in (n_params, tokens, loss))
    if len(log_n) < 5:
        raise PlmscaleError(f"parametric fit needs at least 5 runs (5 free parameters); got {len(log_n)}")
    weights = np.ones_like(log_n) if weights is None else np.asarray(weights, float)
    grid = chinchilla_grid() if grid is None else np.asarray(grid, float)
    screen = objective_batch(grid, log_n, log_d, log_loss, weights)
    order = np.argsort(screen, kind="stable")[:min(n_refine, len(grid))]
    solutions, values, converged, iterations = minimise_batch(grid[order], log_n, log_d, log_loss, weights)
    values = np.where(np.isfinite(values), values, np.inf)
    best = int(np.argmin(values))
    theta = solutions[best]
    in_basin = _same_basin(solutions, values, theta, values[best])
    # Distinct runner-up basins, best first: warm starts for the bootstrap refits.
    others = []
    for i in np.argsort(values):
        if in_basin[i] or any(_same_basin(solutions[i:i + 1], values[i:i + 1], o, values[i])[0] for o in others):
            continue
        others.append(solutions[i])
        if len(others) == 3:
            break
    c = constants(theta)
    a_exp, b_exp = implied_exponents(c["alpha"], c["beta"])
    return {**c, "a": float(a_exp), "b": float(b_exp), "objective": float(values[best]),
            "theta": theta.tolist(), "n_starts": int(len(grid)), "n_refined": int(len(order)),
            "starts_in_best_basin": int(in_basin.sum()),
            "n_converged": int(converged.sum()), "max_iterations": MAX_ITER,
            "iterations_median": float(np.median(iterations)), "best_converged": bool(converged[best]),
            "basin_tolerance": {"relative_objective": BASIN_REL_OBJECTIVE, "parameter": BASIN_PARAM_TOL},
            "runner_up_thetas": [o.tolist() for o in others], "huber_delta": HUBER_DELTA,
            "n_runs": int(len(log_n))}


def _same_basin(solutions, values, theta, best_value):
    close_objective = values - best_value <= BASIN_REL_OBJECTIVE * max(abs(best_value), 1e-12)
    close_params = (np.abs(solutions - theta) <= BASIN_PARAM_TOL * (1 + np.abs(theta))).all(1)
    return close_objective & close_params


def refit_warm(starts, n_params, tokens, loss, weights, max_iter=MAX_ITER_WARM):
    """Refits of many weight vectors (bootstrap resamples), each from a few warm starts, all batched.

    starts (S, 5); weights (B, n). Every resample is refitted from every start; the lower objective wins.
    Returns thetas (B, 5) (NaN rows where no refit is finite), objectives (B,), converged (B,) bool (of
    the winning refit). max_iter is lower than for the grid: a warm start is already in the basin; where
    the basin is a flat valley (E -> 0, a trading against alpha) the last iterations move along the
    valley, not the fit.
    """
    log_n, log_d, log_loss = (np.log(np.asarray(v, float)) for v in (n_params, tokens, loss))
    starts = np.atleast_2d(np.asarray(starts, float))
    weights = np.atleast_2d(np.asarray(weights, float))
    n_boot, n_starts = len(weights), len(starts)
    # Row j*B + i: resample i from start j.
    thetas, values, converged, _ = minimise_batch(np.repeat(starts, n_boot, axis=0), log_n, log_d, log_loss,
                                                  np.tile(weights, (n_starts, 1)), max_iter=max_iter)
    values = np.where(np.isfinite(values), values, np.inf).reshape(n_starts, n_boot)
    pick = np.argmin(values, axis=0)
    rows = pick * n_boot + np.arange(n_boot)
    best = thetas[rows]
    best[~np.isfinite(values[pick, np.arange(n_boot)])] = np.nan
    return best, values[pick, np.arange(n_boot)], converged[rows]
