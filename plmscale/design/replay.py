"""Replay: how well does a run-selection strategy forecast larger runs, on a pool of runs already finished?

Given POOL (finished runs: run_id, n_params, tokens, flops, loss; optional unique_tokens, replicate) and
TARGETS (larger runs, never selected), a replay starts from the N_INITIAL cheapest pool runs (the fewest
the parametric law's 5 constants need), lets a strategy add pool runs one at a time while their FLOPs fit
in F of the pool's total FLOPs (a run costs its flops; the initial runs count), refits the law plmscale
uses (scaling/parametric.py: L = E + A/N^α + B/D^β, Huber on log-loss) on the selection, and forecasts
every target's loss at its (n_params, tokens).

Strategies (all pick among the pool runs still affordable with the budget left):
- random: uniformly at random (the baseline every design must beat; the only one that uses the seed).
- cheapest: the cheapest run next (a study that stops early).
- d-optimal: the run that raises det of the Fisher information of the law's constants most, at the
  current fit (matrix determinant lemma: maximise J_c·I⁻¹·J_cᵀ).
- v-optimal: the run that lowers the summed variance of the targets' log-loss forecasts most, via the
  forecasts' Jacobian G in the constants (Sherman–Morrison: maximise |G·I⁻¹·J_cᵀ|² / (1 + J_c·I⁻¹·J_cᵀ)).
- plmscale: greedy v-optimal gain per FLOP^COST_POWER, then an exchange pass that swaps picked runs for
  unpicked ones while the summed forecast variance drops within the budget; see `_plmscale_scores` and
  `exchange` for why.

Forecast intervals come from the fit's covariance (delta method), not a bootstrap: σ²·(JᵀJ)⁻¹ on the
log-loss scale, σ² from the selection's residuals with one pseudo-observation at NOISE_PRIOR (so 5 runs
for 5 constants still give an interval), and the forecast's gradient in the constants; the 95% interval
is exp(log forecast ± 1.96 sd). A bootstrap per replay would cost ~100 refits; the covariance costs one
5×5 solve, which is what lets a benchmark replay every strategy many times.

Cost: the criteria are linearised at the current fit, so scoring all m candidates is one (m, 5) Jacobian
and a few 5×5 products. After each pick the law is refitted warm from the previous constants by the
batched optimiser (at most WARM_MAX_ITER iterations, a few ms for tens of runs); the full 4,500-start
grid fit runs only when the selection has doubled since the last one (log₂ n grid fits), and once at
the end. A replay of k picks costs k warm refits + O(log k) grid fits; random and cheapest need
no fit until the end.
"""

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from plmscale.design import replay_verdict
from plmscale.errors import PlmscaleError
from plmscale.scaling import parametric

log = logging.getLogger(__name__)

STRATEGIES = ("random", "cheapest", "d-optimal", "v-optimal", "plmscale")
# Strategies whose picks do not depend on the seed: their repeats are one replay, reported K times over.
DETERMINISTIC = {"cheapest", "d-optimal", "v-optimal", "plmscale"}
N_INITIAL = 5  # the law's 5 constants
Z_95 = 1.959963984540054
# Run-to-run noise of a final loss on the log scale, as one pseudo-observation in the residual variance:
# about what replicated runs show (0.3-1% of the loss; the demo and the released curves' replicates).
NOISE_PRIOR = 0.005
# Ridge on the Fisher information, relative to its trace: keeps I invertible while the selection cannot
# yet tell two constants apart (5 runs of one budget), with variances huge along that direction.
RIDGE = 1e-12
# plmscale's strategy: greedy on gain per FLOP^COST_POWER (see _plmscale_scores), then EXCHANGE_ROUNDS of
# exchange (each: swaps at the current fit until none helps, at most EXCHANGE_MAX_SWAPS, then a refit).
# Chosen on a selection set of synthetic pools apart from those the strategies are judged on, among cost
# powers 0, 0.25, 0.5 with and without the exchange (benchmarks/replay_strategies.py, docs/replay-measured.md).
COST_POWER = 0.5
EXCHANGE_ROUNDS = 2
# Iterations of a warm refit after one pick: the optimum moves little when one run joins.
WARM_MAX_ITER = 100
EXCHANGE_MAX_SWAPS = 30
# What replay() asks of plmscale's fit stage (replay_verdict): nothing, the whole pool's law, or every replay's too.
VERDICTS = (None, "all_runs", "every")
POOL_COLUMNS = ("run_id", "n_params", "tokens", "flops", "loss")
TARGET_COLUMNS = ("run_id", "n_params", "tokens", "loss")


# ------------------------------------------------------------------------------------------------ tables

def read_table(path, what: str) -> pd.DataFrame:
    """A CSV as a DataFrame; a missing or unreadable file is an error naming it and what it should be."""
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise PlmscaleError(f"{what} {path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, IsADirectoryError) as error:
        raise PlmscaleError(f"{what} {path}: not a readable CSV runs table ({error})") from None


def _checked(df: pd.DataFrame, columns, source: str) -> pd.DataFrame:
    if df is None or len(df) == 0:
        raise PlmscaleError(f"{source}: the table is empty; it needs one row per run with columns {', '.join(columns)}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PlmscaleError(f"{source}: missing column(s) {', '.join(missing)}; it needs {', '.join(columns)} "
                            "(extra columns are allowed)")
    df = df.copy()
    df["run_id"] = df["run_id"].astype(str)
    repeated = df["run_id"][df["run_id"].duplicated()].unique()
    if len(repeated):
        raise PlmscaleError(f"{source}: run_id must be unique; repeated: {', '.join(repeated[:8])}")
    for column in [c for c in columns if c != "run_id"]:
        values = pd.to_numeric(df[column], errors="coerce").to_numpy(float)
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            shown = ", ".join(f"{r} ({v!r})" for r, v in zip(df["run_id"][bad][:8], df[column][bad][:8]))
            raise PlmscaleError(f"{source}: column {column} must be a positive finite number; it is not for "
                                f"run(s) {shown}; fix or drop these rows")
        df[column] = values
    return df.reset_index(drop=True)


def validate_pool_and_targets(pool: pd.DataFrame, targets: pd.DataFrame, pool_source="pool table",
                              targets_source="targets table"):
    """Cleaned copies of both tables, or a PlmscaleError naming the table and the rows at fault."""
    pool = _checked(pool, POOL_COLUMNS, pool_source)
    targets = _checked(targets, TARGET_COLUMNS, targets_source)
    if len(pool) <= N_INITIAL:
        raise PlmscaleError(f"{pool_source}: {len(pool)} runs; a replay needs more than {N_INITIAL} (the "
                            f"{N_INITIAL} cheapest start every strategy, the law has {N_INITIAL} constants)")
    objectives = {name: sorted(table["objective"].astype(str).unique()) for name, table
                  in ((pool_source, pool), (targets_source, targets)) if "objective" in table.columns}
    mixed = sorted({o for values in objectives.values() for o in values})
    if len(mixed) > 1:
        held = "; ".join(f"{name} holds {', '.join(values)}" for name, values in objectives.items())
        raise PlmscaleError(f"{held}: one law fits one objective; replay one objective at a time (filter both "
                            "tables by their objective column)")
    shared = sorted(set(pool["run_id"]) & set(targets["run_id"]))
    if shared:
        raise PlmscaleError(f"{targets_source}: run(s) {', '.join(shared[:8])} are in the pool too ({pool_source}); "
                            "a target is never selectable: remove them from one of the tables")
    return pool, targets


def rolling_origin_splits(runs: pd.DataFrame, holdouts=(1, 2, 3), target_share=0.9, source="runs table"):
    """[(k, pool, targets)] per k in holdouts: the study as it stood before its top k IsoFLOP budgets.

    The targets are every run with flops >= target_share × the k-th largest value of the `budget` column
    (those budgets' IsoFLOP runs and any larger run, IsoFLOP or not: budget may be empty), the pool every
    other run. One held-out split per pool kind makes a strategy's figure on real curves a single draw;
    rolling the origin back gives several forecasts, each of runs 3-30x beyond its pool (a leave-one-budget-
    out split would keep larger runs in the pool and judge interpolation instead)."""
    if "budget" not in runs.columns:
        raise PlmscaleError(f"{source}: rolling-origin pools need a budget column (the IsoFLOP budget of each run)")
    budgets = np.sort(pd.to_numeric(runs["budget"], errors="coerce").dropna().unique())[::-1]
    splits = []
    for k in holdouts:
        if not 1 <= int(k) < len(budgets):
            raise PlmscaleError(f"{source}: cannot hold out the top {k} of {len(budgets)} IsoFLOP budgets; "
                                f"choose k from 1 to {len(budgets) - 1}")
        is_target = runs["flops"].to_numpy(float) >= target_share * budgets[int(k) - 1]
        splits.append((int(k), runs.loc[~is_target].reset_index(drop=True), runs.loc[is_target].reset_index(drop=True)))
    return splits


# ------------------------------------------------------------------------------------------------- the law

def log_loss_jacobian(theta, n_params, tokens):
    """(m, 5) derivatives of log L(N, D) in the constants θ = (e, a, b, α, β) of parametric.py, at m points.

    log L = LSE(a − α log N, b − β log D, e): the gradient is the softmax shares s of the three terms,
    (s_e, s_N, s_D, −s_N log N, −s_D log D)."""
    e, a, b, alpha, beta = np.asarray(theta, float)
    log_n, log_d = np.log(np.asarray(n_params, float)), np.log(np.asarray(tokens, float))
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)], -1)
    shares = np.exp(terms - terms.max(-1, keepdims=True))
    shares /= shares.sum(-1, keepdims=True)
    s_n, s_d, s_e = shares[:, 0], shares[:, 1], shares[:, 2]
    return np.stack([s_e, s_n, s_d, -s_n * log_n, -s_d * log_d], -1)


def log_forecast(theta, n_params, tokens):
    e, a, b, alpha, beta = np.asarray(theta, float)
    log_n, log_d = np.log(np.asarray(n_params, float)), np.log(np.asarray(tokens, float))
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)], -1)
    top = terms.max(-1)
    return top + np.log(np.exp(terms - top[:, None]).sum(-1))


def _inverse_information(jacobian):
    """(JᵀJ + ridge)⁻¹ of the selection's Jacobian (the Fisher information up to 1/σ²)."""
    info = jacobian.T @ jacobian
    ridge = RIDGE * max(np.trace(info), 1e-300)
    return np.linalg.inv(info + ridge * np.eye(len(info)))


def forecast_with_interval(theta, selected: pd.DataFrame, targets: pd.DataFrame):
    """(forecasts (T,), intervals (T, 2)) of the targets' losses: the delta-method interval of the module
    docstring."""
    residuals = log_forecast(theta, selected["n_params"], selected["tokens"]) - np.log(selected["loss"].to_numpy())
    dof = len(selected) - len(theta)
    sigma2 = (float(np.sum(residuals ** 2)) + NOISE_PRIOR ** 2) / (max(dof, 0) + 1)
    covariance = sigma2 * _inverse_information(log_loss_jacobian(theta, selected["n_params"], selected["tokens"]))
    gradient = log_loss_jacobian(theta, targets["n_params"], targets["tokens"])
    sd = np.sqrt(np.maximum(np.einsum("ti,ij,tj->t", gradient, covariance, gradient), 0.0))
    centre = log_forecast(theta, targets["n_params"], targets["tokens"])
    with np.errstate(over="ignore"):
        return np.exp(centre), np.exp(np.stack([centre - Z_95 * sd, centre + Z_95 * sd], -1))


# ---------------------------------------------------------------------------------------------- the fits

@dataclass
class _LawTracker:
    """The current fit of a growing selection: warm refits after each pick, a grid fit when it has doubled."""
    pool: pd.DataFrame
    theta: np.ndarray | None = None
    size_at_grid_fit: int = 0

    def refit(self, chosen: np.ndarray) -> np.ndarray:
        rows = self.pool.iloc[chosen]
        if self.theta is None or len(chosen) >= 2 * self.size_at_grid_fit:
            self.theta = grid_fit(rows, self.theta)
            self.size_at_grid_fit = len(chosen)
        else:
            thetas, _, _ = parametric.refit_warm([self.theta], rows["n_params"], rows["tokens"], rows["loss"],
                                                 np.ones((1, len(rows))), max_iter=WARM_MAX_ITER)
            if np.all(np.isfinite(thetas[0])):
                self.theta = thetas[0]
        return self.theta


def grid_fit(rows: pd.DataFrame, warm=None) -> np.ndarray:
    """The parametric fit plmscale makes (the 4,500-start grid), also tried from a warm start; the lower
    objective wins. Returns θ = (e, a, b, α, β)."""
    fit = parametric.fit_parametric(rows["n_params"], rows["tokens"], rows["loss"])
    theta = np.asarray(fit["theta"], float)
    if warm is not None:
        log_args = [np.log(rows[c].to_numpy(float)) for c in ("n_params", "tokens", "loss")]
        warm_theta, warm_value, _, _ = parametric.minimise_batch(np.asarray(warm, float)[None], *log_args)
        if np.isfinite(warm_value[0]) and warm_value[0] < fit["objective"]:
            theta = warm_theta[0]
    return theta


# ----------------------------------------------------------------------------------------- the strategies

def _variance_gain(inverse, candidates_jac, targets_jac):
    """Drop of Σ_t var(log forecast_t) (up to σ²) if each candidate joined the selection (Sherman–Morrison)."""
    leverage = np.einsum("ci,ij,cj->c", candidates_jac, inverse, candidates_jac)
    cross = targets_jac @ inverse @ candidates_jac.T  # (T, c)
    return (cross ** 2).sum(0) / (1 + leverage)


def _plmscale_scores(theta, pool, candidates, targets, inverse, cost_power):
    """plmscale's greedy step: v-optimal gain per FLOP^COST_POWER (then `exchange`, see select_runs).

    Why not v-optimal itself: it ignores cost, so it buys the largest affordable runs first and the rest
    of the budget no longer buys a spread of sizes (measured: 8-17 runs per replay on the synthetic pools
    of docs/replay-measured.md, plmscale 17-31, at a better R² at F = 0.05 and 0.10). Why not gain per FLOP:
    costs span orders of magnitude, so it buys many cheap runs with little leverage on far targets. The
    square root of the cost sits between the two (docs/replay-measured.md compares 0, 0.25, 0.5).
    cost_power is that power (COST_POWER unless a benchmark asks for another).
    """
    cost = pool["flops"].to_numpy()[candidates]
    gain = _variance_gain(inverse, log_loss_jacobian(theta, pool["n_params"].iloc[candidates],
                                                     pool["tokens"].iloc[candidates]),
                          log_loss_jacobian(theta, targets["n_params"], targets["tokens"]))
    return gain / cost ** cost_power


def _summed_variance(information, targets_jac):
    """Σ_t g_t·I⁻¹·g_tᵀ for one or a stack (..., 5, 5) of information matrices."""
    ridge = RIDGE * np.maximum(np.trace(information, axis1=-2, axis2=-1), 1e-300)
    inverse = np.linalg.inv(information + ridge[..., None, None] * np.eye(information.shape[-1]))
    return np.einsum("ti,...ij,tj->...", targets_jac, inverse, targets_jac)


def exchange(theta, pool, targets, chosen, budget, fixed=N_INITIAL, max_swaps=EXCHANGE_MAX_SWAPS):
    """Fedorov exchange on the linearised v-optimal criterion at θ, within the budget: the best single
    swap (a picked run out, an unpicked one in) or addition, repeated while it lowers the summed forecast
    variance. The first `fixed` runs (the initial cheapest) stay. Returns the new positions (order: kept
    runs first, then the runs swapped in).

    This is the coverage rule of plmscale's strategy: the greedy pass picks runs one at a time and cannot
    undo an early pick that a later one made redundant (two sizes at one budget that pin the same
    direction of the constants); the exchange spreads the selection over the sizes and budgets that each
    add a direction, with the whole budget known. Cost per swap: k·m 5×5 inverses (k picked, m unpicked),
    one batched numpy call."""
    jac = log_loss_jacobian(theta, pool["n_params"], pool["tokens"])
    targets_jac = log_loss_jacobian(theta, targets["n_params"], targets["tokens"])
    cost = pool["flops"].to_numpy(float)
    chosen = list(chosen)
    for _ in range(max_swaps):
        information = jac[chosen].T @ jac[chosen]
        best_value, best_swap = _summed_variance(information, targets_jac) * (1 - 1e-9), None
        unpicked = np.setdiff1d(np.arange(len(pool)), chosen)
        room = budget - cost[chosen].sum()
        for out in [None] + chosen[fixed:]:
            base = information if out is None else information - np.outer(jac[out], jac[out])
            affordable = unpicked[cost[unpicked] <= room + (0 if out is None else cost[out])]
            if len(affordable) == 0:
                continue
            values = _summed_variance(base + jac[affordable, :, None] * jac[affordable, None, :], targets_jac)
            i = int(np.argmin(values))
            if values[i] < best_value:
                best_value, best_swap = values[i], (out, int(affordable[i]))
        if best_swap is None:
            break
        out, into = best_swap
        if out is not None:
            chosen.remove(out)
        chosen.append(into)
    return np.array(chosen)


def _scores(strategy, theta, pool, chosen, candidates, targets, cost_power):
    jac = log_loss_jacobian(theta, pool["n_params"].iloc[chosen], pool["tokens"].iloc[chosen])
    inverse = _inverse_information(jac)
    candidates_jac = log_loss_jacobian(theta, pool["n_params"].iloc[candidates], pool["tokens"].iloc[candidates])
    if strategy == "d-optimal":
        return np.einsum("ci,ij,cj->c", candidates_jac, inverse, candidates_jac)
    if strategy == "v-optimal":
        return _variance_gain(inverse, candidates_jac, log_loss_jacobian(theta, targets["n_params"],
                                                                          targets["tokens"]))
    return _plmscale_scores(theta, pool, candidates, targets, inverse, cost_power)


def select_runs(pool: pd.DataFrame, targets: pd.DataFrame, strategy: str, budget_fraction: float, rng=None,
                cost_power=None, exchange_rounds=None, known_law=None):
    """Positions of the pool runs a strategy selects within budget_fraction of the pool's FLOPs, in the
    order picked (the N_INITIAL cheapest first), and the last fit's θ (None for random and cheapest).
    cost_power and exchange_rounds set plmscale's strategy (None: COST_POWER, EXCHANGE_ROUNDS).
    known_law: θ = (e, a, b, α, β) to design at instead of fitting the selection as it grows (a benchmark's
    oracle, where a synthetic pool's true law is known: what the design would do if the fit were exact);
    it is returned as the last fit."""
    cost_power = COST_POWER if cost_power is None else float(cost_power)
    exchange_rounds = EXCHANGE_ROUNDS if exchange_rounds is None else int(exchange_rounds)
    if strategy not in STRATEGIES:
        raise PlmscaleError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)} or all")
    if not 0 < budget_fraction <= 1:
        raise PlmscaleError(f"--budget-fraction must be in (0, 1], got {budget_fraction}")
    rng = np.random.default_rng(0) if rng is None else rng
    cost = pool["flops"].to_numpy(float)
    order = np.argsort(cost, kind="stable")
    chosen = list(order[:N_INITIAL])
    left = budget_fraction * cost.sum() - cost[chosen].sum()
    available = np.ones(len(pool), bool)
    available[chosen] = False
    designed = strategy in ("d-optimal", "v-optimal", "plmscale")
    tracker = _LawTracker(pool) if designed and known_law is None else None
    theta = tracker.refit(np.array(chosen)) if tracker else None
    if known_law is not None and designed:
        theta = np.asarray(known_law, float)
    while True:
        candidates = np.flatnonzero(available & (cost <= left))
        if len(candidates) == 0:
            break
        if strategy == "random":
            pick = int(rng.choice(candidates))
        elif strategy == "cheapest":
            pick = int(candidates[np.argmin(cost[candidates])])
        else:
            scores = _scores(strategy, theta, pool, np.array(chosen), candidates, targets, cost_power)
            pick = int(candidates[np.argmax(scores)])
        chosen.append(pick)
        available[pick] = False
        left -= cost[pick]
        if tracker:
            theta = tracker.refit(np.array(chosen))
    chosen = np.array(chosen)
    if strategy == "plmscale":
        for _ in range(exchange_rounds):  # exchange at the fit, refit on the exchanged selection
            chosen = exchange(theta, pool, targets, chosen, budget_fraction * cost.sum())
            if tracker:
                theta = grid_fit(pool.iloc[chosen], theta)
    return chosen, theta


# ---------------------------------------------------------------------------------------------- replays

def judge_forecasts(observed, forecast):
    """(mean absolute % error, R² of the forecasts against the observed losses; None for < 2 targets)."""
    observed, forecast = np.asarray(observed, float), np.asarray(forecast, float)
    error = float(np.mean(np.abs(forecast - observed) / observed) * 100)
    spread = float(np.sum((observed - observed.mean()) ** 2))
    r2 = 1 - float(np.sum((observed - forecast) ** 2)) / spread if len(observed) > 1 and spread > 0 else None
    return error, r2


def replay_once(pool, targets, strategy, budget_fraction, rng=None, cost_power=None, exchange_rounds=None,
                with_verdict=False):
    """One replay: {selected (run ids), flops_fraction, theta, forecast (T,), forecast_ci (T, 2),
    mean_abs_pct_error, r2}, and with_verdict: the fit stage's verdict on the selection's law (replay_verdict)."""
    chosen, warm = select_runs(pool, targets, strategy, budget_fraction, rng, cost_power, exchange_rounds)
    result = judge_selection(pool, targets, chosen, warm)
    if with_verdict:
        result["verdict"] = replay_verdict.verdict(pool.iloc[chosen])
    return result


def judge_selection(pool, targets, chosen, warm=None):
    """The law fitted to the pool runs at positions `chosen` (grid_fit, also from `warm`), its forecasts of the
    targets and how they fare: {selected (run ids), flops_fraction, theta, forecast (T,), forecast_ci (T, 2),
    mean_abs_pct_error, r2}. A replay's selection and the whole pool are judged alike."""
    selected = pool.iloc[chosen]
    theta = grid_fit(selected, warm)
    forecast, interval = forecast_with_interval(theta, selected, targets)
    error, r2 = judge_forecasts(targets["loss"], forecast)
    spent = float(selected["flops"].sum() / pool["flops"].sum())
    return {"selected": selected["run_id"].tolist(), "flops_fraction": spent, "theta": theta, "forecast": forecast,
            "forecast_ci": interval, "mean_abs_pct_error": error, "r2": r2}


def _entry(replays, targets, budget_fraction, repeats):
    """replay.json's entry for one strategy from its replays (the repeats): errors and R² averaged over the
    repeats; per target the mean forecast and the mean of the interval bounds; where the replays carry the fit
    stage's verdict, forecast_share (the share of repeats whose law plmscale would forecast with) and each
    repeat's verdict."""
    forecasts = np.array([r["forecast"] for r in replays])
    intervals = np.array([r["forecast_ci"] for r in replays])
    r2 = [r["r2"] for r in replays if r["r2"] is not None]
    per_target = [{"run_id": row.run_id, "n_params": float(row.n_params), "tokens": float(row.tokens),
                   "observed": float(row.loss), "forecast": float(forecasts[:, i].mean()),
                   "forecast_ci": [float(intervals[:, i, 0].mean()), float(intervals[:, i, 1].mean())]}
                  for i, row in enumerate(targets.itertuples())]
    entry = {"budget_fraction": float(budget_fraction), "repeats": int(repeats),
             "mean_abs_pct_error": float(np.mean([r["mean_abs_pct_error"] for r in replays])),
             "r2": float(np.mean(r2)) if r2 else None,
             "per_target": per_target,
             "per_repeat": [{"mean_abs_pct_error": r["mean_abs_pct_error"], "r2": r["r2"],
                             "flops_fraction": r["flops_fraction"], "n_selected": len(r["selected"]),
                             "selected": r["selected"], **({"verdict": r["verdict"]} if "verdict" in r else {})}
                            for r in replays]}
    if all("verdict" in r for r in replays):
        entry["forecast_share"] = float(np.mean([r["verdict"]["forecasts"] for r in replays]))
    return entry


def expand_strategies(names) -> list:
    """--strategy values (repeatable, or `all`) as a list of known strategies in STRATEGIES order."""
    names = list(names or ["all"])
    if "all" in names:
        return list(STRATEGIES)
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise PlmscaleError(f"unknown strategy {', '.join(unknown)}; choose from {', '.join(STRATEGIES)} or all")
    return [s for s in STRATEGIES if s in names]


def replay(pool, targets, strategies, budget_fraction, repeats=1, seed=0, cost_power=None, exchange_rounds=None,
           verdicts=None, pool_verdict=None):
    """replay.json's content: every strategy's entry at budget_fraction over `repeats` replays, and the fit
    on the whole pool ("all_runs"). Random draws come from numpy's generator seeded (seed, repeat).
    cost_power and exchange_rounds set plmscale's strategy (None: the defaults COST_POWER, EXCHANGE_ROUNDS).
    verdicts: None, "all_runs" (the fit stage's verdict on the whole pool's law, all_runs.verdict) or "every"
    (also on every replay's selection: forecast_share per strategy); see replay_verdict. pool_verdict: the whole
    pool's verdict where the caller has it already (it does not depend on the budget fraction)."""
    if int(repeats) < 1:
        raise PlmscaleError(f"--repeats must be at least 1, got {repeats}")
    if not 0 < budget_fraction <= 1:
        raise PlmscaleError(f"--budget-fraction must be in (0, 1], got {budget_fraction}")
    if verdicts not in VERDICTS:
        raise PlmscaleError(f"verdicts must be one of {', '.join(map(str, VERDICTS))}, got {verdicts!r}")
    strategies = expand_strategies(strategies)
    every = verdicts == "every"
    result = {}
    for strategy in strategies:
        if strategy in DETERMINISTIC:
            replays = [replay_once(pool, targets, strategy, budget_fraction, None, cost_power,
                                   exchange_rounds, every)] * int(repeats)
        else:
            replays = [replay_once(pool, targets, strategy, budget_fraction, np.random.default_rng([seed, r]),
                                   with_verdict=every) for r in range(int(repeats))]
        result[strategy] = _entry(replays, targets, budget_fraction, repeats)
        log.info("%s at F = %g: mean |error| %.3g%%, R² %s", strategy, budget_fraction,
                 result[strategy]["mean_abs_pct_error"], result[strategy]["r2"])
    everything = judge_selection(pool, targets, np.arange(len(pool)))
    all_runs = _entry([everything], targets, 1.0, 1)
    all_runs.pop("per_repeat")
    all_runs["theta"] = [float(v) for v in everything["theta"]]  # (e, a, b, α, β): replay_bound linearises here
    if verdicts:
        all_runs["verdict"] = replay_verdict.verdict(pool) if pool_verdict is None else pool_verdict
    return {"strategies": result, "all_runs": all_runs,
            "settings": {"seed": int(seed), "initial_runs": N_INITIAL, "law": "L = E + A/N^alpha + B/D^beta "
                         "(parametric, Huber on log-loss)", "forecast_ci": "95%, delta method from the fit's "
                         f"covariance (residual variance with a {NOISE_PRIOR} log-loss noise prior)",
                         "deterministic_strategies": sorted(DETERMINISTIC & set(strategies)),
                         "plmscale_strategy": {"cost_power": COST_POWER if cost_power is None else float(cost_power),
                                               "exchange_rounds": EXCHANGE_ROUNDS if exchange_rounds is None
                                               else int(exchange_rounds)},
                         "verdicts": verdicts,
                         "pool_runs": int(len(pool)), "pool_flops": float(pool["flops"].sum()),
                         "targets": int(len(targets))}}
