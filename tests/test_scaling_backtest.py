"""Backtests on synthetic runs from known constants: rollout to the top budget and leave-one-budget-out."""

import json

import numpy as np
import pandas as pd
import pytest

from plmscale.errors import PlmscaleError
from plmscale.scaling.backtest import backtest, fit_loss_law, loss_at
from scaling_synthetic import BUDGETS, isoflop_runs, loss_of, random_law, true_n_opt

TOP = BUDGETS[-1]
TARGET = 1e22
N_BOOT = 200  # the bootstrap is cheap here; the parametric refits of the LOBO dominate the time


def true_optimum(law, flops):
    n = true_n_opt(law, flops)
    return n, loss_of(law, n, flops / (6 * n))


@pytest.fixture(scope="module", params=[1, 2])
def synthetic(request):
    rng = np.random.default_rng(request.param)
    law = random_law(rng)
    runs = isoflop_runs(law, rng, noise=0.005)
    return law, runs, backtest(runs, [TARGET], n_boot=N_BOOT, seed=0)


@pytest.mark.parametrize("method", ["isoflop", "parametric"])
def test_rollout_forecasts_the_top_budget(synthetic, method):
    law, _, result = synthetic
    rollout = result[method]["rollout"]
    assert rollout["held_out_budget"] == TOP
    assert TOP not in rollout["fitted_budgets"] and len(rollout["fitted_budgets"]) == len(BUDGETS) - 1
    assert rollout["observed"]["source"] == "parabola vertex"
    # 0.5% noise on each run: the compute-optimal loss half a decade out is forecast within 1%.
    assert abs(rollout["loss_error_pct"]) < 1.0
    n_true, loss_true = true_optimum(law, TOP)
    low, high = rollout["forecast"]["n_opt_ci"]
    assert low <= n_true <= high
    assert rollout["forecast"]["loss"] == pytest.approx(loss_true, rel=0.01)
    assert rollout["bootstrap"] == {"n": N_BOOT, "n_failed": 0}
    # The error is forecast against observation, in the units the docstring promises.
    observed, forecast = rollout["observed"], rollout["forecast"]
    assert rollout["loss_error_pct"] == pytest.approx(100 * (forecast["loss"] / observed["loss"] - 1))
    assert rollout["n_opt_log_error"] == pytest.approx(np.log(forecast["n_opt"] / observed["n_opt"]))


@pytest.mark.parametrize("method", ["isoflop", "parametric"])
def test_leave_one_budget_out(synthetic, method):
    law, _, result = synthetic
    lobo = result[method]["leave_one_budget_out"]
    assert lobo["n_refits"] == len(BUDGETS) == len(lobo["left_out"])
    assert [entry["budget"] for entry in lobo["left_out"]] == pytest.approx(list(BUDGETS))
    (spread,) = lobo["sensitivity"]
    forecasts = [entry["forecasts"][0] for entry in lobo["left_out"]]
    assert spread["n_opt_ratio"] == pytest.approx(max(f["n_opt"] for f in forecasts) /
                                                  min(f["n_opt"] for f in forecasts))
    assert 1.0 <= spread["n_opt_ratio"] < 1.5
    assert 0.0 <= spread["loss_spread_pct"] < 2.0
    assert lobo["a_min"] <= lobo["full_a"] <= lobo["a_max"]
    n_true, _ = true_optimum(law, TARGET)
    assert lobo["full"][0]["n_opt"] == pytest.approx(n_true, rel=0.4)


def test_output_is_plain_json(synthetic):
    _, _, result = synthetic
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_rollout_flags_a_top_budget_that_breaks_the_law():
    """A top budget 3% better than the trend (say, a new data mix) is reported as a 3% miss, outside the noise."""
    rng = np.random.default_rng(5)
    runs = isoflop_runs(random_law(rng), rng, noise=0.005)
    result = backtest(runs, [], n_boot=N_BOOT, seed=0, methods=("isoflop",))
    runs.loc[runs["budget"] == TOP, "loss"] *= 0.97
    shifted = backtest(runs, [], n_boot=N_BOOT, seed=0, methods=("isoflop",))["isoflop"]["rollout"]
    assert shifted["loss_error_pct"] - result["isoflop"]["rollout"]["loss_error_pct"] == pytest.approx(3.09, abs=0.05)
    assert shifted["loss_consistent"] is False and shifted["loss_inside_interval"] is False


def test_lobo_exposes_an_influential_budget():
    rng = np.random.default_rng(6)
    runs = isoflop_runs(random_law(rng), rng, noise=0.005)
    clean = backtest(runs, [TARGET], n_boot=0, methods=("isoflop",))["isoflop"]["leave_one_budget_out"]
    # The 1e20 budget's profile tilted: its vertex moves to larger models than the law says.
    at = np.isclose(runs["budget"], 1e20)
    centre = np.log(runs.loc[at, "n_params"]).mean()
    runs.loc[at, "loss"] *= 1 - 0.02 * (np.log(runs.loc[at, "n_params"]) - centre)
    tilted = backtest(runs, [TARGET], n_boot=0, methods=("isoflop",))["isoflop"]["leave_one_budget_out"]
    assert tilted["sensitivity"][0]["n_opt_ratio"] > clean["sensitivity"][0]["n_opt_ratio"] + 0.1
    # Leaving the tilted budget out brings the forecast back towards the clean one.
    (without,) = [e for e in tilted["left_out"] if np.isclose(e["budget"], 1e20)]
    clean_n = clean["full"][0]["n_opt"]
    assert abs(np.log(without["forecasts"][0]["n_opt"] / clean_n)) < abs(np.log(tilted["full"][0]["n_opt"] / clean_n))


def test_rollout_that_cannot_be_made_says_why():
    rng = np.random.default_rng(7)
    law = random_law(rng)
    one = isoflop_runs(law, rng, noise=0.005, budgets=[1e19])
    result = backtest(one, [TARGET], n_boot=20)
    for method in ("isoflop", "parametric"):
        assert result[method]["rollout"]["error"].startswith("rollout needs runs at 2 or more IsoFLOP budgets")
    monotone = isoflop_runs(law, rng, noise=0.005)
    monotone["loss"] = 3.0 * monotone["n_params"] ** -0.05
    result = backtest(monotone, [TARGET], n_boot=20)
    assert result["isoflop"]["rollout"]["error"] == (f"only 0 of the {len(BUDGETS) - 1} budgets below the top "
                                                     "one (1e+21) bracketed an optimum (need 2 to fit a power law)")
    assert result["isoflop"]["leave_one_budget_out"]["error"].startswith("only 0 IsoFLOP budget(s) bracketed")
    # Without a vertex at the top budget, the parametric rollout is scored against the best run, and says so.
    observed = result["parametric"]["rollout"]["observed"]
    assert observed["source"].startswith("best run (no usable vertex at 1e+21: lowest loss at the largest")
    assert observed["n_opt_ci"] is None


def test_parametric_rollout_sees_nothing_at_or_above_the_top_budget():
    rng = np.random.default_rng(8)
    law = random_law(rng)
    runs = isoflop_runs(law, rng, noise=0.005)
    n = true_n_opt(law, 3 * TOP)
    long_run = {"run_id": "long", "objective": "clm", "n_params": n, "tokens": 3 * TOP / (6 * n),
                "flops": 3 * TOP, "loss": loss_of(law, n, 3 * TOP / (6 * n)), "budget": np.nan}
    with_long = pd.concat([runs, pd.DataFrame([long_run])], ignore_index=True)
    rollout = backtest(with_long, [], n_boot=0, methods=("parametric",))["parametric"]["rollout"]
    assert rollout["n_runs_fitted"] == int((runs["budget"] < TOP).sum())
    assert rollout["forecast"]["n_opt_ci"] is None and rollout["loss_inside_interval"] is None


def test_saturating_loss_law_recovers_its_constants():
    budgets = 10.0 ** np.arange(18, 21.01, 0.5)
    losses = 1.7 + 40.0 * (budgets / 1e18) ** -0.3  # E = 1.7, s = -0.3
    params = fit_loss_law(budgets, losses[None, :])
    assert params["E"][0] == pytest.approx(1.7, rel=1e-3)
    assert params["s"][0] == pytest.approx(-0.3, rel=1e-3)
    assert loss_at(params, 1e22)[0] == pytest.approx(1.7 + 40.0 * 1e4 ** -0.3, rel=1e-4)
    # Two budgets cannot carry three constants: the law falls back to the power law through both points.
    two = fit_loss_law(budgets[:2], losses[None, :2])
    assert two["E"][0] == 0.0
    assert loss_at(two, budgets[1])[0] == pytest.approx(losses[1], rel=1e-12)
    # A missing loss (NaN) leaves that budget out of the row's fit.
    holes = losses.copy()
    holes[3] = np.nan
    assert fit_loss_law(budgets, holes[None, :])["s"][0] == pytest.approx(-0.3, rel=1e-3)


def test_pure_power_loss_law_undershoots_a_saturating_loss():
    """Why the saturating law is the default: k·C^s has no floor, so it forecasts too low."""
    rng = np.random.default_rng(1)
    runs = isoflop_runs(random_law(rng), rng, noise=0.005)
    power = backtest(runs, [], n_boot=0, methods=("isoflop",), loss_law="power")["isoflop"]["rollout"]
    saturating = backtest(runs, [], n_boot=0, methods=("isoflop",))["isoflop"]["rollout"]
    assert power["loss_error_pct"] < -1.5
    assert abs(saturating["loss_error_pct"]) < abs(power["loss_error_pct"]) / 2


def test_bad_inputs_are_clear_errors():
    rng = np.random.default_rng(9)
    law = random_law(rng)
    runs = pd.concat([isoflop_runs(law, rng, objective="clm"), isoflop_runs(law, rng, objective="mlm")])
    with pytest.raises(PlmscaleError, match="one objective's runs at a time; got clm, mlm"):
        backtest(runs)
    clm = runs[runs["objective"] == "clm"]
    with pytest.raises(PlmscaleError, match="fit.predict_flops must be positive"):
        backtest(clm, [-1.0])
    with pytest.raises(PlmscaleError, match="unknown IsoFLOP loss law 'cubic'"):
        backtest(clm, loss_law="cubic")
    with pytest.raises(PlmscaleError, match="unknown method"):
        backtest(clm, methods=("envelope",))
