"""The rollout backtest of a table that is not an IsoFLOP grid: hold out its top compute quantile.

A scatter of N and D (fit.scatter_reason) has no top IsoFLOP budget to hold out, and no vertex to compare an
optimum with. Its rollout fits a law family on the runs below the top HOLD_OUT_FRACTION of the table's compute
and forecasts the loss of every held-out run at its own N and D (and U, for the data-constrained law):

- `held_out_runs` {n_runs, rms_pct, mean_pct}: what law selection ranks, as for a grid;
- `loss_error_pct`: the mean error 100·(forecast − observed)/observed over the held-out runs, and its interval
  from the reduced fit's bootstrap refits, each paired with a resample of the held-out runs (both the law's and
  the held-out runs' scatter count, as forecast and observed vertex draws do for a grid);
- `forecast` / `observed`: the mean forecast and observed loss of the held-out runs (no N_opt: a scatter has
  no optimum to observe), so backtest_verdict judges the loss as it does for a grid.

The result has the keys of backtest's ROLLOUT; `held_out` says what was held out (in place of "the top budget"),
`held_out_budget` is the lowest compute held out.
"""

import numpy as np

from plmscale.errors import PlmscaleError
from plmscale.scaling import bootstrap as boot
from plmscale.scaling import data_constrained, farseer, parametric

HOLD_OUT_FRACTION = 0.2   # the top fifth of the runs by compute, as a grid holds out its top budget of ~5-7
MIN_HELD_OUT = 3          # fewer held-out runs say nothing about a bias
MIN_FITTED = {"parametric": 5, "farseer": farseer.MIN_RUNS, "data_constrained": data_constrained.MIN_RUNS}
LOSS_LAWS = {"parametric": "L = E + A/N^alpha + B/D^beta at each held-out run's N and D",
             "farseer": "Farseer L(N, D) at each held-out run's N and D",
             "data_constrained": "the data-constrained L(N, D, U) at each held-out run's N, D and U"}
MAX_BOOTSTRAP = {"farseer": farseer.MAX_BOOTSTRAP, "data_constrained": data_constrained.MAX_BOOTSTRAP}


def split(flops, fraction=HOLD_OUT_FRACTION):
    """(below, held_out) boolean masks: the runs at or above the (1 − fraction) quantile of compute, at least
    MIN_HELD_OUT of them, and the runs strictly below the least of them; or a sentence why there are none."""
    flops = np.asarray(flops, float)
    k = max(MIN_HELD_OUT, int(np.ceil(fraction * len(flops))))
    if len(flops) < k + 1:
        return (f"{len(flops)} runs: a scatter's rollout holds out its top {fraction:.0%} by compute (at least "
                f"{MIN_HELD_OUT} runs) and fits the rest")
    threshold = np.sort(flops)[-k]
    held_out = flops >= threshold
    return flops < threshold, held_out


def _family_fit(family, n, d, unique, loss):
    """(point constants, predict(constants, n, d, u) broadcasting over leading rows of constants, refit(counts))."""
    if family == "parametric":
        point = parametric.fit_parametric(n, d, loss)
        names = ("E", "A", "B", "alpha", "beta")

        def predict(constants, n_, d_, _u):
            E, A, B, alpha, beta = (np.asarray(constants[..., i])[..., None] for i in range(5))
            return E + A / n_ ** alpha + B / d_ ** beta

        def refit(counts):
            draws = boot.parametric_draws(n, d, loss, counts, point)
            return np.column_stack([draws[k] for k in names])
        return np.array([point[k] for k in names]), predict, refit
    if family == "farseer":
        point = farseer.fit_farseer(n, d, loss)
        return (np.asarray(point["theta"]), lambda c, n_, d_, _u: farseer.loss(np.asarray(c)[..., None, :], n_, d_),
                lambda counts: farseer.bootstrap_thetas(point, n, d, loss, counts))
    point = data_constrained.fit_data_constrained(n, d, unique, loss)
    constants = np.array([point[k] for k in data_constrained.PARAM_NAMES])
    return (constants, lambda c, n_, d_, u_: data_constrained.loss(np.asarray(c)[..., None, :], n_, d_, u_),
            lambda counts: data_constrained.bootstrap_params(point, n, d, unique, loss, counts))


def scatter_rollout(scratch, family, n_boot, rng, drop_highest_loss=0):
    """One law family's rollout on a scatter (see the module docstring): fit below the top compute quantile,
    forecast every held-out run."""
    parts = split(scratch["flops"].to_numpy(float))
    if isinstance(parts, str):
        return {"held_out_budget": None, "error": parts}
    below, held_out = parts
    threshold = float(scratch["flops"].to_numpy(float)[held_out].min())
    described = (f"the top {HOLD_OUT_FRACTION:.0%} of the scatter's runs by compute ({int(held_out.sum())} runs at "
                 f">= {threshold:.3g} FLOPs)")
    fitted = below.copy()
    if family == "parametric" and drop_highest_loss:
        fitted[np.flatnonzero(fitted)[parametric.highest_loss_mask(scratch["loss"][fitted], drop_highest_loss)]] = False
    if fitted.sum() < MIN_FITTED[family]:
        return {"held_out_budget": threshold, "held_out": described,
                "error": f"only {int(fitted.sum())} runs below {described}; the {family} law needs "
                         f"{MIN_FITTED[family]}"}
    columns = [scratch[c].to_numpy(float) for c in ("n_params", "tokens", "loss")]
    n_out, d_out, observed = [c[held_out] for c in columns]
    try:
        unique = (data_constrained.unique_tokens_of(scratch) if family == "data_constrained"
                  else np.full(len(scratch), np.nan))
        (n, d, loss), u_out = [c[fitted] for c in columns], unique[held_out]
        point, predict, refit = _family_fit(family, n, d, unique[fitted], loss)
    except PlmscaleError as error:
        return {"held_out_budget": threshold, "held_out": described, "error": f"below {described}: {error}"}
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        forecast = np.asarray(predict(point, n_out, d_out, u_out), float)
        errors = 100 * (forecast - observed) / observed
    finite = bool(np.isfinite(errors).all())
    draws_n = min(int(n_boot), MAX_BOOTSTRAP.get(family, int(n_boot)))
    loss_ci = error_ci = None
    n_failed = 0
    if draws_n:
        counts = boot.draw_counts(np.full(int(fitted.sum()), "scatter"), draws_n, rng)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            forecasts = np.asarray(predict(refit(counts), n_out, d_out, u_out), float)  # (B, held-out runs)
        failed = ~np.isfinite(forecasts).all(1)
        n_failed = int(failed.sum())
        # Each refit is paired with a resample of the held-out runs: their own scatter counts too.
        picks = rng.integers(0, len(observed), size=(draws_n, len(observed)))
        rows = np.arange(draws_n)[:, None]
        error_draws = np.mean(100 * (forecasts[rows, picks] - observed[picks]) / observed[picks], axis=1)
        error_ci = boot.interval(np.where(failed, np.nan, error_draws))
        loss_ci = boot.interval(np.where(failed, np.nan, forecasts.mean(1)))
    mean_error = float(errors.mean()) if finite else None
    observed_mean = float(observed.mean())
    return {
        "held_out_budget": threshold, "held_out": described, "fitted_budgets": [],
        "n_runs_fitted": int(fitted.sum()),
        "observed": {"n_opt": None, "loss": observed_mean, "n_opt_ci": None, "loss_ci": None,
                     "source": f"mean loss of {described} (a scatter: no IsoFLOP vertex)"},
        "forecast": {"n_opt": None, "loss": float(forecast.mean()) if finite else None, "n_opt_ci": None,
                     "loss_ci": loss_ci},
        "loss_error_pct": mean_error, "loss_error_pct_ci": error_ci,
        "n_opt_log_error": None, "n_opt_log_error_ci": None, "n_opt_ratio": None,
        "loss_inside_interval": None if loss_ci is None else bool(loss_ci[0] <= observed_mean <= loss_ci[1]),
        "n_opt_inside_interval": None,
        "loss_consistent": None if error_ci is None else bool(error_ci[0] <= 0 <= error_ci[1]),
        "n_opt_consistent": None,
        "bootstrap": {"n": draws_n, "n_failed": n_failed},
        "loss_law": LOSS_LAWS[family],
        "held_out_runs": {"n_runs": int(len(errors)),
                          "rms_pct": float(np.sqrt(np.mean(errors ** 2))) if finite else None,
                          "mean_pct": mean_error},
    }
