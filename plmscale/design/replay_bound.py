"""How close can any selection come to the whole pool's R²? The first-order bound behind replay's bar.

Issue 22's bar asks a selection's forecasts to reach the R² of the fit on the whole pool within 0.05. What a
selection can reach depends on the noise and on where the targets lie, not only on the strategy. Where the law
is known (a synthetic pool), that part can be computed. To first order in the run-to-run noise σ (log-normal,
every run and every target), the forecast of target t from a fit on the runs S has log-scale variance
σ²·g_t·(J_SᵀJ_S)⁻¹·g_tᵀ about the truth, with J_S the selection's Jacobian and g_t the target's, both in
the constants at the true law (replay.log_loss_jacobian). The target's observed loss has its own noise, σ²,
independent of the fit. So the expected squared error of target t is L_t²·σ²·(1 + v_t(S)), and

    expected R²(S)         = 1 − Σ_t L_t²σ²(1 + v_t(S)) / SS_tot
    expected R² gap(S)     = Σ_t L_t²σ²(v_t(S) − v_t(pool)) / SS_tot

with SS_tot the observed targets' spread about their mean, as replay.judge_forecasts computes R². The gap
depends on the selection only through Σ_t L_t²·v_t(S), which is (up to the weights L_t²) what v-optimal
designs minimise. The best selection under a budget therefore sets a floor on the expected gap that no
strategy's mean can beat, to first order: `best_selection` looks for it with plmscale's own greedy and
exchange run at the true law (`replay.select_runs(..., known_law=θ)`, an oracle's design), and the exchange
from other selections.

Those variances are least squares'. The fit plmscale uses is Huber on log-loss with δ = 1e-3
(scaling/parametric.py, after Hoffmann et al.), which at 0.5% noise is close to least absolute deviations:
its constants vary more, by the factor `huber_variance_factor` (1.42 at δ/σ = 0.2; its asymptotic variance
under Gaussian noise), so the expected gap of a selection fitted as plmscale fits it is that factor times
the least-squares gap (measured on fixed designs: 1.15-1.62, least squares 0.91-1.17; docs/replay-measured.md).

On a pool whose law is not known, `expected` makes the same computation at the whole pool's fit, with the noise
its residuals show: replay.json's "expected" block, so a replay says how close any selection of its budget
could come, beside how close each strategy came.

Pure functions of θ and the tables; no fits.
"""

import math

import numpy as np
import pandas as pd

from plmscale.design.replay import exchange, log_forecast, log_loss_jacobian, select_runs
from plmscale.scaling.parametric import HUBER_DELTA


def forecast_variances(theta, runs: pd.DataFrame, targets: pd.DataFrame) -> np.ndarray:
    """v_t: each target's log-loss forecast variance, in units of σ², from a least-squares fit on `runs` at θ.
    Infinite where the runs cannot determine the five constants (fewer than five, or all on one curve)."""
    jac = log_loss_jacobian(theta, runs["n_params"], runs["tokens"])
    targets_jac = log_loss_jacobian(theta, targets["n_params"], targets["tokens"])
    information = jac.T @ jac
    if len(runs) < information.shape[0] or np.linalg.cond(information) > 1e14:
        return np.full(len(targets), np.inf)
    return np.einsum("ti,ij,tj->t", targets_jac, np.linalg.inv(information), targets_jac)


def _weights(targets: pd.DataFrame, noise: float):
    observed = targets["loss"].to_numpy(float)
    spread = float(np.sum((observed - observed.mean()) ** 2))
    return observed ** 2 * noise ** 2 / spread


def expected_r2_gap(theta, pool: pd.DataFrame, selected: pd.DataFrame, targets: pd.DataFrame, noise: float) -> float:
    """expected R²(pool) − expected R²(selected), to first order in the noise (module doc): what choosing
    `selected` instead of the whole pool is expected to cost in R², from the forecasts' variance alone."""
    extra = forecast_variances(theta, selected, targets) - forecast_variances(theta, pool, targets)
    if not np.all(np.isfinite(extra)):
        return math.inf  # the selection cannot determine the constants: no forecast, whatever the noise
    return float(np.sum(_weights(targets, noise) * extra))


def huber_variance_factor(noise: float, delta: float = HUBER_DELTA) -> float:
    """Asymptotic variance of a Huber fit (threshold delta) relative to least squares, under Gaussian noise of
    sd `noise`: E[ψ²] / (E[ψ']² σ²) with ψ the residual clipped at ±delta. 1 for delta ≫ noise, π/2 for
    delta ≪ noise (least absolute deviations)."""
    k = delta / noise
    inside = math.erf(k / math.sqrt(2))  # P(|r| < delta)
    density = math.exp(-k * k / 2) / math.sqrt(2 * math.pi)
    clipped_square = noise ** 2 * (inside - 2 * k * density) + delta ** 2 * (1 - inside)
    return clipped_square / (inside ** 2 * noise ** 2)


def noise_meeting(least_squares_gap: float, noise: float, bar: float, delta: float | None = HUBER_DELTA) -> float:
    """The noise σ at which a selection whose least-squares expected gap is `least_squares_gap` at `noise`
    would be expected to reach `bar`, fitted with Huber at `delta` (None: least squares). The least-squares
    gap scales as σ², Huber's factor falls towards 1 as σ falls below delta."""
    if least_squares_gap <= 0:
        return math.inf

    def gap(sigma):
        factor = 1.0 if delta is None else huber_variance_factor(sigma, delta)
        return factor * least_squares_gap * (sigma / noise) ** 2

    low, high = 0.0, noise
    while gap(high) < bar:
        low, high = high, 2 * high
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if gap(middle) < bar else (low, middle)
    return (low + high) / 2


# Exchange swaps of the best selection's search: until no swap helps, in practice (tens of swaps).
BEST_SELECTION_SWAPS = 300
# Halvings of log F in fraction_meeting: from 1e-3 to 1, 8 give F to within a factor 1.03.
FRACTION_STEPS = 8
# 1.4826 × the median absolute residual estimates a Gaussian sd and ignores a few outlying runs.
MAD_TO_SD = 1.4826


def residual_noise(theta, runs: pd.DataFrame) -> float:
    """The run-to-run noise on the log scale that the runs' residuals about the law θ show (MAD-based sd)."""
    residuals = np.log(runs["loss"].to_numpy(float)) - log_forecast(theta, runs["n_params"], runs["tokens"])
    return float(MAD_TO_SD * np.median(np.abs(residuals - np.median(residuals))))


def best_selection(theta, pool: pd.DataFrame, targets: pd.DataFrame, budget_fraction: float, starts=(),
                   noise: float = 0.005) -> np.ndarray:
    """Positions of the selection within budget_fraction of the pool's FLOPs with the lowest expected R² gap
    found at θ: plmscale's greedy and exchange at θ (select_runs with known_law), and the exchange at θ from
    each of `starts` (other strategies' selections); the best of them. A local search: a floor only as good as
    its starts, and never above any of them (the exchange only takes a swap that lowers the variance)."""
    budget = budget_fraction * pool["flops"].sum()
    found = [select_runs(pool, targets, "plmscale", budget_fraction, known_law=theta)[0],
             *[np.asarray(s) for s in starts]]
    found += [exchange(theta, pool, targets, chosen, budget, max_swaps=BEST_SELECTION_SWAPS) for chosen in list(found)]
    gaps = [expected_r2_gap(theta, pool, pool.iloc[chosen], targets, noise) for chosen in found]
    return np.asarray(found[int(np.argmin(gaps))])


def fraction_meeting(theta, pool: pd.DataFrame, targets: pd.DataFrame, r2_gap: float, noise: float,
                     factor: float = 1.0, lowest: float = 1e-3, steps: int = FRACTION_STEPS) -> float:
    """The smallest budget fraction (of the pool's FLOPs) whose best selection is expected within r2_gap of the
    whole pool's R² (gaps × factor): bisection on log F between `lowest` and 1 (where the gap is 0), `steps`
    halvings, the upper end returned. `lowest` itself when even that budget's best selection meets it."""

    def meets(fraction):
        chosen = best_selection(theta, pool, targets, fraction, (), noise)
        return factor * expected_r2_gap(theta, pool, pool.iloc[chosen], targets, noise) <= r2_gap

    low, high = math.log(lowest), 0.0
    if meets(lowest):
        return lowest
    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (low, middle) if meets(math.exp(middle)) else (middle, high)
    return float(math.exp(high))


def expected(pool: pd.DataFrame, targets: pd.DataFrame, result: dict, bar: float | None = None) -> dict:
    """replay.json's "expected" block for a replay's result (replay.replay): at the whole pool's law
    (all_runs.theta), with the noise its residuals show and the Huber factor of the fit replays make, the
    expected R² gap of each strategy's selections (mean over its repeats) and of the best selection found
    within the same budget (best_selection, started from every strategy's first selection). With `bar` (an R²
    gap), also the smallest budget fraction whose best selection is expected within it (fraction_meeting).
    None where R² is undefined (fewer than two targets, or targets of one loss), as replay's own r2 is."""
    observed = targets["loss"].to_numpy(float)
    if len(observed) < 2 or np.ptp(observed) == 0:
        return None
    theta = np.asarray(result["all_runs"]["theta"], float)
    noise = residual_noise(theta, pool)
    factor = huber_variance_factor(noise) if noise > 0 else 1.0
    position = {run_id: i for i, run_id in enumerate(pool["run_id"])}
    picks = {name: [[position[r] for r in repeat["selected"]] for repeat in entry["per_repeat"]]
             for name, entry in result["strategies"].items()}

    def gap(chosen):
        return factor * expected_r2_gap(theta, pool, pool.iloc[chosen], targets, noise)

    fraction = next(iter(result["strategies"].values()))["budget_fraction"] if picks else 1.0
    best = best_selection(theta, pool, targets, fraction, [p[0] for p in picks.values()], noise)
    block = {"law": "the whole pool's fit (all_runs.theta)", "noise": noise, "huber_factor": factor,
             "r2_gap": {name: float(np.mean([gap(c) for c in chosen])) for name, chosen in picks.items()},
             "best_selection": {"r2_gap": gap(best), "n_selected": int(len(best)),
                                "selected": pool["run_id"].iloc[best].tolist()}}
    if bar is not None:
        block["fraction_meeting"] = {"r2_gap": float(bar),
                                     "budget_fraction": fraction_meeting(theta, pool, targets, bar, noise, factor)}
    return block
