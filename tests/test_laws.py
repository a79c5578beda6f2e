"""Law families and a verdict that listens to the backtest, on synthetic tables drawn from known laws."""

import numpy as np
import pandas as pd
import pytest

from plmscale.scaling import farseer
from plmscale.scaling.fit import fit_all
from plmscale.scaling.identify import backtest_verdict
from scaling_synthetic import BUDGETS, fit_settings, isoflop_runs, random_law

# A Farseer law whose data exponent grows with N (0.29 at the smallest budget's optimum, ~0.45 at the top):
# larger models learn more from each token than a fixed-β Chinchilla form fitted below can know.
FARSEER_TRUTH = {"s": 1.0, "q": -0.3, "S": np.log(1.8), "B": 0.0, "b": 0.0, "Q": np.log(0.6),
                 "A": 0.12, "a": 0.2, "E": -1.55}


def farseer_runs(truth, rng, noise=0.004, sizes_per_budget=8, spread=6.0, budgets=BUDGETS, objective="clm"):
    """An IsoFLOP table drawn from a Farseer law: sizes log-spaced spread× either side of its optimum."""
    rows = []
    for budget in budgets:
        centre, _, _ = farseer.optimal_allocation(truth, budget)
        offsets = np.linspace(-np.log(spread), np.log(spread), sizes_per_budget)
        for j, n in enumerate(centre * np.exp(offsets + rng.normal(0, 0.05, sizes_per_budget))):
            n = float(round(n))
            d = budget / (6 * n)
            rows.append({"run_id": f"{objective}_c{budget:.0e}_{j}", "objective": objective, "n_params": n,
                         "tokens": d, "flops": budget, "budget": budget,
                         "loss": float(farseer.loss(truth, n, d)) * np.exp(rng.normal(0, noise))})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_biased_rollout_refuses_the_chinchilla_form(seed):
    runs = farseer_runs(FARSEER_TRUTH, np.random.default_rng(seed))
    fit = fit_all(runs, None, fit_settings(bootstrap=100, seed=seed))
    parametric = fit["objectives"]["clm"]["parametric"]
    rollout = fit["objectives"]["clm"]["backtest"]["parametric"]["rollout"]
    assert rollout["loss_consistent"] is False and rollout["loss_error_pct_ci"][0] > 0
    assert parametric["identified"] is False
    (reason,) = [r for r in parametric["reasons"] if "rollout backtest" in r]
    assert "not identified for forecasting" in reason and "biased at larger scale" in reason
    assert f"{rollout['loss_error_pct']:+.2f}%" in reason


@pytest.mark.parametrize("seed", [3, 4])
def test_a_chinchilla_table_keeps_its_law(seed):
    rng = np.random.default_rng(seed)
    runs = isoflop_runs(random_law(rng), rng, noise=0.005)
    fit = fit_all(runs, None, fit_settings(bootstrap=100, seed=seed))
    entry = fit["objectives"]["clm"]
    assert entry["backtest"]["parametric"]["rollout"]["loss_consistent"] is True
    assert entry["parametric"]["identified"] is True, entry["parametric"]["reasons"]
    assert not any("rollout backtest" in r for r in entry["parametric"]["reasons"])


def test_a_rollout_that_cannot_be_made_is_a_note_not_a_refusal():
    reasons, notes = backtest_verdict("parametric", {"rollout": {
        "held_out_budget": 1e18, "error": "rollout needs runs at 2 or more IsoFLOP budgets (the top one is held "
                                          "out); found 1"}})
    assert reasons == [] and notes == ["rollout backtest not made: rollout needs runs at 2 or more IsoFLOP "
                                       "budgets (the top one is held out); found 1"]


def test_a_forecast_below_a_best_run_is_no_bias():
    rollout = {"held_out_budget": 1e20, "loss_error_pct": -3.0, "loss_error_pct_ci": [-4.0, -2.0],
               "observed": {"source": "best run (no usable vertex at 1e+20: ...)"}}
    reasons, notes = backtest_verdict("isoflop", {"rollout": rollout})
    assert reasons == [] and "only bounds the optimum from above" in notes[0]
    rollout["observed"]["source"] = "parabola vertex"
    reasons, _ = backtest_verdict("isoflop", {"rollout": rollout})
    assert "-3.00% [-4.00, -2.00] off: biased at larger scale" in reasons[0]
