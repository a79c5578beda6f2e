"""The first-order bound on a selection's R² gap (plmscale.design.replay_bound), checked against refits."""

import json
import math

import numpy as np
import pytest

from plmscale.cli import design_replay
from plmscale.design import replay as rp
from plmscale.design import replay_bound as rb
from plmscale.errors import PlmscaleError
from plmscale.scaling import parametric
from test_replay import LAW, _args, _write, synthetic

THETA = np.array([np.log(LAW["E"]), np.log(LAW["A"]), np.log(LAW["B"]), LAW["alpha"], LAW["beta"]])
NOISE = 0.005


@pytest.fixture(scope="module")
def pool_and_targets():
    return synthetic(0)


def test_the_whole_pool_has_no_gap_and_a_subset_never_a_negative_one(pool_and_targets):
    pool, targets = pool_and_targets
    assert rb.expected_r2_gap(THETA, pool, pool, targets, NOISE) == pytest.approx(0, abs=1e-12)
    rng = np.random.default_rng(0)
    for size in (8, 15, 25):
        subset = pool.iloc[np.sort(rng.choice(len(pool), size, replace=False))]
        smaller = subset.iloc[:-2]
        gap, smaller_gap = (rb.expected_r2_gap(THETA, pool, s, targets, NOISE) for s in (subset, smaller))
        assert 0 < gap <= smaller_gap  # dropping runs never makes a forecast surer
    assert np.isinf(rb.forecast_variances(THETA, pool.iloc[:4], targets)).all()  # 4 runs, 5 constants


def test_expected_r2_is_what_least_squares_refits_reach_on_average(pool_and_targets):
    """The formula against a Monte Carlo: a fixed selection, fresh 0.5% noise on its runs, least-squares refits
    (Huber with a threshold far above the noise) from the true law; the mean squared log-forecast error of
    every target is σ²·v_t. And plmscale's Huber fit (δ = 1e-3) is the noisier by about huber_variance_factor."""
    pool, targets = pool_and_targets
    selected = pool.iloc[rp.select_runs(pool, targets, "plmscale", 0.1, known_law=THETA)[0]]
    variances = rb.forecast_variances(THETA, selected, targets)
    log_n, log_d = np.log(selected["n_params"].to_numpy()), np.log(selected["tokens"].to_numpy())
    clean = rp.log_forecast(THETA, selected["n_params"], selected["tokens"])
    truth = rp.log_forecast(THETA, targets["n_params"], targets["tokens"])
    rng = np.random.default_rng(7)
    draws = [clean + rng.normal(0, NOISE, len(selected)) for _ in range(200)]
    ratio = {}
    for name, delta in (("least squares", 1.0), ("huber", parametric.HUBER_DELTA)):
        errors = [rp.log_forecast(parametric.minimise_batch(THETA[None], log_n, log_d, y, delta=delta)[0][0],
                                  targets["n_params"], targets["tokens"]) - truth for y in draws]
        ratio[name] = float(np.mean(np.square(errors), axis=0).mean() / (NOISE ** 2 * variances.mean()))
    assert 0.75 < ratio["least squares"] < 1.3
    assert ratio["huber"] > 1.1 * ratio["least squares"]
    assert 0.75 < ratio["huber"] / rb.huber_variance_factor(NOISE) < 1.3


def test_huber_factor_runs_from_least_squares_to_least_absolute_deviations():
    assert rb.huber_variance_factor(noise=1e-6) == pytest.approx(1.0, abs=1e-6)  # threshold ≫ noise
    assert rb.huber_variance_factor(noise=10.0) == pytest.approx(math.pi / 2, rel=1e-3)  # threshold ≪ noise
    assert rb.huber_variance_factor(noise=0.005) == pytest.approx(1.423, abs=1e-3)  # δ/σ = 0.2
    factors = [rb.huber_variance_factor(noise) for noise in (1e-4, 1e-3, 3e-3, 1e-2)]
    assert factors == sorted(factors)


def test_the_noise_that_meets_a_bar_gives_that_bar_back():
    least_squares = rb.noise_meeting(0.08, 0.005, 0.05, delta=None)
    assert least_squares == pytest.approx(0.005 * math.sqrt(0.05 / 0.08))
    sigma = rb.noise_meeting(0.08, 0.005, 0.05)
    assert sigma < least_squares  # Huber's extra variance asks for quieter runs
    assert rb.huber_variance_factor(sigma) * 0.08 * (sigma / 0.005) ** 2 == pytest.approx(0.05, rel=1e-6)
    assert rb.noise_meeting(0.0, 0.005, 0.05) == math.inf


def test_a_known_law_designs_without_fitting_and_beats_random_in_expectation(pool_and_targets, monkeypatch):
    pool, targets = pool_and_targets
    random_gaps = [rb.expected_r2_gap(THETA, pool, pool.iloc[rp.select_runs(
        pool, targets, "random", 0.1, np.random.default_rng([0, r]))[0]], targets, NOISE) for r in range(10)]

    def no_fit(*args, **kwargs):
        raise AssertionError("a design at a known law fits nothing")

    monkeypatch.setattr(rp, "grid_fit", no_fit)
    monkeypatch.setattr(rp.parametric, "refit_warm", no_fit)
    chosen, theta = rp.select_runs(pool, targets, "plmscale", 0.1, known_law=THETA)
    assert np.array_equal(theta, THETA)
    assert pool.iloc[chosen]["flops"].sum() <= 0.1 * pool["flops"].sum() * (1 + 1e-12)
    assert rb.expected_r2_gap(THETA, pool, pool.iloc[chosen], targets, NOISE) < np.mean(random_gaps)


def test_the_command_says_how_close_any_selection_could_come(tmp_path, pool_and_targets, capsys):
    """replay.json's "expected" block: the noise its residuals show (the pool's is 0.5%), and a best selection
    within the budget whose expected gap is no larger than that of any deterministic strategy's selection."""

    pool, targets = pool_and_targets
    pool_path, targets_path = _write(tmp_path, pool, targets)
    args = _args(pool_path, targets_path, tmp_path / "out", strategies=("random", "cheapest", "plmscale"),
                 fraction=0.1)
    assert design_replay.main(args) == 0
    result = json.loads((tmp_path / "out" / "replay.json").read_text())
    expected = result["expected"]
    assert 0.003 < expected["noise"] < 0.008
    assert expected["huber_factor"] == pytest.approx(rb.huber_variance_factor(expected["noise"]))
    best = expected["best_selection"]
    assert best["r2_gap"] <= min(expected["r2_gap"]["cheapest"], expected["r2_gap"]["plmscale"]) + 1e-12
    assert expected["r2_gap"]["random"] > best["r2_gap"]
    chosen = pool[pool["run_id"].isin(best["selected"])]
    assert len(chosen) == best["n_selected"] and chosen["flops"].sum() <= 0.1 * pool["flops"].sum() * (1 + 1e-12)
    out = capsys.readouterr().out
    assert "no strategy is expected to do better" in out
    meeting = expected["fraction_meeting"]
    assert meeting["r2_gap"] == 0.05 and 0 < meeting["budget_fraction"] < 1
    assert f"from about F = {meeting['budget_fraction']:.3g}" in out
    theta, noise, factor = np.array(result["all_runs"]["theta"]), expected["noise"], expected["huber_factor"]

    def best_gap(fraction):
        chosen = rb.best_selection(theta, pool, targets, fraction, (), noise)
        return factor * rb.expected_r2_gap(theta, pool, pool.iloc[chosen], targets, noise)

    assert best_gap(meeting["budget_fraction"]) <= 0.05 < best_gap(meeting["budget_fraction"] / 2)
    args.bar = 1.5
    with pytest.raises(PlmscaleError, match="--bar is an R² gap"):
        design_replay.main(args)


def test_a_looser_bar_needs_a_smaller_budget(pool_and_targets):
    pool, targets = pool_and_targets
    fractions = [rb.fraction_meeting(THETA, pool, targets, bar, NOISE) for bar in (0.01, 0.05, 0.2)]
    assert fractions[0] > fractions[1] > fractions[2] > 0
    # a bar any five runs meet: the smallest fraction tried (without the pool's five cheapest, which sit on one
    # budget and would forecast nothing)
    assert rb.fraction_meeting(THETA, pool.iloc[5:], targets, 1e12, NOISE) == 1e-3


def test_with_one_target_there_is_no_r2_and_no_expected_gap(tmp_path, pool_and_targets, capsys):
    pool, targets = pool_and_targets
    pool_path, targets_path = _write(tmp_path, pool, targets.head(1))
    assert design_replay.main(_args(pool_path, targets_path, tmp_path / "out", strategies=("cheapest",))) == 0
    result = json.loads((tmp_path / "out" / "replay.json").read_text())
    assert result["expected"] is None and result["strategies"]["cheapest"]["r2"] is None
    assert "expected R² gap" not in capsys.readouterr().out


def test_a_selection_that_cannot_forecast_has_an_infinite_gap_even_without_noise(pool_and_targets):
    pool, targets = pool_and_targets
    four = pool.iloc[:4]  # four runs for five constants
    assert rb.expected_r2_gap(THETA, pool, four, targets, NOISE) == math.inf
    assert rb.expected_r2_gap(THETA, pool, four, targets, 0.0) == math.inf
    one_budget = pool[pool["flops"] == pool["flops"].min()]  # determined only through the law's curvature
    assert rb.expected_r2_gap(THETA, pool, one_budget, targets, NOISE) > 100
    assert rb.expected_r2_gap(THETA, pool, pool.iloc[:20], targets, 0.0) == 0.0
