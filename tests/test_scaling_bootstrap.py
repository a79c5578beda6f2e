"""The IsoFLOP bootstrap schemes on a grid of few sizes per budget (the demo's design: 4 sizes)."""

import numpy as np
import pytest

from plmscale.errors import PlmscaleError
from plmscale.scaling import bootstrap as boot
from plmscale.scaling.fit import fit_all
from scaling_synthetic import BUDGETS, fit_settings, isoflop_runs, random_law


def four_size_table(seed, noise=0.005):
    rng = np.random.default_rng(seed)
    law = random_law(rng)
    runs = isoflop_runs(law, rng, noise=noise, sizes_per_budget=4, spread=3.0, budgets=BUDGETS[:4])
    return law, runs


def true_a(law):
    return law["beta"] / (law["alpha"] + law["beta"])


def test_residual_bootstrap_keeps_the_design_where_redrawing_runs_loses_brackets():
    law, runs = four_size_table(3)
    by_runs = fit_all(runs, None, fit_settings(bootstrap=200, seed=0, backtest=False))["objectives"]["clm"]["isoflop"]
    by_residuals = fit_all(runs, None, fit_settings(bootstrap=200, seed=0, backtest=False,
                                                 isoflop_bootstrap="residuals"))["objectives"]["clm"]["isoflop"]
    assert by_runs["a"] == by_residuals["a"]  # the point fit does not depend on the scheme
    failed_runs = by_runs["bootstrap"]["n_failed"] / by_runs["bootstrap"]["n"]
    failed_residuals = by_residuals["bootstrap"]["n_failed"] / by_residuals["bootstrap"]["n"]
    assert failed_runs > 0.2, failed_runs  # 4 runs redrawn: most resamples miss a size
    assert failed_residuals < 0.1, failed_residuals
    assert by_residuals["bootstrap"]["scheme"] == "residuals" and by_residuals["bootstrap"]["residual_sd"] > 0


def test_residual_intervals_cover_the_true_exponent():
    covered = 0
    for seed in range(10):
        law, runs = four_size_table(seed)
        entry = fit_all(runs, None, fit_settings(bootstrap=200, seed=seed, backtest=False,
                                              isoflop_bootstrap="residuals"))["objectives"]["clm"]["isoflop"]
        low, high = entry["a_ci"]
        covered += low <= true_a(law) <= high
    assert covered >= 8, covered


def test_residual_losses_perturb_only_fitted_budgets_and_need_spare_degrees_of_freedom():
    law, runs = four_size_table(1)
    losses, sd = boot.isoflop_residual_losses(runs, 50, np.random.default_rng(0), 3)
    assert losses.shape == (50, len(runs)) and sd > 0
    assert not np.allclose(losses, runs["loss"].to_numpy()[None, :])
    three_sizes = isoflop_runs(law, np.random.default_rng(2), sizes_per_budget=3, spread=3.0, budgets=BUDGETS[:3])
    with pytest.raises(PlmscaleError, match="more than 3 runs"):
        boot.isoflop_residual_losses(three_sizes, 10, np.random.default_rng(0), 3)


def test_the_backtest_draws_its_intervals_with_the_fits_scheme():
    from plmscale.scaling.backtest import backtest

    _, runs = four_size_table(3)
    failed = {}
    for scheme in ("runs", "residuals"):
        rollout = backtest(runs, [1e21], n_boot=100, methods=("isoflop",), isoflop_bootstrap=scheme)["isoflop"]["rollout"]
        failed[scheme] = rollout["bootstrap"]["n_failed"] / rollout["bootstrap"]["n"]
        assert rollout["loss_error_pct_ci"] is not None
    assert failed["residuals"] < failed["runs"], failed
